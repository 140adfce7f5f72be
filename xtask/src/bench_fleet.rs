//! `cargo xtask bench --fleet`: what `ri -H` adds over one node and over a
//! local run, cold and with reused ssh connections, and a simulation of
//! many hosts; runs the ignored `fleet_bench` test (its nodes are the fleet
//! tests' namespaces with their own sshd) and writes bench/RESULTS-fleet.md.

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, ri_bin};

/// Milliseconds of a seconds field.
fn ms(doc: &Value, key: &str) -> f64 {
    doc[key].as_f64().unwrap_or(f64::NAN) * 1000.0
}

/// The report from the test's `FLEET-BENCH` JSON line.
fn render(doc: &Value) -> String {
    let added = |a: &str, b: &str| ms(doc, a) - ms(doc, b);
    let mut s = String::from(
        "| command | local | 1 node | 3 nodes | 3 nodes add |\n|---|---:|---:|---:|---:|\n",
    );
    s += &format!(
        "| `ctl --discover`, new connections | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms (target < 300) |\n",
        ms(doc, "local_discover"),
        ms(doc, "one_cold"),
        ms(doc, "three_cold"),
        added("three_cold", "one_cold")
    );
    s += &format!(
        "| `ctl --discover`, new connections, `KexAlgorithms curve25519-sha256` in the ssh config | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms (target < 300) |\n",
        ms(doc, "local_discover"),
        ms(doc, "one_cold_curve"),
        ms(doc, "three_cold_curve"),
        added("three_cold_curve", "one_cold_curve")
    );
    s += &format!(
        "| `ctl --discover`, reused connection | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms (target < 100) |\n",
        ms(doc, "local_discover"),
        ms(doc, "one_warm"),
        ms(doc, "three_warm"),
        added("three_warm", "one_warm")
    );
    s += &format!(
        "| `count u:m0d:m0_fom_fini --duration 0.3`, reused | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |\n\n",
        ms(doc, "local_count"),
        ms(doc, "one_count_warm"),
        ms(doc, "three_count_warm"),
        added("three_count_warm", "one_count_warm")
    );
    s += "New connections are dominated by the ssh key exchange, which ri leaves to the \
          user's ssh config: OpenSSH 9.2's default, sntrup761x25519 (post-quantum hybrid), \
          costs the client about 85 ms more CPU per connection than curve25519-sha256 (measured here under load). \
          ri itself adds one `ssh -G` per host before a new connection (its host-key policy; none over a live master) and no round trip: the \
          version and build check ride on the command.\n\n";
    if let Some(rows) = doc["sim"].as_array() {
        s += "Many hosts (each its own address and ssh connection, over the 3 nodes' sshds, fan-out 64):\n\n\
              | hosts | new connections | reused |\n|---:|---:|---:|\n";
        for r in rows {
            s += &format!(
                "| {} | {:.2} s | {:.2} s |\n",
                r["hosts"],
                r["cold"].as_f64().unwrap_or(f64::NAN),
                r["warm"].as_f64().unwrap_or(f64::NAN)
            );
        }
        s += "\n";
    }
    s += &format!(
        "`run motr.fops` under load: one host sends {} bytes (raw buckets), the merged print of 3 is {} bytes.\n",
        doc["fops_host_bytes"], doc["fops_merged_bytes"]
    );
    s
}

/// Runs the `fleet_bench` test (`sim`: host counts of the many-hosts
/// simulation, comma-separated, empty for none) and returns its result.
fn measure(sim: &str) -> Result<Value> {
    let out = cargo()
        .args([
            "test",
            "--release",
            "-p",
            "ri-tests",
            "--test",
            "fleet_bench",
            "--",
        ])
        .args(["--ignored", "--exact", "fleet_bench", "--nocapture"])
        .env("RI_BIN", ri_bin())
        .env("RI_FLEET_SIM", sim)
        .output()
        .context("run the fleet_bench test")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("FLEET-BENCH ")) else {
        bail!(
            "fleet_bench printed no result: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    Ok(serde_json::from_str(line)?)
}

/// The fleet section of bench/RESULTS.md: 3 nodes against one, without
/// the many-hosts simulation (RESULTS-fleet.md has it).
pub fn section() -> Result<String> {
    let doc = measure("")?;
    Ok(format!(
        "## Fleet: `ri -H` on 3 nodes against one\n\n\
         Nodes are network and pid namespaces on this machine, each with its own sshd and m0d \
         (tests/src/fleet.rs); they share the cores with the local ri. Medians of 5 runs. \
         The many-hosts simulation: bench/RESULTS-fleet.md (`cargo xtask bench --fleet`).\n\n{}",
        render(&doc)
    ))
}

/// Runs the fleet benchmark and writes bench/RESULTS-fleet.md.
pub fn run() -> Result<()> {
    let doc = measure("30,100")?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = Command::new("nproc")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let report = format!(
        "# ri fleet benchmark\n\nWritten by `cargo xtask bench --fleet` on Linux {} ({cores} cores; \
         every node, its sshd and the local ri share them). Medians of 5 runs \
         (the simulation: one run each). See docs/FLEET.md.\n\n{}",
        kernel.trim(),
        render(&doc)
    );
    crate::bench::write_report("RESULTS-fleet.md", &report)
}
