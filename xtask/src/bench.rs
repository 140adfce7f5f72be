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
const N_NOP5: u64 = 3_000_000;
/// Repetitions; the median is reported.
const REPS: usize = 5;

/// What one run of the fixture under a tracer reported.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sample {
    int3_ns: f64,
    pub(crate) nop5_ns: f64,
    max_rss_kb: i64,
}

fn now_ns() -> i64 {
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
    let agg_section = aggregations(&fx, with_bpftrace)?;

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

/// Runs only the aggregation measurements and writes bench/RESULTS-agg.md
/// (`cargo xtask bench --agg`).
pub fn run_agg() -> Result<()> {
    let fx = fixtures()?;
    let section = aggregations(&fx, have("bpftrace"))?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let report = format!(
        "# ri aggregation benchmark\n\n\
         Written by `cargo xtask bench --agg` (the same section as in RESULTS.md, alone; \
         median of {REPS} repetitions) on Linux {}, {} CPUs.\n\n{section}",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    write_report("RESULTS-agg.md", &report)
}

/// Per-hit cost of `ri count` and `ri hist` on the nop5 site against the
/// bare program and bpftrace's count()/hist(), and ri's own CPU time while
/// counting at full speed.
fn aggregations(fx: &std::path::Path, with_bpftrace: bool) -> Result<String> {
    let calls = fx.join("calls");
    let c = calls.display().to_string();
    let cmd = format!("{c} bench 1000 {N_NOP5}");
    let site = format!("u:{c}:work_nop5");
    let nop5 = |prog: &str, args: Vec<String>| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..REPS {
            let (err, rss) = run_measured(Command::new(prog).args(&args))?;
            v.push(parse_sample(&err, rss)?.nop5_ns);
        }
        Ok(median(v))
    };
    let ri = ri_bin().display().to_string();
    let ri_args = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(["-q".into(), "-c".into(), cmd.clone(), site.clone()])
            .collect()
    };
    let none = nop5(&c, vec!["bench".into(), "1000".into(), N_NOP5.to_string()])?;
    let bare = nop5(&ri, ri_args(&["trace", "--bare"]))?;
    let count = nop5(&ri, ri_args(&["count"]))?;
    let count_by = nop5(&ri, ri_args(&["count", "--by", "arg0 % 16"]))?;
    let hist = nop5(&ri, ri_args(&["hist", "--value", "arg1"]))?;
    let hist_by = nop5(
        &ri,
        ri_args(&["hist", "--value", "arg1", "--by", "arg0 % 16"]),
    )?;
    let bt = |body: &str| -> Result<Option<f64>> {
        if !with_bpftrace {
            return Ok(None);
        }
        let prog = format!("uprobe:{c}:work_nop5 {{ {body} }}");
        Ok(Some(nop5(
            "bpftrace",
            vec!["-c".into(), cmd.clone(), "-e".into(), prog],
        )?))
    };
    let bt_count = bt("@ = count();")?;
    let bt_count_by = bt("@[arg0 % 16] = count();")?;
    let bt_hist = bt("@ = hist(arg1);")?;
    let bt_hist_by = bt("@[arg0 % 16] = hist(arg1);")?;
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    let cpu = count_cpu(&calls, &ri)?;
    let progs = prog_times(&calls, &ri, with_bpftrace)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## In-kernel aggregations\n\n\
         ns per call on the nop5 site (`work_nop5`, {N_NOP5} calls; unprobed {none:.1} ns). \
         Nothing crosses to user space per hit. A plain count and a histogram of one \
         register bump a per-CPU array slot by site without the interpreter; keyed ones \
         go through the plan interpreter and a per-CPU hash (one-word keys in a small-key \
         map).\n\n\
         | | ri | bpftrace |\n|---|---:|---:|\n\
         | bare program (`ri trace --bare`) | {bare:.1} | |\n\
         | `ri count` / `@ = count()` | {count:.1} | {} |\n\
         | `ri count --by 'arg0 % 16'` / `@[arg0 % 16] = count()` | {count_by:.1} | {} |\n\
         | `ri hist --value arg1` / `@ = hist(arg1)` | {hist:.1} | {} |\n\
         | `ri hist --value arg1 --by 'arg0 % 16'` / `@[arg0 % 16] = hist(arg1)` | {hist_by:.1} | {} |\n",
        cell(bt_count),
        cell(bt_count_by),
        cell(bt_hist),
        cell(bt_hist_by),
    );
    let _ = writeln!(s, "Targets:\n");
    for (name, ri_ns, bt_ns) in [("count", count, bt_count), ("hist", hist, bt_hist)] {
        let q = ri_ns / bare;
        let _ = write!(
            s,
            "- {name}: ri / bare = {q:.3} (target ≤ 1.15: {})",
            verdict(q <= 1.15)
        );
        if let Some(b) = bt_ns {
            let _ = write!(
                s,
                "; ri / bpftrace = {:.3} (target ≤ 1.0: {})",
                ri_ns / b,
                verdict(ri_ns <= b)
            );
        }
        let _ = writeln!(s);
    }
    s.push_str(&progs);
    let per_hit = if cpu.hits > 0 {
        cpu.window_ms * 1e6 / cpu.hits_in_window.max(1) as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "\nri's own CPU time while `ri count -p` counted `calls spin` at full speed: \
         {:.1} ms (user + system, from /proc/PID/stat, in clock ticks of {:.0} ms) over a \
         {:.2} s window after \
         attaching, in which about {} hits arrived ({:.2} M hits/s): {per_hit:.3} ns of ri CPU \
         per hit (target: near zero, nothing per hit: {}). Over the whole run, loading and \
         attaching included (wait4): {:.1} ms for {} hits.\n",
        cpu.window_ms,
        // SAFETY: sysconf has no preconditions.
        1e3 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64,
        cpu.window_s,
        cpu.hits_in_window,
        cpu.hits_in_window as f64 / cpu.window_s / 1e6,
        verdict(per_hit < 1.0),
        cpu.total_ms,
        cpu.hits,
    );
    Ok(s)
}

