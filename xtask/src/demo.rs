//! The main job's demo: start the bundled motr-shaped service (`m0d`) and a
//! client load, look at the live service with ri for a few seconds at a
//! time, print what was seen, and stop everything cleanly.

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

/// Runs one ri trace and prints its first `lines` events and its summary.
fn look(title: &str, pid: u32, secs: &str, lines: usize, probes: &[String]) -> Result<()> {
    println!("\n== {title}");
    println!("   ri trace -p {pid} --duration {secs} \\");
    for p in probes {
        println!("      '{p}'");
    }
    let out = Command::new(ri_bin())
        .args(["trace", "-p", &pid.to_string(), "--duration", secs])
        .args(probes)
        .output()
        .context("run ri")?;
    if !out.status.success() {
        bail!("ri failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text.lines().count();
    for l in text.lines().take(lines) {
        println!("   {l}");
    }
    if total > lines {
        println!("   ... {} more events", total - lines);
    }
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        println!("   {l}");
    }
    Ok(())
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
    let m = m0d.display().to_string();

    // Sessions are established when the client connects: watch first.
    let sessions = std::thread::spawn({
        let probes = vec![
            format!(
                "u:{m}:m0_rpc_session_establish(sender=session->s_conn->c_sender_id, ep=session->s_conn->c_ep.nep_addr)"
            ),
            format!("u:{m}:m0_rpc_conn_establish(ep=conn->c_ep.nep_addr)"),
        ];
        move || {
            look(
                "RPC sessions being established (motr.sessions)",
                pid,
                "2",
                8,
                &probes,
            )
        }
    });
    std::thread::sleep(Duration::from_millis(400));
    println!("\n== starting a client load: m0client load --rate 300 --concurrency 4 --duration 10");
    let client = Command::new(&m0client)
        .args(["--endpoint", &format!("127.0.0.1:{port}")])
        .args([
            "load",
            "--rate",
            "300",
            "--concurrency",
            "4",
            "--duration",
            "10",
            "--objects",
            "32",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start m0client")?;
    let client = Guard(client);
    sessions.join().expect("sessions thread")?;

    look(
        "requests queued to the request handler (motr.queue): opcode, name, xid, session",
        pid,
        "2",
        12,
        &[format!(
            "u:{m}:m0_fom_queue(op=fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode, name=fom->fo_fop->f_type->ft_name, xid=fom->fo_fop->f_item.ri_header.osr_xid, session=fom->fo_fop->f_item.ri_header.osr_session_id, loc=fom->fo_loc->fl_idx)"
        )],
    )?;
    look(
        "requests finishing (motr.fops): the FOM's final phase and its fop type",
        pid,
        "2",
        8,
        &[format!(
            "u:{m}:m0_fom_fini(name=fom->fo_fop->f_type->ft_name, xid=fom->fo_fop->f_item.ri_header.osr_xid, phase=fom->fo_sm_phase.sm_state)"
        )],
    )?;
    look(
        "allocations (motr.allocs): sizes asked of m0_alloc and pointers returned",
        pid,
        "2",
        8,
        &[
            format!("u:{m}:m0_alloc(size)"),
            format!("ur:{m}:m0_alloc(ptr=retval)"),
            format!("u:{m}:m0_free(data)"),
        ],
    )?;
    look(
        "cobs created for new objects (motr.cobs): the cob namespace record",
        pid,
        "2",
        4,
        &[format!("u:{m}:m0_cob_create(rec=*nsrec)")],
    )?;

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
    println!("\n== done: m0d was traced live and stopped cleanly; nothing stayed attached");
    Ok(())
}
