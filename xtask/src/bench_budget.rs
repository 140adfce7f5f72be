//! The overhead budget: a hot loop under `ri count 'u:hot:*'` (1,510
//! sites, the budget on by default) against the same loop unprobed, with
//! the budget off, and under bpftrace counting the hot function alone.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{bench::verdict, fixtures, have, ri_bin};

/// Calls of hot_fn when nothing stops the probe on it: about 2 s of traps
/// on an int3 site.
const CALLS_PROBED: u64 = 100_000;
/// Calls of hot_fn unprobed and under the budget: ~0.5 s of CPU unprobed.
const CALLS_FREE: u64 = 400_000_000;
/// Runs of each row; the median is reported.
const REPS: usize = 3;

/// One run of the fixture: the loop's own CPU ns per call, and what ri or
/// bpftrace printed.
struct Run {
    ns_per_call: f64,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` (which runs `hot N` somewhere inside) and reads its
/// "hot_ns T" line.
fn run(cmd: &mut Command, calls: u64) -> Result<Run> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {stderr}", out.status);
    }
    let ns: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hot_ns "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no hot_ns line from {cmd:?}: {stdout}"))?;
    Ok(Run {
        ns_per_call: ns as f64 / calls as f64,
        stdout,
        stderr,
    })
}

/// The run with the median cost of `REPS` runs of `make()`.
fn median(calls: u64, make: impl Fn() -> Command) -> Result<Run> {
    let mut v = Vec::new();
    for _ in 0..REPS {
        v.push(run(&mut make(), calls)?);
    }
    v.sort_by(|a, b| a.ns_per_call.total_cmp(&b.ns_per_call));
    Ok(v.swap_remove(REPS / 2))
}

/// Cold functions counted exactly twice in a `ri count` print, of 1,500.
fn cold_exact(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| {
            l.split(":cold_")
                .nth(1)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                && l.trim_end().ends_with(": 2")
        })
        .count()
}

/// The section for bench/RESULTS.md.
pub fn section(fx: &Path, with_bpftrace: bool) -> Result<String> {
    let hot = fx.join("hot");
    let h = hot.display().to_string();
    let ri = ri_bin();
    let unprobed = median(CALLS_FREE, || {
        let mut c = Command::new(&hot);
        c.arg(CALLS_FREE.to_string());
        c
    })?;
    let budget = median(CALLS_FREE, || {
        let mut c = Command::new(&ri);
        c.args([
            "count",
            "-c",
            &format!("{h} {CALLS_FREE}"),
            &format!("u:{h}:*"),
        ]);
        c
    })?;
    let off = median(CALLS_PROBED, || {
        let mut c = Command::new(&ri);
        c.args([
            "count",
            "--max-overhead",
            "off",
            "-c",
            &format!("{h} {CALLS_PROBED}"),
            &format!("u:{h}:*"),
        ]);
        c
    })?;
    let bt = if with_bpftrace {
        Some(median(CALLS_PROBED, || {
            let mut c = Command::new("bpftrace");
            c.args([
                "-c",
                &format!("{h} {CALLS_PROBED}"),
                "-e",
                &format!("uprobe:{h}:hot_fn {{ @ = count(); }}"),
            ]);
            c
        })?)
    } else {
        None
    };
    let detach = budget
        .stderr
        .lines()
        .find(|l| l.contains("overhead budget: detached"))
        .unwrap_or("(no detach line: the budget did not act)")
        .trim_start_matches("ri: ")
        .to_string();
    let ratio = budget.ns_per_call / unprobed.ns_per_call;
    let exact = cold_exact(&budget.stdout);

    let mut s = String::new();
    let _ = writeln!(s, "## An overhead budget\n");
    let _ = writeln!(
        s,
        "`tests/fixtures/hot.c`: one hot function called N times in a timed loop (its own \
         thread CPU time, traps included) and 1,500 cold ones called twice each. \
         `ri count 'u:hot:*'` matches 1,510 sites, so the 5% budget is on by default. \
         ns per call of the hot loop, median of {REPS}:\n"
    );
    let _ = writeln!(s, "| run | calls | ns per call | / unprobed |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let mut row = |what: &str, calls: u64, r: &Run| {
        let _ = writeln!(
            s,
            "| {what} | {calls} | {:.1} | {:.2} |",
            r.ns_per_call,
            r.ns_per_call / unprobed.ns_per_call
        );
    };
    row("unprobed", CALLS_FREE, &unprobed);
    row(
        "`ri count 'u:hot:*'` (budget 5%, default)",
        CALLS_FREE,
        &budget,
    );
    row(
        "`ri count --max-overhead off 'u:hot:*'`",
        CALLS_PROBED,
        &off,
    );
    if let Some(bt) = &bt {
        row(
            "bpftrace `uprobe:hot:hot_fn { @ = count(); }`",
            CALLS_PROBED,
            bt,
        );
    }
    let _ = writeln!(s, "\nTargets:\n");
    let _ = writeln!(
        s,
        "- the hot loop under the budget: {ratio:.2} × unprobed (target ≤ 1.5: {})",
        verdict(ratio <= 1.5)
    );
    let _ = writeln!(
        s,
        "- cold functions counted exactly (2 calls each): {exact} of 1500 (target all: {})",
        verdict(exact == 1500)
    );
    let _ = writeln!(s, "- what ri said: {detach}");
    Ok(s)
}

/// `cargo xtask bench --budget`: this section alone, to bench/RESULTS-budget.md.
pub fn run_alone() -> Result<()> {
    let fx = fixtures()?;
    let body = section(&fx, have("bpftrace"))?;
    crate::bench::write_report(
        "RESULTS-budget.md",
        &format!(
            "# ri overhead-budget benchmark\n\nWritten by `cargo xtask bench --budget` \
             (the same section as in RESULTS.md, alone).\n\n{body}"
        ),
    )
}