/// The eBPF program's own time per hit, from the kernel's BPF statistics
/// (`kernel.bpf_stats_enabled`, restored after): less noisy than timing the
/// traced loop, and the same measure for ri and bpftrace.
fn prog_times(calls: &std::path::Path, ri: &str, with_bpftrace: bool) -> Result<String> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS).context("read bpf_stats_enabled")?;
    std::fs::write(STATS, "1").context("enable BPF statistics")?;
    let c = calls.display().to_string();
    let site = format!("u:{c}:work_nop5");
    let bt_site = format!("uprobe:{c}:work_nop5");
    let traced = format!("{site}(a=arg0, b=arg1)");
    let runs: [(Vec<&str>, &str); 6] = [
        (vec!["trace", "--bare", &site], "`ri trace --bare`"),
        (
            vec!["trace", "--json", &traced],
            "`ri trace --json` capturing two arguments (events to /dev/null)",
        ),
        (vec!["count", &site], "`ri count`"),
        (
            vec!["count", "--by", "arg0 % 16", &site],
            "`ri count --by 'arg0 % 16'`",
        ),
        (
            vec!["hist", "--value", "arg1", &site],
            "`ri hist --value arg1`",
        ),
        (
            vec!["hist", "--value", "arg1", "--by", "arg0 % 16", &site],
            "`ri hist --value arg1 --by 'arg0 % 16'`",
        ),
    ];
    let mut rows: Vec<(String, String)> = runs
        .iter()
        .map(|(args, name)| {
            let ns = prog_ns(calls, |pid| {
                let mut cmd = Command::new(ri);
                cmd.args(args).args(["-q", "-p", &pid.to_string()]);
                cmd
            });
            (
                name.to_string(),
                ns.map_or_else(|e| format!("error: {e}"), |v| format!("{v:.1}")),
            )
        })
        .collect();
    if with_bpftrace {
        for body in [
            "@ = count();",
            "@[arg0 % 16] = count();",
            "@ = hist(arg1);",
            "@[arg0 % 16] = hist(arg1);",
        ] {
            let ns = prog_ns(calls, |pid| {
                let mut cmd = Command::new("bpftrace");
                cmd.args([
                    "-p",
                    &pid.to_string(),
                    "-e",
                    &format!("{bt_site} {{ {body} }}"),
                ]);
                cmd
            });
            rows.push((
                format!("bpftrace `{body}`"),
                ns.map_or_else(|e| format!("error: {e}"), |v| format!("{v:.1}")),
            ));
        }
    }
    std::fs::write(STATS, before.trim()).context("restore bpf_stats_enabled")?;
    let mut s = String::from(
        "\nThe probe program's own run time per hit (kernel BPF statistics, `run_time_ns / \
         run_cnt` of the program attached to a `calls spin` process, 2 s), which includes the \
         statistics' own clock reads:\n\n| | ns per hit |\n|---|---:|\n",
    );
    for (name, ns) in rows {
        let _ = writeln!(s, "| {name} | {ns} |");
    }
    Ok(s)
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

/// ri's CPU use while counting at full speed.
struct CountCpu {
    /// CPU ms (user + system) in the window after attaching.
    window_ms: f64,
    /// Length of that window in seconds.
    window_s: f64,
    /// Hits in the window, from the hit rate over the whole count.
    hits_in_window: u64,
    /// CPU ms over the whole run (wait4).
    total_ms: f64,
    /// Hits counted.
    hits: u64,
}

/// User + system CPU ms of a process so far, from /proc/PID/stat.
fn proc_cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(f.get(i).context("short stat")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) * 1e3 / hz)
}

/// Runs `ri count -p` on a fixture spinning on work_nop5 that ri did not
/// start (so the spinner's time is not in ri's rusage): ri's CPU in a
/// window after attaching, and over the whole run.
fn count_cpu(calls: &std::path::Path, ri: &str) -> Result<CountCpu> {
    const WINDOW: f64 = 3.0;
    let mut spin = Command::new(calls)
        .args(["spin", "6"])
        .stdout(Stdio::null())
        .spawn()
        .context("start calls spin")?;
    let c = calls.display().to_string();
    let mut child = Command::new(ri)
        .args([
            "count",
            "-p",
            &spin.id().to_string(),
            &format!("u:{c}:work_nop5"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start ri count")?;
    let pid = child.id();
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    // The attach line marks the end of startup.
    let err = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("attached") {
                let _ = tx.send(now_ns());
            }
        }
    });
    let attached = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .context("ri count did not attach")?;
    let cpu0 = proc_cpu_ms(pid)?;
    let t0 = now_ns();
    std::thread::sleep(std::time::Duration::from_secs_f64(WINDOW));
    let cpu1 = proc_cpu_ms(pid)?;
    let t1 = now_ns();
    // SAFETY: a signal to our own child; ri prints its counts and exits.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let stopped = now_ns();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let text = reader.join().expect("stdout reader");
    let _ = spin.kill();
    let _ = spin.wait();
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    let hits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("u:work_nop5: "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no count in {text}"))?;
    let window_s = (t1 - t0) as f64 / 1e9;
    let counting_s = ((stopped - attached) as f64 / 1e9).max(1e-9);
    Ok(CountCpu {
        window_ms: cpu1 - cpu0,
        window_s,
        hits_in_window: (hits as f64 * window_s / counting_s) as u64,
        total_ms: ms(ru.ru_utime) + ms(ru.ru_stime),
        hits,
    })
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
