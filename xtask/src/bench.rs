//! `cargo xtask bench`: probe overhead side by side in one run, on both probe
//! sites (int3 and nop5): no probe, a bare eBPF program, ri capturing two
//! arguments, bpftrace capturing the same; startup and peak RSS of ri and
//! bpftrace; events lost at full speed. Writes bench/RESULTS.md.

use std::{
    fmt::Write as _,
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{fixtures, have, ri_bin, root};

/// Calls per measurement on the int3 site (about 14 µs each when probed).
const N_INT3: u64 = 200_000;
/// Calls per measurement on the nop5 site (well under 1 µs each).
pub(crate) const N_NOP5: u64 = 3_000_000;
/// Repetitions; the median is reported.
pub(crate) const REPS: usize = 5;

/// What one run of the fixture under a tracer reported.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sample {
    int3_ns: f64,
    pub(crate) nop5_ns: f64,
    max_rss_kb: i64,
}

pub(crate) fn now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain clock read into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Runs `cmd` to completion, returning its stderr and peak RSS (KiB, the
/// largest of it and its waited-for descendants).
pub(crate) fn run_measured(cmd: &mut Command) -> Result<(String, i64)> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    let pid = child.id() as i32;
    let mut stderr = child.stderr.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let err = reader.join().expect("stderr reader");
    let st = std::process::ExitStatus::from_raw(status);
    if !st.success() {
        bail!("{cmd:?} failed ({st}): {err}");
    }
    Ok((err, ru.ru_maxrss))
}

