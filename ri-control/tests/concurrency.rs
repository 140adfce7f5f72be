//! 100 concurrent clients while the "target" keeps working.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use ri_control::client::Client;
use serde_json::json;

#[test]
fn hundred_clients_while_the_target_works() {
    const CLIENTS: usize = 100;
    const CALLS: usize = 5;
    let dir = tmpdir();
    let ctl = builder(&unique("conc"), dir.path()).start().unwrap();
    let counter = register_test_commands(&ctl);
    let path = ctl.socket_path().to_owned();

    // The target's own thread: counts iterations and tracks its longest
    // stall between two iterations.
    let done = Arc::new(AtomicBool::new(false));
    let work = Arc::new(AtomicU64::new(0));
    let worker = {
        let (done, work) = (Arc::clone(&done), Arc::clone(&work));
        std::thread::spawn(move || {
            let mut last = Instant::now();
            let mut worst = Duration::ZERO;
            let mut x = 0u64;
            while !done.load(Ordering::Relaxed) {
                for i in 0..10_000u64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                }
                std::hint::black_box(x);
                work.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                worst = worst.max(now - last);
                last = now;
            }
            worst
        })
    };

    let work_before = work.load(Ordering::Relaxed);
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut c = Client::connect_path(&path).expect("connect");
                // All 100 connections are open before anyone calls.
                barrier.wait();
                let mut answers = 0;
                for j in 0..CALLS {
                    let msg = format!("{i}-{j}");
                    let v = match j % 3 {
                        0 => c.call("echo", json!({"msg": msg}), false).unwrap()["msg"].clone(),
                        1 => c.call("sleep", json!({"ms": 20}), false).unwrap(),
                        _ => c.call("counter.add", json!({"n": 1}), true).unwrap()["value"].clone(),
                    };
                    if j % 3 == 0 {
                        assert_eq!(v, json!(msg));
                    }
                    answers += 1;
                }
                answers
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = started.elapsed();
    let work_during = work.load(Ordering::Relaxed) - work_before;
    done.store(true, Ordering::Relaxed);
    let worst_stall = worker.join().unwrap();

    assert_eq!(answered, CLIENTS * CALLS);
    // Each client did one confirmed counter.add per 3 calls (j = 2).
    let adds = CLIENTS * (0..CALLS).filter(|j| j % 3 == 2).count();
    assert_eq!(counter.load(Ordering::SeqCst), adds as i64);
    let audit = Client::connect_path(&path)
        .unwrap()
        .call("audit", json!({"n": 256}), false)
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), adds);
    assert!(work_during > 0, "the target's thread made no progress");
    assert!(
        worst_stall < Duration::from_secs(2),
        "the target's thread stalled for {worst_stall:?}"
    );
    eprintln!(
        "{answered} answers in {elapsed:?}; worker: {work_during} iterations, worst stall {worst_stall:?}"
    );
}
