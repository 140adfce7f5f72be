//! `ri top -H`: the full-screen view merged over three nodes (namespaces
//! with their own sshd and m0d, tests/src/fleet.rs) in an 80×24 tmux pane
//! under m0client load: every host's opcodes with rates, sort and host
//! keys, a dropped host named, `q` (or SIGKILL) leaving no ri and no probe
//! anywhere.

use std::time::{Duration, Instant};

use ri_tests::{fleet::Fleet, ri_bin, tmux::Tmux};

/// `ri -H` (the fleet's nodes) `top motr --comm m0d` in an 80×24 pane.
fn top_over(fleet: &Fleet, tag: &str) -> Tmux {
    let cmd = format!(
        "RI_SSH_CONTROL_DIR={} {} -H {} --ssh-config {} top motr --comm m0d",
        fleet.control_dir().display(),
        ri_bin().display(),
        fleet.hosts(),
        fleet.ssh_config.display()
    );
    Tmux::start(tag, &cmd)
}

/// The screen's table rows of `host` (they start with its name).
fn rows_of<'a>(screen: &'a str, host: &str) -> Vec<&'a str> {
    let head = format!("{host} ");
    screen.lines().filter(|l| l.starts_with(&head)).collect()
}

/// The rate of `host`'s write row on the screen, once it shows one.
fn write_rate(t: &Tmux, host: &str) -> f64 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let s = t.screen();
        let row = rows_of(&s, host)
            .into_iter()
            .find(|l| l.contains("write (42)"));
        // host, "write", "(42)", then the rate.
        if let Some(rate) = row.and_then(|r| r.split_whitespace().nth(3)?.parse::<f64>().ok())
            && rate > 0.0
        {
            return rate;
        }
        assert!(
            Instant::now() < end,
            "no write row of {host} with a rate:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn top_over_three_hosts_merges_their_opcodes_and_q_ends_every_remote_ri() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    for n in &mut fleet.nodes {
        n.load(60, 40.0);
    }
    let t = top_over(&fleet, "fleet-top");
    let s = t.wait_for("write (42)", 60);
    assert!(
        s.contains(&format!("ri top motr  hosts {}", fleet.hosts())),
        "{s}"
    );
    let header = s
        .lines()
        .find(|l| l.starts_with("host"))
        .unwrap_or_else(|| panic!("no table header:\n{s}"));
    assert!(
        header.contains("opcode") && header.contains("/sv"),
        "{header}"
    );
    // Every host's rows, in one table.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = t.screen();
        let missing: Vec<&str> = (fleet.nodes.iter())
            .map(|n| n.name.as_str())
            .filter(|h| rows_of(&s, h).is_empty())
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < end, "no rows of {missing:?}:\n{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // `h` shows one host at a time, its write rate above zero; then all.
    for n in &fleet.nodes {
        t.keys(&["h"]);
        let s = t.wait_for(&format!("host {} (of 3)", n.name), 10);
        assert!(write_rate(&t, &n.name) > 0.0, "{s}");
        let others: Vec<&str> = (fleet.nodes.iter())
            .filter(|o| o.name != n.name)
            .flat_map(|o| rows_of(&s, &o.name))
            .collect();
        assert!(others.is_empty(), "other hosts shown: {others:?}\n{s}");
    }
    t.keys(&["h"]);
    t.wait_for(&format!("hosts {}", fleet.hosts()), 10);
    // `s` sorts by the next column (total), marked in the header.
    t.keys(&["s"]);
    t.wait_for("totalv", 10);
    // Panes switch: the memory pane, merged.
    t.keys(&["4"]);
    t.wait_for("allocated by", 10);
    t.keys(&["1"]);
    // A host whose link goes down is named on the status line; the
    // others go on.
    fleet.nodes[2].link_down();
    t.wait_for("n3: no frame for", 20);
    let before = write_rate(&t, "n1");
    std::thread::sleep(Duration::from_secs(2));
    assert!(write_rate(&t, "n1") > 0.0, "n1 stopped after {before}/s");
    t.keys(&["q"]);
    t.wait_for("EXIT=0", 20);
    fleet.wait_clean(Duration::from_secs(10), "q");
    drop(t);
}

#[test]
fn a_killed_top_over_hosts_leaves_no_remote_ri_and_no_probe() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let t = top_over(&fleet, "fleet-top-kill");
    t.wait_for("ri top motr  hosts", 30);
    // Every host attached (its panes' instruments) and sent a frame.
    let end = Instant::now() + Duration::from_secs(30);
    while fleet.nodes.iter().any(|n| n.ri_processes().is_empty())
        || t.screen().contains("waiting for")
        || !t.screen().contains("motr.fops")
    {
        assert!(
            Instant::now() < end,
            "no frame from every host:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signals the ri this test started.
    unsafe { libc::kill(t.program_pid(), libc::SIGKILL) };
    t.wait_for("EXIT=137", 10);
    fleet.wait_clean(Duration::from_secs(10), "SIGKILL");
}
