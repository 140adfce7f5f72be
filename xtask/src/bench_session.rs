//! The flight recorder's cost per event against plain `ri trace`: CPU time
//! (user + system) of the tool's whole process tree per event, for a
//! `calls wait N` process making N probed calls, minus the same tool's run
//! with no calls (startup, attach, detach); `cargo xtask bench --session`.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{bench::write_report, fixtures, ri_bin};

/// CPU ms (user + system) of every reaped descendant so far.
fn children_cpu_ms() -> f64 {
    // SAFETY: rusage is plain data filled by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// Runs `tool(pid, dir)` against `calls wait n` (started first), lets the
/// process make its calls once the tool has attached, stops the tool with
/// Ctrl-C and returns the tool tree's CPU ms.
fn tool_cpu_ms(calls: &Path, n: u64, tool: &dyn Fn(u32, &Path) -> Command) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("ri-bench-session.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut target = Command::new(calls)
        .args(["wait", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start calls wait")?;
    let mut first = String::new();
    BufReader::new(target.stdout.as_mut().expect("piped")).read_line(&mut first)?;
    let before = children_cpu_ms();
    let mut t = tool(target.id(), &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the tool")?;
    let mut err = BufReader::new(t.stderr.take().expect("piped"));
    let mut line = String::new();
    let attached = loop {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            break false;
        }
        if line.contains("attached") {
            break true;
        }
    };
    let stdin = target.stdin.as_mut().expect("piped");
    if attached {
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        // The calls, then time for the tool to read every event.
        std::thread::sleep(Duration::from_millis(1500));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        rest
    });
    let st = t.wait()?;
    let rest = drain.join().unwrap_or_default();
    let cpu = children_cpu_ms() - before;
    let _ = stdin.write_all(b"\n");
    let _ = target.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if !attached || !st.success() {
        bail!("the tool failed ({st}): {line}{rest}");
    }
    Ok(cpu)
}

/// A tool's command line against a pid, with a scratch directory.
type Tool<'a> = Box<dyn Fn(u32, &Path) -> Command + 'a>;

/// Writes the session file of one flight-recorder (or plain) session.
fn session_file(dir: &Path, probe: &str, recorder: bool) -> Result<std::path::PathBuf> {
    let f = dir.join("bench.toml");
    let keep = if recorder {
        "flight_recorder = \"10s\"\n"
    } else {
        ""
    };
    std::fs::write(
        &f,
        format!("[instruments.calls]\ncmd = \"trace '{probe}'\"\n{keep}"),
    )?;
    Ok(f)
}

/// Runs the measurement and writes bench/RESULTS-session.md. `RI_BENCH_
/// SESSION_N` sets the calls per run (default 50,000: they fit in the ring
/// buffer even if the reader stalls, so nothing is lost).
pub fn run() -> Result<()> {
    let n: u64 = std::env::var("RI_BENCH_SESSION_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let calls = fixtures()?.join("calls");
    let ri = ri_bin();
    let probe = format!("u:{}:work_nop5(a=arg0, b=arg1)", calls.display());
    let trace = |pid: u32, _: &Path| {
        let mut c = Command::new(&ri);
        c.args(["trace", "--json", "-p", &pid.to_string(), &probe]);
        c
    };
    let session = |recorder: bool| {
        let (ri, probe) = (ri.clone(), probe.clone());
        move |pid: u32, dir: &Path| {
            let f = session_file(dir, &probe, recorder).expect("write the session file");
            let mut c = Command::new(&ri);
            c.args(["session", "run"])
                .arg(&f)
                .args(["-q", "-p", &pid.to_string(), "--out"])
                .arg(dir.join("bundle"));
            c
        }
    };
    let tools: [(&str, Tool<'_>); 3] = [
        ("`ri trace --json` (to /dev/null)", Box::new(trace)),
        (
            "`ri session run`, the trace into the bundle (zstd JSON lines)",
            Box::new(session(false)),
        ),
        (
            "`ri session run`, the trace in a 10 s flight recorder",
            Box::new(session(true)),
        ),
    ];
    let mut s = format!(
        "# Capture sessions: the flight recorder's cost per event\n\n\
         Written by `cargo xtask bench --session`. CPU time (user + system) of the tool's \
         whole process tree (a session runs each instrument as a child ri) per event: a \
         `calls wait {n}` process makes {n} calls of `work_nop5`, each traced with two \
         arguments; the same tool's run with no calls (start, attach, Ctrl-C) is taken off. \
         Median of 3 runs each.\n\n| tool | µs per event | CPU ms with {n} events | CPU ms with none |\n|---|---:|---:|---:|\n"
    );
    for (name, tool) in &tools {
        let mut with = Vec::new();
        let mut without = Vec::new();
        for _ in 0..3 {
            with.push(tool_cpu_ms(&calls, n, tool.as_ref())?);
            without.push(tool_cpu_ms(&calls, 0, tool.as_ref())?);
        }
        let (w, wo) = (median(with), median(without));
        let per = (w - wo) * 1e3 / n.max(1) as f64;
        let _ = writeln!(s, "| {name} | {per:.2} | {w:.0} | {wo:.0} |");
    }
    write_report("RESULTS-session.md", &s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
