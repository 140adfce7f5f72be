//! `cargo xtask bench --serve`: `ri serve`'s scrape time at many series and its CPU while idle.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

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

/// Serves a count of `series` keys (`calls` calling work_int3 with 0..N),
/// times `scrapes` scrapes, then measures CPU over `idle` seconds.
pub fn run(series: u32, scrapes: usize, idle: u64) -> Result<()> {
    let fx = crate::fixtures()?;
    let cfg = std::env::temp_dir().join(format!("ri-bench-serve.{}.toml", std::process::id()));
    let calls = fx.join("calls");
    std::fs::write(
        &cfg,
        format!(
            "max_series = {}\n[[instrument]]\nname = \"bench\"\ncommand = [\"count\", \"u:{}:work_int3\", \"--by\", \"arg0\", \"--max-keys\", \"{}\"]\n",
            series + 10,
            calls.display(),
            series + 10
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut serve = Command::new(crate::ri_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .context("start ri serve")?;
    let result = (|| {
        let t = Instant::now();
        while scrape(port).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("ri serve did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ok = Command::new(&calls)
            .args(["calls", &series.to_string()])
            .status()?;
        if !ok.success() {
            bail!("calls failed: {ok}");
        }
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..scrapes {
            let t = Instant::now();
            let text = scrape(port)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            n = text
                .lines()
                .filter(|l| l.starts_with("ri_bench_total"))
                .count();
        }
        times.sort_by(f64::total_cmp);
        // Idle: no scrape and no hits, only the targets checked each second.
        let before = cpu(serve.id());
        std::thread::sleep(Duration::from_secs(idle));
        let after = cpu(serve.id());
        let report = format!(
            "# ri serve benchmark\n\nWritten by `cargo xtask bench --serve` on {} CPUs \
             (load average {}).\n\n\
             | what | value |\n|---|---|\n\
             | series in a scrape | {n} |\n\
             | scrape time, median of {scrapes} | {:.1} ms |\n\
             | scrape time, slowest | {:.1} ms |\n\
             | CPU while idle ({idle} s, targets checked each second) | {:.3}% |\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?"),
            times[times.len() / 2],
            times[times.len() - 1],
            (after - before) / idle as f64 * 100.0
        );
        print!("{report}");
        crate::bench::write_report("RESULTS-serve.md", &report)
    })();
    // SAFETY: plain syscall on our child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGINT) };
    let _ = serve.wait();
    let _ = std::fs::remove_file(&cfg);
    result
}