pub(crate) fn parse_sample(err: &str, rss: i64) -> Result<Sample> {
    let get = |k: &str| -> Result<f64> {
        err.lines()
            .find_map(|l| l.strip_prefix(k))
            .with_context(|| format!("no '{k}' line in: {err}"))?
            .trim()
            .parse()
            .context("bad number")
    };
    Ok(Sample {
        int3_ns: get("int3 ")?,
        nop5_ns: get("nop5 ")?,
        max_rss_kb: rss,
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn repeat(mut f: impl FnMut() -> Result<Sample>) -> Result<Sample> {
    let mut all = Vec::new();
    for _ in 0..REPS {
        all.push(f()?);
    }
    Ok(Sample {
        int3_ns: median(all.iter().map(|s| s.int3_ns).collect()),
        nop5_ns: median(all.iter().map(|s| s.nop5_ns).collect()),
        max_rss_kb: all.iter().map(|s| s.max_rss_kb).max().unwrap_or(0),
    })
}

/// Startup: from spawning the tracer to the traced command's first
/// instruction of `main` (probes are attached before it execs).
fn startup(cmd: impl Fn() -> Command) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..REPS {
        let t0 = now_ns();
        let out = cmd()
            .stderr(Stdio::null())
            .output()
            .context("startup run")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let start: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("start "))
            .with_context(|| format!("no start line in {text}"))?
            .trim()
            .parse()?;
        v.push((start - t0) as f64 / 1e6);
    }
    Ok(median(v))
}

/// The benchmarks kept out of the full run (each its own flag and file),
/// named at the end of RESULTS.md.
const SEPARATE: &str = "\n## Run on their own\n\n\
- Capture sessions: the flight recorder's CPU per event against plain `ri trace`, \
  [RESULTS-session.md](RESULTS-session.md) (`cargo xtask bench --session`).\n\
- Fleet (`-H`) with the many-hosts simulation: [RESULTS-fleet.md](RESULTS-fleet.md) \
  (`cargo xtask bench --fleet`).\n\
- `ri serve`: [RESULTS-serve.md](RESULTS-serve.md) (`cargo xtask bench --serve`).\n";

/// Runs every measurement and writes bench/RESULTS.md.
pub fn run(bpftrace_timeout: std::time::Duration) -> Result<()> {
    let fx = fixtures()?;
    let calls = fx.join("calls");
    let c = calls.display().to_string();
    let ri = ri_bin();
    let bench_cmd = format!("{c} bench {N_INT3} {N_NOP5}");
    let with_bpftrace = have("bpftrace");

    eprintln!("bench: (a) no probe");
    let none = repeat(|| {
        let (err, rss) = run_measured(Command::new(&calls).args([
            "bench",
            &N_INT3.to_string(),
            &N_NOP5.to_string(),
        ]))?;
        parse_sample(&err, rss)
    })?;
    eprintln!("bench: (b) bare eBPF program");
    let bare = repeat(|| {
        let (err, rss) = run_measured(Command::new(&ri).args([
            "trace",
            "-q",
            "--bare",
            "-c",
            &bench_cmd,
            &format!("u:{c}:work_int3"),
            &format!("u:{c}:work_nop5"),
        ]))?;
        parse_sample(&err, rss)
    })?;
    let mut ri_lost = Vec::new();
    let mut traced = |json: bool| {
        repeat(|| {
            let mut cmd = Command::new(&ri);
            cmd.arg("trace");
            if json {
                cmd.arg("--json");
            }
            let (err, rss) = run_measured(cmd.args([
                "-c",
                &bench_cmd,
                &format!("u:{c}:work_int3(a=arg0, b=arg1)"),
                &format!("u:{c}:work_nop5(a=arg0, b=arg1)"),
            ]))?;
            if let Some(l) = err
                .lines()
                .find(|l| l.starts_with("ri: ") && l.contains(" events, "))
            {
                ri_lost.push(l.trim_start_matches("ri: ").to_string());
            }
            parse_sample(&err, rss)
        })
    };
    eprintln!("bench: (c) ri trace capturing two arguments");
    let ri_s = traced(false)?;
    eprintln!("bench: (c') the same with --json");
    let ri_json = traced(true)?;
    let bt = if with_bpftrace {
        eprintln!("bench: (d) bpftrace capturing two arguments");
        Some(repeat(|| {
            let (err, rss) = run_measured(Command::new("bpftrace").args([
                "-c",
                &bench_cmd,
                "-e",
                &format!(
                    "uprobe:{c}:work_int3 {{ printf(\"%d %d\\n\", arg0, arg1); }} \
                     uprobe:{c}:work_nop5 {{ printf(\"%d %d\\n\", arg0, arg1); }}"
                ),
            ]))?;
            parse_sample(&err, rss)
        })?)
    } else {
        None
    };

    eprintln!("bench: startup");
    let ri_start = startup(|| {
        let mut cmd = Command::new(&ri);
        cmd.args([
            "trace",
            "-q",
            "-c",
            &format!("{c} start"),
            &format!("u:{c}:work_nop5(a=arg0, b=arg1)"),
        ]);
        cmd
    })?;
    let bt_start = if with_bpftrace {
        Some(startup(|| {
            let mut cmd = Command::new("bpftrace");
            cmd.args([
                "-c",
                &format!("{c} start"),
                "-e",
                &format!("uprobe:{c}:work_nop5 {{ printf(\"%d %d\\n\", arg0, arg1); }}"),
            ]);
            cmd
        })?)
    } else {
        None
    };

    eprintln!("bench: events at full speed (nop5 site, 3 s)");
    let (spin_err, _) = run_measured(Command::new(&ri).args([
        "trace",
        "--json",
        "-c",
        &format!("{c} spin 3"),
        &format!("u:{c}:work_nop5(a=arg0, b=arg1)"),
    ]))?;
    let spin_summary = spin_err
        .lines()
        .find(|l| l.starts_with("ri: ") && l.contains(" events, "))
        .unwrap_or("no summary")
        .trim_start_matches("ri: ")
        .to_string();

    eprintln!("bench: typed 4-level capture vs raw argN capture (typed-O2 visit_node)");
    let typed_section = typed(&fx)?;

    eprintln!("bench: in-kernel aggregations (count, hist) on the nop5 site");
    let agg_section = crate::bench_agg::aggregations(&fx, with_bpftrace)?;

    eprintln!("bench: ri report pauses on a 64-thread fixture");
    let report_section = crate::bench_report::run()?;

    eprintln!("bench: DWARF load on a generated program with about 30 MB of debug info");
    let dwarf_section = crate::bench_dwarf::run()?;
    eprintln!("bench: wildcards at scale (5,000 functions)");
    let wild = crate::bench_wild::measure(&fx, bpftrace_timeout)?;
    let wild_section = crate::bench_wild::section(&wild);
    eprintln!("bench: whole runs, exec to exit (one probe; the 5,000-site count)");
    let whole_section = crate::bench_run::section(&fx, crate::bench_run::REPS, Some(&wild))?;
    let ab_section = crate::bench_ab::hist_section(&fx, 2 * REPS + 1, N_NOP5)?;
    let trace_section = crate::bench_trace::section(&fx, 2 * REPS + 1, N_NOP5)?;
    eprintln!("bench: the overhead budget (a hot loop under a 1,510-site wildcard)");
    let budget_section = crate::bench_budget::section(&fx, with_bpftrace)?;
    eprintln!("bench: fleet, 3 nodes against one (ri -H over ssh)");
    let fleet_section = crate::bench_fleet::section()?;
    eprintln!("bench: ri serve (scrape of 10,000 series, per hit, idle CPU)");
    let serve_section = crate::bench_serve::section(10_000, 10, 5)?;

    let mut report = render(&Report {
        none,
        bare,
        ri: ri_s,
        ri_json,
        bt,
        ri_start,
        bt_start,
        ri_lost,
        spin_summary,
    });
    report.push('\n');
    report.push_str(&typed_section);
    report.push('\n');
    report.push_str(&agg_section);
    report.push('\n');
    report.push_str(&ab_section);
    report.push_str(&trace_section);
    report.push('\n');
    report.push_str(&report_section);
    report.push('\n');
    report.push_str(&dwarf_section);
    report.push_str(&wild_section);
    report.push('\n');
    report.push_str(&whole_section);
    report.push('\n');
    report.push_str(&budget_section);
    report.push('\n');
    report.push_str(&fleet_section);
    report.push('\n');
    report.push_str(&serve_section);
    report.push_str(SEPARATE);
    write_report("RESULTS.md", &report)
}

/// Per-hit cost of a typed capture four pointers deep against a raw
/// register capture on the same site (typed-O2's visit_node, int3 site).
fn typed(fx: &std::path::Path) -> Result<String> {
    const N: u64 = 200_000;
    let bin = fx.join("typed-O2");
    let b = bin.display().to_string();
    let cmd = format!("{b} bench {N}");
    let measure = |probe: Option<String>| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..REPS {
            let (err, _) = match &probe {
                None => run_measured(Command::new(&bin).args(["bench", &N.to_string()]))?,
                Some(p) => run_measured(
                    Command::new(ri_bin()).args(["trace", "-q", "--json", "-c", &cmd, p]),
                )?,
            };
            let ns: f64 = err
                .lines()
                .find_map(|l| l.strip_prefix("visit_node "))
                .with_context(|| format!("no timing in {err}"))?
                .trim()
                .parse()?;
            v.push(ns);
        }
        Ok(median(v))
    };
    let none = measure(None)?;
    let raw = measure(Some(format!("u:{b}:visit_node(x=arg0)")))?;
    let typed = measure(Some(format!("u:{b}:visit_node(x=n->next->next->next->id)")))?;
    let q = typed / raw;
    Ok(format!(
        "## Typed captures\n\n\
         | | ns per call |\n|---|---:|\n\
         | no probe | {none:.1} |\n\
         | raw `x=arg0` | {raw:.1} |\n\
         | typed `x=n->next->next->next->id` (4 loads) | {typed:.1} |\n\n\
         typed / raw = {q:.3} (target ≤ 1.2: {}). The typed path compiles to one register read and \
         four loads with the member offsets folded in; nothing is looked up per event.\n",
        verdict(q <= 1.2)
    ))
}

