//! SIGUSR2 self-report through the Rust API. Signal dispositions are
//! process-wide, so this binary holds a single test that does everything
//! in sequence.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ri_control::ReportTarget;
use ri_control::client::Client;
use serde_json::{Value, json};

fn reports_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_reports(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reports_in(dir);
        if r.len() >= n || Instant::now() > deadline {
            // Let the writer finish the file.
            std::thread::sleep(Duration::from_millis(50));
            return reports_in(dir);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigusr2_handler() -> usize {
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

#[test]
fn sigusr2_writes_a_report_file() {
    let dir = tmpdir();
    let reports = dir.path().join("reports");
    let name = unique("usr2");
    let ctl = builder(&name, dir.path())
        .sigusr2_report(ReportTarget::Dir(reports.clone()))
        .start()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let t = Arc::clone(&ticks);
    ctl.report_section("work", move || json!({"ticks": t.load(Ordering::Relaxed)}))
        .unwrap();
    ctl.report_section("notes", || json!("free text\nsecond line"))
        .unwrap();
    assert_ne!(sigusr2_handler(), libc::SIG_DFL);

    // A second instance cannot take SIGUSR2 as well.
    let second = builder(&unique("usr2-b"), dir.path())
        .sigusr2_report(ReportTarget::Stderr)
        .start();
    assert!(
        matches!(second, Err(ri_control::ControlError::Signal(_))),
        "{second:?}"
    );

    // The target's thread keeps working while reports are written.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stop, ticks) = (Arc::clone(&stop), Arc::clone(&ticks));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                ticks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) }, 0);
    let files = wait_reports(&reports, 1);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let fname = file.file_name().unwrap().to_str().unwrap();
    let pid = std::process::id();
    assert!(fname.starts_with(&format!("{name}.{pid}.")), "{fname}");
    assert!(fname.ends_with(".report.txt"), "{fname}");
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(&format!("target:   {name}")), "{text}");
    assert!(text.contains(&format!("pid:      {pid}")), "{text}");
    assert!(text.contains("time:     20"), "{text}");
    assert!(text.contains("protocol 1"), "{text}");
    assert!(text.contains("----- work -----"), "{text}");
    assert!(text.contains("\"ticks\""), "{text}");
    assert!(text.contains("free text\nsecond line"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Another signal, another file; the control socket still answers.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) }, 0);
    assert_eq!(wait_reports(&reports, 2).len(), 2);
    let mut c = Client::connect_path(ctl.socket_path()).unwrap();
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));
    let r = c.call("report", Value::Null, false).unwrap();
    assert!(r["work"]["ticks"].as_u64().unwrap() > 0);

    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    drop(c);
    ctl.stop();
    // The previous disposition (default) is restored.
    assert_eq!(sigusr2_handler(), libc::SIG_DFL);
    // And the signal can be owned again.
    let again = builder(&unique("usr2-c"), dir.path())
        .sigusr2_report(ReportTarget::Dir(reports.clone()))
        .start()
        .unwrap();
    assert!(again.write_report().unwrap().is_some());
    assert_eq!(reports_in(&reports).len(), 3);
}
