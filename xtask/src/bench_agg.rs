//! In-kernel aggregations in `cargo xtask bench`: `ri count` and `ri hist`
//! per hit against the bare program and bpftrace, their programs' own run
//! time, and ri's CPU while counting at full speed.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{
        N_NOP5, REPS, median, now_ns, parse_sample, prog_ns, run_measured, verdict, write_report,
    },
    fixtures, have, ri_bin,
};

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
pub(crate) fn aggregations(fx: &std::path::Path, with_bpftrace: bool) -> Result<String> {
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