/// Starts `calls spin`, runs the tool `cmd(spinner pid)` against it for 2 s
/// and returns its busiest program's run time per run in ns.
pub(crate) fn prog_ns(calls: &std::path::Path, cmd: impl Fn(u32) -> Command) -> Result<f64> {
    let mut spin = Command::new(calls)
        .args(["spin", "4"])
        .stdout(Stdio::null())
        .spawn()
        .context("start calls spin")?;
    let tool = cmd(spin.id())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut tool = match tool {
        Ok(t) => t,
        Err(e) => {
            let _ = spin.kill();
            let _ = spin.wait();
            bail!("start the tool: {e}");
        }
    };
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut best: Option<(u64, u64)> = None;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fdinfo", tool.id())) {
        for e in dir.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let (Some(t), Some(n)) = (field("run_time_ns:"), field("run_cnt:"))
                && best.is_none_or(|(_, bn)| n > bn)
            {
                best = Some((t, n));
            }
        }
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(tool.id() as i32, libc::SIGINT) };
    let _ = tool.wait();
    let _ = spin.kill();
    let _ = spin.wait();
    match best {
        Some((t, n)) if n > 0 => Ok(t as f64 / n as f64),
        _ => bail!("no program ran"),
    }
}

struct Report {
    none: Sample,
    bare: Sample,
    ri: Sample,
    ri_json: Sample,
    bt: Option<Sample>,
    ri_start: f64,
    bt_start: Option<f64>,
    ri_lost: Vec<String>,
    spin_summary: String,
}

