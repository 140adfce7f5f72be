//! `ri report` pauses: how long each thread of a 64-worker fixture is
//! stopped while `ri report` takes its stack. Called by `bench`; returns a
//! markdown section for bench/RESULTS.md.

use std::{
    io::{BufRead, BufReader, Write as _},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{fixtures, ri_bin};

/// Worker threads in the fixture (it has three more: main, alpha, beta).
const WORKERS: usize = 64;
/// Reports taken; every thread's pause of every run is a sample.
const RUNS: usize = 5;
/// The goal for one thread's pause, in microseconds.
const TARGET_US: f64 = 10_000.0;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the measurement and returns its markdown section.
pub fn run() -> Result<String> {
    let fx = fixtures()?;
    let mut child = Command::new(fx.join("threads"))
        .args(["--workers", &WORKERS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the threads fixture")?;
    let result = measure(&mut child);
    // Closing its input ends the fixture.
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn measure(child: &mut std::process::Child) -> Result<String> {
    let mut out = BufReader::new(child.stdout.take().context("fixture stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.starts_with("ready ") {
        bail!("threads fixture said {line:?}");
    }
    let pid = child.id().to_string();
    let (mut paused, mut held, mut totals, mut walls) = (vec![], vec![], vec![], vec![]);
    let mut threads = 0;
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let o = Command::new(ri_bin())
            .args(["report", "--json", "--sections", "threads", &pid])
            .output()
            .context("run ri report")?;
        walls.push(t0.elapsed().as_secs_f64() * 1e3);
        if !o.status.success() {
            bail!("ri report failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let r: Value = serde_json::from_slice(&o.stdout)?;
        let th = &r["threads"];
        threads = th["count"].as_u64().unwrap_or(0);
        totals.push(th["total_pause_us"].as_f64().unwrap_or(0.0) / 1e3);
        for t in th["threads"].as_array().into_iter().flatten() {
            paused.extend(t["paused_us"].as_f64());
            held.extend(t["held_us"].as_f64());
        }
    }
    // The fixture still answers on every thread.
    let stdin = child.stdin.as_mut().context("fixture stdin")?;
    writeln!(stdin, "ping")?;
    line.clear();
    out.read_line(&mut line)?;
    let alive = line.trim() == format!("pong {}", WORKERS + 2);
    for v in [&mut paused, &mut held, &mut totals, &mut walls] {
        v.sort_by(f64::total_cmp);
    }
    let row = |name: &str, v: &[f64], unit: &str| {
        format!(
            "| {name} | {:.0} {unit} | {:.0} {unit} | {:.0} {unit} |\n",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(0.0)
        )
    };
    let rowf = |name: &str, v: &[f64], unit: &str| {
        format!(
            "| {name} | {:.1} {unit} | {:.1} {unit} | {:.1} {unit} |\n",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(0.0)
        )
    };
    let worst = paused.last().copied().unwrap_or(0.0);
    let mut s = String::new();
    s.push_str("## ri report: pause per thread\n\n");
    s.push_str(&format!(
        "`ri report --sections threads` on the `threads --workers {WORKERS}` fixture \
         ({threads} threads), {RUNS} reports, {} thread stops. Each thread is stopped alone \
         (PTRACE_SEIZE + PTRACE_INTERRUPT), its registers and stack copied, and let go; \
         unwinding and symbolizing happen after. *Pause* runs from the interrupt to the \
         detach (it includes the kernel waking the thread to stop, which waits for a CPU \
         on a busy machine); *held* from the stop to the detach.\n\n",
        paused.len()
    ));
    s.push_str("| | median | p99 | max |\n|---|---|---|---|\n");
    s.push_str(&row("pause per thread", &paused, "µs"));
    s.push_str(&row("held by ri per thread", &held, "µs"));
    s.push_str(&rowf("sum of pauses per report", &totals, "ms"));
    s.push_str(&rowf("report wall time", &walls, "ms"));
    s.push_str(&format!(
        "\nTarget: under {:.0} ms a thread: **{}** (longest {:.0} µs). \
         Every thread answered afterwards: **{}**.\n",
        TARGET_US / 1e3,
        if worst < TARGET_US { "met" } else { "missed" },
        worst,
        if alive { "yes" } else { "no" }
    ));
    Ok(s)
}

#[cfg(test)]
mod tests {
    /// `cargo test -p xtask --release -- --ignored bench_report`: the section alone.
    #[test]
    #[ignore = "a benchmark: needs root, the built ri and the fixtures"]
    fn bench_report() {
        println!("{}", super::run().unwrap());
    }
}
