//! `cargo xtask bench --fleet` (and the full bench) run this: what `ri -H`
//! adds over one node and over a local run, on the fleet tests' nodes
//! (tests/src/fleet.rs).

use std::{io::Read, path::Path, process::Stdio, time::Instant};

use ri_tests::fleet::Fleet;

/// Wall seconds of `cmd` (which must succeed).
fn timed(mut cmd: std::process::Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

/// Median of `n` runs of `cmd()`.
fn median(n: usize, cmd: impl Fn() -> std::process::Command) -> f64 {
    let mut v: Vec<f64> = (0..n).map(|_| timed(cmd())).collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

/// `cargo xtask bench --fleet` runs this and writes bench/RESULTS-fleet.md
/// from its `FLEET-BENCH` line: what fanning out to 3 nodes adds over one,
/// cold (new connections) and warm (masters reused), and a simulation of
/// many hosts (many addresses, each its own ssh connection, over 3 sshds).
#[test]
#[ignore]
fn fleet_bench() {
    let sim: Vec<usize> = std::env::var("RI_FLEET_SIM")
        .unwrap_or_else(|_| "30,100".into())
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let reps = 5;
    let cold_dir = |tag: &str| fleet.dir().join(format!("mux-{tag}"));
    // A fresh control directory per run: no master to reuse.
    // The same ssh setup, but with the classical key exchange a site may
    // choose in its ssh config: OpenSSH 9.2's default, the post-quantum
    // sntrup761x25519, costs the client about 85 ms more CPU per connection.
    let curve = fleet.dir().join("ssh_config_curve25519");
    let text = std::fs::read_to_string(&fleet.ssh_config).unwrap();
    std::fs::write(
        &curve,
        text.replace(
            "  User root\n",
            "  User root\n  KexAlgorithms curve25519-sha256\n",
        ),
    )
    .unwrap();
    let cold_with = |config: &Path, hosts: &str, args: &[&str], tag: &str| {
        let mut v = Vec::new();
        for i in 0..reps {
            let dir = cold_dir(&format!("{tag}{i}"));
            let mut c = std::process::Command::new(ri_tests::ri_bin());
            c.args(["-H", hosts, "--ssh-config"])
                .arg(config)
                .args(args)
                .env("RI_SSH_CONTROL_DIR", &dir)
                .stdin(Stdio::null());
            v.push(timed(c));
            fleet.close_masters(&dir);
        }
        v.sort_by(f64::total_cmp);
        v[reps / 2]
    };
    let cold =
        |hosts: &str, args: &[&str], tag: &str| cold_with(&fleet.ssh_config, hosts, args, tag);
    let warm = |hosts: &str, args: &[&str]| {
        timed(fleet.ri(hosts, args));
        median(reps, || fleet.ri(hosts, args))
    };
    let discover = ["ctl", "--discover"];
    let m0d = fleet.nodes[0].dir.join("bin/m0d");
    let local_probe = format!("u:{}:m0_fom_fini", m0d.display());
    let count = ["count", "u:m0d:m0_fom_fini", "--duration", "0.3", "-q"];
    let local = median(reps, || {
        let mut c = std::process::Command::new(ri_tests::ri_bin());
        c.args(discover);
        c
    });
    let local_count = median(reps, || {
        let mut c = std::process::Command::new(ri_tests::ri_bin());
        c.args(["count", &local_probe, "--duration", "0.3", "-q"]);
        c
    });
    let all = fleet.hosts();
    let mut doc = serde_json::json!({
        "local_discover": local,
        "one_cold": cold("n1", &discover, "a"),
        "three_cold": cold(&all, &discover, "b"),
        "one_cold_curve": cold_with(&curve, "n1", &discover, "c"),
        "three_cold_curve": cold_with(&curve, &all, &discover, "d"),
        "one_warm": warm("n1", &discover),
        "three_warm": warm(&all, &discover),
        "local_count": local_count,
        "one_count_warm": warm("n1", &count),
        "three_count_warm": warm(&all, &count),
    });
    let max = sim.iter().copied().max().unwrap_or(0);
    if max > 0 {
        let inventory = fleet.aliases(max);
        let names: Vec<String> = std::fs::read_to_string(&inventory)
            .unwrap()
            .lines()
            .skip(1)
            .map(String::from)
            .collect();
        let mut rows = Vec::new();
        for &n in &sim {
            let hosts = names[..n].join(",");
            let dir = cold_dir(&format!("sim{n}"));
            let mut c = fleet.ri(&hosts, &discover);
            c.env("RI_SSH_CONTROL_DIR", &dir);
            let c1 = timed(c);
            let mut c = fleet.ri(&hosts, &discover);
            c.env("RI_SSH_CONTROL_DIR", &dir);
            let w1 = timed(c);
            fleet.close_masters(&dir);
            rows.push(serde_json::json!({"hosts": n, "cold": c1, "warm": w1}));
        }
        doc["sim"] = serde_json::json!(rows);
    }
    // What one host sends for motr.fops under load (raw buckets), and the
    // merged print.
    for n in &mut fleet.nodes {
        n.load(150, 1.5);
    }
    let fops = [
        "run",
        "motr.fops",
        "--json",
        "--comm",
        "m0d",
        "--duration",
        "2",
    ];
    let out = fleet.ri(&all, &fops).output().unwrap();
    let merged = String::from_utf8_lossy(&out.stdout);
    let version = String::from_utf8_lossy(&ri_tests::ri(&["--version"]).stdout).into_owned();
    let proto = format!(
        "--remote-child=1/{}",
        version.split_whitespace().nth(1).unwrap()
    );
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    // The remote side alone, as ssh would run it (stdin kept open).
    fleet.nodes[0].load(150, 1.5);
    let mut raw = fleet.nodes[0]
        .enter(&[
            ri_tests::ri_bin().to_str().unwrap(),
            &proto,
            "run",
            "motr.fops",
            "--target",
        ])
        .arg(&m0d)
        .args(["--duration", "1.5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdin = raw.stdin.take();
    let mut raw_out = String::new();
    raw.stdout
        .take()
        .unwrap()
        .read_to_string(&mut raw_out)
        .unwrap();
    raw.wait().unwrap();
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    doc["fops_merged_bytes"] = merged.trim().len().into();
    doc["fops_host_bytes"] = raw_out.trim().len().into();
    println!("FLEET-BENCH {doc}");
}