/// Writes `report` to bench/`name` and prints it.
pub(crate) fn write_report(name: &str, report: &str) -> Result<()> {
    let path = root().join("bench").join(name);
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    std::fs::write(&path, report)?;
    println!("{report}");
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn render(r: &Report) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(s, "# ri benchmark results\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench`; every number below comes from one run of it \
         (median of {REPS} repetitions) on this machine: Linux {}, {} CPUs. \
         The fixture is `tests/fixtures/calls.c` built with `-g -O2 -fno-omit-frame-pointer`; \
         `work_int3` has an ordinary entry (uprobe via int3), `work_nop5` a 5-byte nop entry \
         (the kernel's uprobe fast path). {N_INT3} calls on int3, {N_NOP5} on nop5 per run.\n",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(s, "## Cost per probed call (ns)\n");
    let _ = writeln!(s, "| | int3 site | nop5 site |");
    let _ = writeln!(s, "|---|---:|---:|");
    let row = |s: &mut String, name: &str, x: &Sample| {
        let _ = writeln!(s, "| {name} | {:.1} | {:.1} |", x.int3_ns, x.nop5_ns);
    };
    row(&mut s, "(a) no probe", &r.none);
    row(&mut s, "(b) bare eBPF program (returns 0)", &r.bare);
    row(&mut s, "(c) `ri trace` capturing two arguments", &r.ri);
    row(
        &mut s,
        "(c') the same with `--json` (each event's `ts_ns`)",
        &r.ri_json,
    );
    if let Some(bt) = &r.bt {
        row(&mut s, "(d) bpftrace capturing the same (printf)", bt);
    } else {
        let _ = writeln!(s, "| (d) bpftrace | not installed | not installed |");
    }
    let _ = writeln!(s, "\n## Targets\n");
    let ratio = |c: f64, b: f64| c / b;
    for (site, c, b, d) in [
        (
            "int3",
            r.ri.int3_ns,
            r.bare.int3_ns,
            r.bt.map(|x| x.int3_ns),
        ),
        (
            "nop5",
            r.ri.nop5_ns,
            r.bare.nop5_ns,
            r.bt.map(|x| x.nop5_ns),
        ),
    ] {
        let q = ratio(c, b);
        let _ = writeln!(
            s,
            "- {site}: (c)/(b) = {q:.3} (target ≤ 1.15: {})",
            verdict(q <= 1.15)
        );
        let json = if site == "int3" {
            r.ri_json.int3_ns
        } else {
            r.ri_json.nop5_ns
        };
        let _ = writeln!(s, "- {site}: (c')/(b) = {:.3}", ratio(json, b));
        if let Some(d) = d {
            let _ = writeln!(
                s,
                "- {site}: (c) {c:.1} ns vs (d) {d:.1} ns (target (c) ≤ (d): {})",
                verdict(c <= d)
            );
        }
    }
    let _ = writeln!(
        s,
        "- startup, command start → probes attached: ri {:.1} ms (target < 150 ms: {}){}",
        r.ri_start,
        verdict(r.ri_start < 150.0),
        r.bt_start
            .map(|b| format!("; bpftrace {b:.1} ms"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "- peak RSS during (c): ri {:.1} MB (target < 30 MB: {}){}",
        r.ri.max_rss_kb as f64 / 1024.0,
        verdict(r.ri.max_rss_kb < 30 * 1024),
        r.bt.map(|b| format!("; bpftrace {:.1} MB", b.max_rss_kb as f64 / 1024.0))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "\n## Events at full speed\n");
    let _ = writeln!(
        s,
        "`ri trace --json` (default 8 MiB ring buffer, output to /dev/null) on the nop5 site \
         while the fixture calls it as fast as it can for 3 s: {}.\n",
        r.spin_summary
    );
    let _ = writeln!(
        s,
        "Events and losses in the (c) and (c') runs: {}.\n\n\
         Both sites are probed in one run here, so each hit asks the kernel for its \
         attach cookie (a run of one site has it as a constant), and the runs follow \
         each other without a pause; the paired, interleaved measure of one site is \
         in \"Streaming at bare cost\" below.",
        r.ri_lost.join("; ")
    );
    let _ = writeln!(
        s,
        "\nStartup is measured from spawning the tracer to the first line of the traced \
         command's `main` (both tools attach before the command execs). Peak RSS is the \
         tracer's `ru_maxrss` from wait4 (the traced fixture, a few hundred KB, is included)."
    );
    s
}
