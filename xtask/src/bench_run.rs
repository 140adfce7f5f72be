//! Whole runs, exec to exit: `ri trace -q -c` and `ri count -q -c` of one
//! probe against bpftrace on the same probe, and the 5,000-site wildcard
//! count beside bpftrace's.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{bench::verdict, bench_wild::Wild, fixtures, have, ri_bin};

/// Repetitions in the full bench; the median is reported.
pub const REPS: usize = 11;

/// How long one bpftrace run may take before it is killed.
const BPFTRACE_TIMEOUT: Duration = Duration::from_secs(30);

/// Wall seconds of `cmd` from spawn to exit, its stderr; a run past
/// `timeout` is killed and fails.
fn timed(cmd: &mut Command, timeout: Duration) -> Result<(f64, String)> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} still running after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let secs = t.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {err}");
    }
    Ok((secs, err))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median wall milliseconds of `reps` runs of `make()`.
fn median_ms(reps: usize, timeout: Duration, make: impl Fn() -> Command) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..reps {
        v.push(timed(&mut make(), timeout)?.0 * 1e3);
    }
    Ok(median(v))
}

/// One row: ri's and bpftrace's medians for a one-probe command.
struct Row {
    what: &'static str,
    ri_ms: f64,
    bt_ms: Option<f64>,
    /// ri's attach line (how it attached, and in how long).
    attach: String,
}

impl Row {
    /// Met when ri's run is under 100 ms and at most 0.3× bpftrace's.
    fn met(&self) -> bool {
        self.ri_ms < 100.0 && self.bt_ms.is_none_or(|b| self.ri_ms <= 0.3 * b)
    }
}

/// Measures `ri SUB -q -c CMD PROBE` and bpftrace's `-e SCRIPT` on the same
/// site.
fn one_probe(
    calls: &Path,
    reps: usize,
    what: &'static str,
    sub: &str,
    script: &str,
) -> Result<Row> {
    let c = calls.display().to_string();
    let cmd = format!("{c} calls 3");
    let probe = format!("u:{c}:work_int3");
    let ri = |quiet: bool| {
        let mut r = Command::new(ri_bin());
        r.arg(sub);
        if quiet {
            r.arg("-q");
        }
        r.args(["-c", &cmd, &probe]);
        r
    };
    // One run with the attach line, untimed: it says which path was taken.
    let (_, err) = timed(&mut ri(false), BPFTRACE_TIMEOUT)?;
    let attach = err
        .lines()
        .find(|l| l.starts_with("ri: attached"))
        .unwrap_or("no attach line")
        .trim_start_matches("ri: ")
        .to_string();
    let ri_ms = median_ms(reps, BPFTRACE_TIMEOUT, || ri(true))?;
    let bt_ms = if have("bpftrace") {
        let script = format!("uprobe:{c}:work_int3 {{ {script} }}");
        Some(median_ms(reps, BPFTRACE_TIMEOUT, || {
            let mut b = Command::new("bpftrace");
            b.args(["-q", "-c", &cmd, "-e", &script]);
            b
        })?)
    } else {
        None
    };
    Ok(Row {
        what,
        ri_ms,
        bt_ms,
        attach,
    })
}

/// The section, with `reps` runs a row; the 5,000-site row comes from the
/// wildcard section's measurements when given.
pub fn section(fx: &Path, reps: usize, wild: Option<&Wild>) -> Result<String> {
    let calls = fx.join("calls");
    let rows = [
        one_probe(
            &calls,
            reps,
            "`ri trace -q -c 'calls calls 3' 'u:calls:work_int3'`",
            "trace",
            "printf(\"hit\\n\");",
        )?,
        one_probe(
            &calls,
            reps,
            "`ri count -q -c 'calls calls 3' 'u:calls:work_int3'`",
            "count",
            "@ = count();",
        )?,
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Whole runs, exec to exit\n\n\
         Wall time from spawning the tracer to its exit, median of {reps}; the traced command \
         is `calls calls 3` (three calls of `work_int3`, an int3 site). bpftrace runs the same \
         probe with `printf` (trace) or `count()` (count), `-q`. Target: ri < 100 ms and \
         ≤ 0.3× bpftrace's.\n\n\
         | run | ri | bpftrace | ri / bpftrace | target |\n|---|---:|---:|---:|---|"
    );
    for r in &rows {
        let (bt, q) = match r.bt_ms {
            Some(b) => (format!("{b:.0} ms"), format!("{:.2}×", r.ri_ms / b)),
            None => ("(no bpftrace)".into(), String::new()),
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} ms | {bt} | {q} | {} |",
            r.what,
            r.ri_ms,
            verdict(r.met())
        );
    }
    if let Some(w) = wild {
        let bt = match w.bt {
            Some((bt, after)) => crate::bench_wild::bt_cell(bt, after, w.bt_timeout),
            None => "(no bpftrace)".into(),
        };
        let q = match w.bt {
            Some((Some(b), _)) => format!("{:.3}×", w.secs / b),
            Some((None, _)) => format!("< {:.3}×", w.secs / w.bt_timeout.as_secs_f64()),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "| `ri count -c 'many 1' 'u:many:fn_*'`, 5,000 sites (section above) | {:.2} s | {bt} | {q} | < 2 s: {} |",
            w.secs,
            verdict(w.secs < 2.0)
        );
    }
    let _ = writeln!(s);
    for r in &rows {
        let _ = writeln!(s, "- {}, one more run without `-q`: {}", r.what, r.attach);
    }
    let _ = writeln!(
        s,
        "\nThe largest part of ri's run left is the kernel releasing the multi-uprobe link \
         at exit (one RCU tasks-trace grace period, waited for in `close`). ri loads only \
         the programs its plans need (a plan without interpreter work gets the small \
         fast-path program), creates its maps at the sizes the command needs, and does not \
         read the kernel's BTF."
    );
    Ok(s)
}

/// `cargo xtask bench --whole`: this section alone (with the 5,000-site
/// row unless `no_wild`), in bench/RESULTS-whole.md.
pub fn run(reps: usize, no_wild: bool, bpftrace_timeout: Duration) -> Result<()> {
    let fx = fixtures()?;
    let wild = if no_wild {
        None
    } else {
        Some(crate::bench_wild::measure(&fx, bpftrace_timeout)?)
    };
    let section = section(&fx, reps.max(1), wild.as_ref())?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let report = format!(
        "# ri whole-run benchmark\n\n\
         Written by `cargo xtask bench --whole` (the same section as in RESULTS.md, alone) \
         on Linux {}.\n\n{section}",
        kernel.trim()
    );
    crate::bench::write_report("RESULTS-whole.md", &report)
}
