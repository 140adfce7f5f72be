//! Wildcards at scale: `ri count 'u:many:fn_*'` on 5,000 functions, the
//! whole run (attach, a short command, detach) against bpftrace with
//! `BPFTRACE_MAX_PROBES` (and `BPFTRACE_MAX_BPF_PROGS`) raised, the attach time, how soon Ctrl-C ends a
//! run, and ri's per-site fallback for comparison.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{bench::verdict, fixtures, have, ri_bin};

/// Repetitions of ri's runs; the median is reported.
const REPS: usize = 3;

/// The whole run of `cmd`: wall seconds and stderr.
fn whole_run(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{cmd:?} failed: {err}");
    }
    Ok((secs, err))
}

/// The attach line's "in N ms" and its note (how the sites were attached).
fn attach_line(err: &str) -> Result<(f64, String)> {
    let line = err
        .lines()
        .find(|l| l.starts_with("ri: attached"))
        .with_context(|| format!("no attach line in {err}"))?;
    let ms = line
        .rsplit_once(" in ")
        .and_then(|(_, t)| t.trim_end_matches(" ms").parse().ok())
        .with_context(|| format!("no time in {line}"))?;
    // "... (N attachments: NOTE) in T ms"
    let note = line
        .split_once("attachments: ")
        .or_else(|| line.split_once("attachment: "))
        .and_then(|(_, r)| r.rsplit_once(") in "))
        .map_or(String::new(), |(n, _)| n.to_string());
    Ok((ms, note))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `ri count` of `pattern`'s functions in `many` run `1` time each: median
/// whole-run seconds, median attach ms and the attach note.
fn ri_run(many: &Path, pattern: &str, fallback: bool, reps: usize) -> Result<(f64, f64, String)> {
    let m = many.display().to_string();
    let (mut secs, mut ms, mut note) = (Vec::new(), Vec::new(), String::new());
    for _ in 0..reps {
        let mut cmd = Command::new(ri_bin());
        // Like bpftrace, no overhead budget: every hit of the burst counts.
        cmd.args([
            "count",
            "--max-overhead",
            "off",
            "-c",
            &format!("{m} 1"),
            &format!("u:{m}:{pattern}"),
        ]);
        if fallback {
            cmd.env("RI_NO_MULTI_UPROBE", "1");
        }
        let (s, err) = whole_run(&mut cmd)?;
        let (a, n) = attach_line(&err)?;
        secs.push(s);
        ms.push(a);
        note = n;
    }
    Ok((median(secs), median(ms), note))
}

/// Seconds from SIGINT to the end of a system-wide `ri count` of all 5,000
/// functions (once attached).
fn ctrl_c(many: &Path) -> Result<f64> {
    let m = many.display().to_string();
    let mut ri = Command::new(ri_bin())
        .args(["count", "--max-overhead", "off", &format!("u:{m}:fn_*")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start ri")?;
    let mut err = BufReader::new(ri.stderr.take().expect("piped"));
    let mut line = String::new();
    err.read_line(&mut line)?;
    if !line.starts_with("ri: attached") {
        let _ = ri.kill();
        let _ = ri.wait();
        bail!("ri did not attach: {line}");
    }
    let t = Instant::now();
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(ri.id() as i32, libc::SIGINT) };
    std::io::copy(&mut err, &mut std::io::sink())?;
    ri.wait()?;
    Ok(t.elapsed().as_secs_f64())
}

/// bpftrace counting all 5,000 functions for `many 1`, killed after
/// `timeout`: its whole run, or `None` and the seconds its exit then took
/// (the kernel releasing what it had attached).
fn bpftrace_run(many: &Path, timeout: Duration) -> Result<(Option<f64>, f64)> {
    let m = many.display().to_string();
    let t = Instant::now();
    let mut bt = Command::new("bpftrace")
        .env("BPFTRACE_MAX_PROBES", "10000")
        .env("BPFTRACE_MAX_BPF_PROGS", "10000")
        .args([
            "-c",
            &format!("{m} 1"),
            "-e",
            &format!("uprobe:{m}:fn_* {{ @[probe] = count(); }}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start bpftrace")?;
    while t.elapsed() < timeout {
        if let Some(status) = bt.try_wait()? {
            if !status.success() {
                bail!("bpftrace failed: {status}");
            }
            return Ok((Some(t.elapsed().as_secs_f64()), 0.0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = bt.kill();
    let killed = Instant::now();
    bt.wait()?;
    Ok((None, killed.elapsed().as_secs_f64()))
}

/// What the wildcard measurements found.
pub struct Wild {
    /// ri's median whole run (s), attach (ms) and attach note.
    pub secs: f64,
    ms: f64,
    note: String,
    /// The per-site fallback on 10 functions: whole run (s), attach (ms), note.
    fb: (f64, f64, String),
    /// Seconds from SIGINT to exit.
    stop: f64,
    /// bpftrace's whole run (None: killed at the timeout) and its exit
    /// after the kill; None without bpftrace.
    pub bt: Option<(Option<f64>, f64)>,
    /// How long bpftrace had.
    pub bt_timeout: Duration,
}

/// Runs the measurements: ri (multi-uprobe links; the per-site fallback on
/// 10 functions), Ctrl-C, and bpftrace capped at `bpftrace_timeout`.
pub fn measure(fx: &Path, bpftrace_timeout: Duration) -> Result<Wild> {
    let many = fx.join("many");
    let (secs, ms, note) = ri_run(&many, "fn_*", false, REPS)?;
    let fb = ri_run(&many, "fn_100*", true, 1)?;
    let stop = ctrl_c(&many)?;
    let bt = if have("bpftrace") {
        Some(bpftrace_run(&many, bpftrace_timeout)?)
    } else {
        None
    };
    Ok(Wild {
        secs,
        ms,
        note,
        fb,
        stop,
        bt,
        bt_timeout: bpftrace_timeout,
    })
}

/// bpftrace's whole-run cell: seconds, or killed at the timeout.
pub fn bt_cell(bt: Option<f64>, after: f64, timeout: Duration) -> String {
    match bt {
        Some(t) => format!("{t:.1} s"),
        None => format!(
            "> {} s (killed; its exit took {after:.0} s more)",
            timeout.as_secs()
        ),
    }
}

/// The section from [`measure`]'s results.
pub fn section(w: &Wild) -> String {
    let Wild {
        secs,
        ms,
        note,
        fb: (fb_secs, fb_ms, fb_note),
        stop,
        ..
    } = w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Wildcards at scale: `ri count 'u:many:fn_*'`, 5,000 functions\n\n\
         Whole run: attach, `many 1` (each function called once), detach; median of \
         {REPS}. The attach time is ri's own (from start to attached, as its attach line \
         says).\n"
    );
    let _ = writeln!(s, "| run | sites | attach | whole run | how |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    let _ = writeln!(s, "| ri | 5,000 | {ms:.0} ms | {secs:.2} s | {note} |");
    let _ = writeln!(
        s,
        "| ri, per-site fallback | 10 | {fb_ms:.0} ms | {fb_secs:.2} s | {fb_note} |"
    );
    if let Some((bt, after)) = w.bt {
        let whole = bt_cell(bt, after, w.bt_timeout);
        let _ = writeln!(
            s,
            "| bpftrace, `BPFTRACE_MAX_PROBES` and `_MAX_BPF_PROGS` 10000 | 5,000 | | {whole} | one perf event per site |"
        );
    }
    let _ = writeln!(
        s,
        "\n- attach of 5,000 functions: {ms:.0} ms (target < 150 ms: {})\n\
         - whole run of 5,000 sites: {secs:.2} s (target < 2 s: {})\n\
         - Ctrl-C of a 5,000-site count to exit: {stop:.2} s (target < 1 s: {})\n\
         - the fallback releases each perf event after its own grace period (the kernel \
           holds `event_mutex` across it, so releasing them from many threads does not \
           overlap them): {:.0} ms per site here",
        verdict(*ms < 150.0),
        verdict(*secs < 2.0),
        verdict(*stop < 1.0),
        fb_secs * 100.0,
    );
    s
}

/// `cargo xtask bench --wild`: this section alone, in bench/RESULTS-wild.md.
pub fn run(bpftrace_timeout: Duration) -> Result<()> {
    let section = section(&measure(&fixtures()?, bpftrace_timeout)?);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let report = format!(
        "# ri wildcard benchmark\n\n\
         Written by `cargo xtask bench --wild` (the same section as in RESULTS.md, alone) \
         on Linux {}.\n\n{section}",
        kernel.trim()
    );
    crate::bench::write_report("RESULTS-wild.md", &report)
}

#[cfg(test)]
mod tests {
    use super::attach_line;

    #[test]
    fn attach_line_gives_time_and_note() {
        let err = "ri: attached 1 probe at 10 sites (10 attachments: 10 perf events, \
                   multi-uprobe link unavailable: off (RI_NO_MULTI_UPROBE set)) in 62 ms\n";
        let (ms, note) = attach_line(err).unwrap();
        assert_eq!(ms, 62.0);
        assert_eq!(
            note,
            "10 perf events, multi-uprobe link unavailable: off (RI_NO_MULTI_UPROBE set)"
        );
    }
}
