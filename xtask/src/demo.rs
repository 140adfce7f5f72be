//! The main job's demo: start the bundled motr-shaped service (`m0d`) and a
//! client load, run the motr pack's instruments (`ri run motr.sessions`,
//! `motr.queue`, `motr.fops`, `motr.allocs`, `motr.blocks`) for a few seconds each, print
//! what they saw, and stop everything cleanly.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{fixtures, ri_bin};

/// Kills and reaps a child when dropped, so the demo never leaves strays.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first: m0d drains and prints its final stats.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ri run INSTRUMENT -p PID --duration SECS [extra]` and prints its
/// first `lines` lines of output and its messages; the error text if it
/// failed (the demo goes on and reports it at the end).
fn look(
    title: &str,
    instrument: &str,
    pid: u32,
    secs: &str,
    extra: &[&str],
    lines: usize,
) -> Result<(), String> {
    println!("\n== {title}");
    let mut args = vec!["run", instrument, "-p"];
    let pid = pid.to_string();
    args.push(&pid);
    args.extend(["--duration", secs]);
    args.extend_from_slice(extra);
    println!("   ri {}", args.join(" "));
    let out = Command::new(ri_bin())
        .args(&args)
        .output()
        .map_err(|e| format!("run ri: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text.lines().count();
    for l in text.lines().take(lines) {
        println!("   {l}");
    }
    if total > lines {
        println!("   ... {} more lines", total - lines);
    }
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        println!("   {l}");
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{instrument} failed"))
    }
}

/// Runs the demo.
pub fn run() -> Result<()> {
    let fx = fixtures()?;
    let (m0d, m0client) = (fx.join("m0d"), fx.join("m0client"));
    let data = std::env::temp_dir().join(format!("ri-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    println!(
        "== starting the motr-shaped service: m0d --port 0 --data {}",
        data.display()
    );
    let mut server = Command::new(&m0d)
        .args(["--port", "0", "--data"])
        .arg(&data)
        .args(["--no-sync", "--handler-delay-us", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start m0d")?;
    let stdout = server.stdout.take().expect("piped");
    let server = Guard(server);
    let pid = server.0.id();
    let mut endpoint = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(ep) = line.strip_prefix("endpoint ") {
            endpoint = ep.to_string();
            break;
        }
    }
    let port = endpoint.rsplit('@').next().unwrap_or_default().to_string();
    println!("   m0d pid {pid}, endpoint {endpoint}");
    let mut failed = Vec::new();

    // Sessions are established when the client connects: watch first.
    let sessions = std::thread::spawn(move || {
        look(
            "live RPC sessions (motr.sessions): sender id and client endpoint",
            "motr.sessions",
            pid,
            "3",
            &[],
            12,
        )
    });
    std::thread::sleep(Duration::from_millis(600));
    println!("\n== starting a client load: m0client load --rate 300 --concurrency 4 --duration 12");
    let client = Command::new(&m0client)
        .args(["--endpoint", &format!("127.0.0.1:{port}")])
        .args([
            "load",
            "--rate",
            "300",
            "--concurrency",
            "4",
            "--duration",
            "12",
            "--objects",
            "32",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start m0client")?;
    let client = Guard(client);
    if let Err(e) = sessions.join().expect("sessions thread") {
        failed.push(e);
    }
    let looks: [(&str, &str, &[&str], usize); 4] = [
        (
            "requests queued and executing (motr.queue): opcode, xid, session, endpoint, current phase, age",
            "motr.queue",
            &["--interval", "0.5"],
            16,
        ),
        (
            "request latency per opcode (motr.fops)",
            "motr.fops",
            &[],
            40,
        ),
        (
            "allocations and outstanding bytes by stack (motr.allocs)",
            "motr.allocs",
            &[],
            40,
        ),
        (
            "extents allocated per cob (motr.blocks): each write's blocks, with the cob they are for",
            "motr.blocks",
            &[],
            8,
        ),
    ];
    for (title, instrument, extra, lines) in looks {
        if let Err(e) = look(title, instrument, pid, "2", extra, lines) {
            failed.push(e);
        }
    }

    let out = {
        let mut c = client;
        let status = c.0.wait()?;
        let mut s = String::new();
        if let Some(mut o) = c.0.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut s)?;
        }
        anyhow::ensure!(status.success(), "m0client load failed: {s}");
        s
    };
    println!("\n== the client's own account of the load");
    for l in out.lines().rev().take(1) {
        println!("   {l}");
    }
    drop(server);
    std::fs::remove_dir_all(&data).ok();
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    println!("\n== done: m0d was watched live and stopped cleanly; nothing stayed attached");
    Ok(())
}
