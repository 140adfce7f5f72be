//! `cargo xtask bench --serve`: `ri serve`'s scrape time at many series,
//! its per-hit cost against `ri count`/`ri hist`, and its CPU while idle.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The scrape time the issue asks for, in ms.
const TARGET_MS: f64 = 50.0;

/// One `GET /metrics`: the body.
fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string()))
}

/// CPU seconds of process `pid` so far (user and system, from /proc).
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) in clock ticks, counted after the name.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// A free loopback port.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `ri serve` with config text `cfg` and `args`, stopped (SIGINT) and reaped
/// when dropped.
struct Serve {
    child: Child,
    port: u16,
    cfg: PathBuf,
}

impl Serve {
    fn start(cfg_text: &str, args: &[&str]) -> Result<Serve> {
        let port = free_port()?;
        let cfg =
            std::env::temp_dir().join(format!("ri-bench-serve.{}.{port}.toml", std::process::id()));
        std::fs::write(&cfg, cfg_text)?;
        let child = Command::new(crate::ri_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&cfg)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start ri serve")?;
        let s = Serve { child, port, cfg };
        let t = Instant::now();
        while scrape(port).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("ri serve did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.cfg);
    }
}

/// A sample's value in exposition `text`: the line starting with `series `.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Scrape times of `series` series (nine tenths counts, one tenth
/// histograms) over `scrapes` scrapes, then idle CPU over `idle` s.
fn scrapes_section(calls: &Path, series: u32, scrapes: usize, idle: u64) -> Result<String> {
    let counts = series - series / 10;
    let hists = series / 10;
    let c = calls.display();
    let serve = Serve::start(
        &format!(
            "max_series = {series}\n\
             [[instrument]]\nname = \"bench_count\"\n\
             command = [\"count\", \"u:{c}:work_int3\", \"--by\", \"arg0\", \"--max-keys\", \"{}\"]\n\
             [[instrument]]\nname = \"bench_hist\"\n\
             command = [\"hist\", \"u:{c}:work_nop5\", \"--value\", \"arg1\", \"--by\", \"arg0 % {hists}\", \"--max-keys\", \"{}\"]\n",
            counts + 10,
            counts * 2 + 10
        ),
        &[],
    )?;
    let ok = Command::new(calls)
        .args(["calls", &counts.to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !ok.success() {
        bail!("calls failed: {ok}");
    }
    let (mut total, mut read, mut build, mut encode) = (vec![], vec![], vec![], vec![]);
    let (mut n_count, mut n_hist, mut lines, mut bytes) = (0, 0, 0, 0);
    for i in 0..=scrapes {
        let t = Instant::now();
        let text = scrape(serve.port)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // Each scrape reports the phases of the one before.
        let phase = |p: &str| {
            sample(
                &text,
                &format!("ri_scrape_duration_seconds{{phase=\"{p}\"}}"),
            )
            .unwrap_or(f64::NAN)
                * 1e3
        };
        if i > 1 {
            read.push(phase("read"));
            build.push(phase("build"));
            encode.push(phase("encode"));
        }
        if i > 0 {
            total.push(ms);
        }
        n_count = text
            .lines()
            .filter(|l| l.starts_with("ri_bench_count_total{"))
            .count();
        n_hist = text
            .lines()
            .filter(|l| l.starts_with("ri_bench_hist_count{"))
            .count();
        lines = text.lines().count();
        bytes = text.len();
    }
    if n_count as u32 != counts || n_hist as u32 != hists {
        bail!(
            "expected {counts} count and {hists} histogram series, scraped {n_count} and {n_hist}"
        );
    }
    let med = median(&mut total);
    let slowest = total.last().copied().unwrap_or(f64::NAN);
    // Idle: no scrape and no hits; file-wide instruments, nothing to follow.
    let before = cpu(serve.child.id());
    std::thread::sleep(Duration::from_secs(idle));
    let idle_pct = (cpu(serve.child.id()) - before) / idle as f64 * 100.0;
    drop(serve);
    let mut s = String::new();
    let _ = write!(
        s,
        "A scrape of {} series ({n_count} counts by `arg0`, {n_hist} histograms of `arg1` by \
         `arg0 % {hists}`, each with its `le` lines): {lines} lines, {} kB. Target: under \
         {TARGET_MS} ms: **{}**.\n\n\
         | what | value |\n|---|---:|\n\
         | scrape time, median of {scrapes} (client's view) | {med:.1} ms |\n\
         | scrape time, slowest | {slowest:.1} ms |\n\
         | of which reading the maps (median) | {:.1} ms |\n\
         | of which building the series (median) | {:.1} ms |\n\
         | of which writing the text (median) | {:.1} ms |\n\
         | CPU while idle ({idle} s, file-wide instruments) | {idle_pct:.3}% |\n",
        n_count + n_hist,
        bytes / 1000,
        crate::bench::verdict(med < TARGET_MS),
        median(&mut read),
        median(&mut build),
        median(&mut encode),
    );
    Ok(s)
}

/// CPU of `ri serve` following a sleeping process by name over `idle` s.
fn idle_by_name(calls: &Path, idle: u64) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("ri-bench-idle.{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let name = "ri-bench-idle";
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(calls, &link)?;
    let mut target = Command::new(&link)
        .args(["sleep", "1", &(idle * 1000 + 60_000).to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("start the idle target")?;
    let result = (|| {
        let serve = Serve::start(
            &format!(
                "[[instrument]]\nname = \"idle\"\ncommand = [\"count\", \"u:{}:work_int3\"]\n",
                calls.display()
            ),
            &["--comm", name],
        )?;
        // Attached once it counts the target.
        let t = Instant::now();
        while sample(&scrape(serve.port)?, "ri_targets_attached") != Some(1.0) {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("ri serve --comm {name} did not attach within 20 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = cpu(serve.child.id());
        std::thread::sleep(Duration::from_secs(idle));
        let pct = (cpu(serve.child.id()) - before) / idle as f64 * 100.0;
        Ok(format!(
            "| CPU while idle ({idle} s), following a sleeping process by name (`--comm`) | {pct:.3}% |\n"
        ))
    })();
    let _ = target.kill();
    let _ = target.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The probe program's run time per hit under `ri serve` and under the
/// same `ri count`/`ri hist` (kernel BPF statistics, as RESULTS.md's table).
fn per_hit(calls: &Path) -> Result<String> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS).context("read bpf_stats_enabled")?;
    std::fs::write(STATS, "1").context("enable BPF statistics")?;
    let site = format!("u:{}:work_nop5", calls.display());
    let kinds: [(&str, Vec<&str>); 2] = [
        ("count", vec!["count", &site]),
        ("hist", vec!["hist", "--value", "arg1", &site]),
    ];
    let mut rows = String::new();
    for (what, args) in &kinds {
        let ri = crate::bench::prog_ns(calls, |pid| {
            let mut cmd = Command::new(crate::ri_bin());
            cmd.args(args).args(["-q", "-p", &pid.to_string()]);
            cmd
        });
        let cfg = std::env::temp_dir().join(format!(
            "ri-bench-serve-hit.{}.{what}.toml",
            std::process::id()
        ));
        let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        std::fs::write(
            &cfg,
            format!(
                "[[instrument]]\nname = \"hit\"\ncommand = [{}]\n",
                quoted.join(", ")
            ),
        )?;
        let port = free_port()?;
        let served = crate::bench::prog_ns(calls, |pid| {
            let mut cmd = Command::new(crate::ri_bin());
            cmd.args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&cfg)
            .args(["-p", &pid.to_string()]);
            cmd
        });
        let _ = std::fs::remove_file(&cfg);
        let ns = |r: &Result<f64>| {
            r.as_ref()
                .map_or_else(|e| format!("error: {e}"), |v| format!("{v:.1}"))
        };
        let _ = writeln!(
            rows,
            "| `{}` | {} | {} |",
            args.join(" ").replace(&site, "SITE"),
            ns(&ri),
            ns(&served)
        );
    }
    std::fs::write(STATS, before.trim()).context("restore bpf_stats_enabled")?;
    Ok(format!(
        "\nPer hit, the probe program's own run time (kernel BPF statistics on a `calls spin` \
         process, 2 s each; SITE is its nop5 site), the same command alone and served:\n\n\
         | command | alone, ns per hit | under `ri serve`, ns per hit |\n|---|---:|---:|\n{rows}"
    ))
}

/// The serve section of RESULTS.md (and of RESULTS-serve.md).
pub fn section(series: u32, scrapes: usize, idle: u64) -> Result<String> {
    let fx = crate::fixtures()?;
    let calls = fx.join("calls");
    let mut s = String::from("## `ri serve`\n\n");
    s.push_str(&scrapes_section(&calls, series, scrapes, idle)?);
    s.push_str(&idle_by_name(&calls, idle)?);
    s.push_str(&per_hit(&calls)?);
    Ok(s)
}

/// `cargo xtask bench --serve`: the section alone, in RESULTS-serve.md.
pub fn run(series: u32, scrapes: usize, idle: u64) -> Result<()> {
    let report = format!(
        "# ri serve benchmark\n\nWritten by `cargo xtask bench --serve` on {} CPUs \
         (load average {}).\n\n{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
        section(series, scrapes, idle)?
    );
    crate::bench::write_report("RESULTS-serve.md", &report)
}
