//! `ri shell` and `ri top` in a real terminal: tmux (80×24) started on a
//! private socket, keys sent with `send-keys`, the screen read with
//! `capture-pane`, against m0d and m0client load.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use ri_tests::{m0sim::M0d, require_bpf, ri_bin, tmux::Tmux};
use serde_json::Value;

/// Bytes of m0d's text that differ from its file: a uprobe is a
/// breakpoint written into the text; detaching writes the original back.
fn patched_bytes(pid: i32) -> usize {
    use std::{io::Read as _, os::unix::fs::FileExt as _};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut differ = 0;
    for l in maps
        .lines()
        .filter(|l| l.contains(" r-xp ") && l.ends_with("/m0d"))
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (lo, hi) = f[0].split_once('-').unwrap();
        let start = u64::from_str_radix(lo, 16).unwrap();
        let len = u64::from_str_radix(hi, 16).unwrap() - start;
        let offset = u64::from_str_radix(f[2], 16).unwrap();
        let mut file = Vec::new();
        std::fs::File::open(f[5])
            .unwrap()
            .read_to_end(&mut file)
            .unwrap();
        let end = (offset + len).min(file.len() as u64) as usize;
        let want = &file[offset as usize..end];
        let mut have = vec![0; want.len()];
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        mem.read_exact_at(&mut have, start).unwrap();
        differ += want.iter().zip(&have).filter(|(a, b)| a != b).count();
    }
    differ
}

/// Waits (at most 10 s: the kernel releases uprobes after a grace period)
/// until m0d's text is its file's again; fails otherwise.
fn assert_unprobed(pid: i32) {
    let end = Instant::now() + Duration::from_secs(10);
    while patched_bytes(pid) > 0 {
        assert!(
            Instant::now() < end,
            "m0d's text still carries breakpoints: {} bytes differ from its file",
            patched_bytes(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ri bpf links a process holds.
fn bpf_links(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| {
                    t.to_string_lossy().contains("bpf_link")
                        || t.to_string_lossy().contains("perf_event")
                })
                .count()
        })
        .unwrap_or(0)
}

fn shell(m0d: &M0d, tag: &str) -> Tmux {
    let t = Tmux::start(
        tag,
        &format!(
            "{} shell -p {} --history {{dir}}/history",
            ri_bin().display(),
            m0d.pid
        ),
    );
    t.wait_for(&format!("ri {}> ", m0d.pid), 20);
    t
}

#[test]
fn shell_completes_probe_points_and_struct_members() {
    require_bpf();
    let m0d = M0d::start();
    let t = shell(&m0d, "complete");
    t.text("count u:m0d:m0_fom_qu");
    t.keys(&["Tab"]);
    t.wait_for("count u:m0d:m0_fom_queue", 20);
    t.keys(&["C-u"]);
    t.text("trace 'u:m0d:m0_fom_queue(x=fom->fo_");
    t.keys(&["Tab", "Tab"]);
    let s = t.wait_for("fo_sm_phase", 30);
    for m in ["fo_fop", "fo_loc", "fo_type", "fo_ops"] {
        assert!(s.contains(m), "no member {m}:\n{s}");
    }
    t.keys(&["C-u"]);
    // Deeper: a member of the member's struct.
    t.text("trace 'u:m0d:m0_fom_queue(x=fom->fo_fop->f_ty");
    t.keys(&["Tab"]);
    t.wait_for("fom->fo_fop->f_type", 20);
    t.keys(&["C-u"]);
    t.text("exit");
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0", 20);
}

/// Per opcode name, the `count` of the final JSON `show` printed.
fn counts(doc: &Value) -> BTreeMap<String, u64> {
    doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["by"]["opcode_name"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn shell_background_instrument_counts_what_m0d_served_and_exit_detaches() {
    require_bpf();
    let m0d = M0d::start();
    let t = shell(&m0d, "jobs");
    let prompt = format!("ri {}> ", m0d.pid);
    let ri = t.program_pid();
    let s = t.command(&prompt, "start motr.ops as ops", 30);
    assert!(s.contains("ri: attached"), "{s}");
    assert!(bpf_links(ri) > 0, "the shell holds no probe");
    assert!(
        patched_bytes(m0d.pid) > 0,
        "m0d's text carries no breakpoint"
    );
    let load = m0d.load(200, 3.0, "shell");
    // Other commands while the instrument counts: a bad line, a listing.
    let s = t.command(&prompt, "frobnicate --now", 10);
    assert!(
        s.contains("ri: error: unrecognized subcommand 'frobnicate'"),
        "{s}"
    );
    assert_eq!(s.matches("ri: error").count(), 1, "{s}");
    let s = t.command(&prompt, "jobs", 10);
    assert!(s.contains("ops          motr.ops"), "{s}");
    let s = t.command(&prompt, "packs motr", 10);
    assert!(s.contains("motr.queue"), "{s}");
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(300));
    let stats = m0d.stats();
    let s = t.command(&prompt, "show ops --json", 10);
    let doc: Value = s
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON on the screen:\n{s}"));
    let ours = counts(&doc);
    let theirs: BTreeMap<String, u64> = stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(ours, theirs, "ri's counts vs m0d's own");
    assert!(ours.values().sum::<u64>() > 100, "{ours:?}");
    t.text("exit");
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0", 30);
    assert!(
        !std::path::Path::new(&format!("/proc/{ri}")).exists(),
        "the shell still runs"
    );
    assert_unprobed(m0d.pid);
}

#[test]
fn shell_killed_leaves_nothing_attached() {
    require_bpf();
    let m0d = M0d::start();
    let t = shell(&m0d, "kill");
    let ri = t.program_pid();
    t.text("start motr.queue as q");
    t.keys(&["Enter"]);
    t.wait_for("ri: attached", 30);
    assert!(patched_bytes(m0d.pid) > 0);
    // SAFETY: plain syscall.
    unsafe { libc::kill(ri, libc::SIGTERM) };
    t.wait_for("EXIT=143", 20);
    assert_unprobed(m0d.pid);
}

#[test]
fn top_shows_opcodes_with_rates_and_q_quits() {
    require_bpf();
    let m0d = M0d::start();
    let load = m0d.load(200, 6.0, "top");
    let t = Tmux::start(
        "top",
        &format!("{} top motr -p {}", ri_bin().display(), m0d.pid),
    );
    let s = t.wait_for("write (42)", 30);
    assert!(s.contains("/s"), "{s}");
    for op in ["read (41)", "create (49)"] {
        t.wait_for(op, 10);
    }
    // The requests pane: a rate above zero for write.
    let row = t
        .wait_for("write (42)", 5)
        .lines()
        .find(|l| l.starts_with("write (42)"))
        .map(String::from)
        .unwrap();
    let rate: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rate > 0.0, "{row}");
    // Panes switch.
    t.keys(&["4"]);
    t.wait_for("allocs/s", 10);
    t.keys(&["q"]);
    t.wait_for("EXIT=0", 20);
    drop(load);
    assert_unprobed(m0d.pid);
}

#[test]
fn top_once_prints_p50_and_p99_per_opcode() {
    require_bpf();
    let m0d = M0d::start();
    let load = m0d.load(200, 5.0, "once");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(ri_bin())
        .args([
            "top",
            "motr",
            "-p",
            &m0d.pid.to_string(),
            "--once",
            "--interval",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let header = text
        .lines()
        .find(|l| l.starts_with("opcode"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(header.contains("p50") && header.contains("p99"), "{header}");
    for op in ["write (42)", "read (41)", "create (49)", "getattr (45)"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("no {op}:\n{text}"));
        assert!(row.split_whitespace().count() >= 7, "{row}");
    }
    drop(load);
}

#[test]
fn shell_ctrl_c_ctl_completion_multi_line_and_save() {
    require_bpf();
    let m0d = M0d::start();
    let t = shell(&m0d, "save");
    let prompt = format!("ri {}> ", m0d.pid);
    // Ctrl-C ends the foreground command (its totals print), not the shell.
    t.text("count u:m0d:m0_fom_fini");
    t.keys(&["Enter"]);
    t.wait_for("ri: attached", 30);
    let before = t.screen().matches(&prompt).count();
    t.keys(&["C-c"]);
    let end = Instant::now() + Duration::from_secs(20);
    while t.screen().matches(&prompt).count() <= before {
        assert!(
            Instant::now() < end,
            "no prompt after Ctrl-C:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The target's own control commands and their argument names.
    t.text("ctl reqh.pa");
    t.keys(&["Tab"]);
    t.wait_for("ctl reqh.pause", 20);
    t.keys(&["C-u"]);
    t.text("ctl service.state st");
    t.keys(&["Tab"]);
    t.wait_for("ctl service.state state=", 20);
    t.keys(&["C-u"]);
    // A line ending in a backslash continues.
    t.text("fid decode \\");
    t.keys(&["Enter"]);
    let s = t.command(&prompt, "'<1:2>'", 10);
    assert!(s.contains("key: 0x2"), "{s}");
    t.command(&prompt, "start motr.queue as q", 30);
    let file = t.dir().join("saved.toml");
    t.command(&prompt, &format!("save {}", file.display()), 10);
    let saved = std::fs::read_to_string(&file).unwrap();
    let doc: toml::Table = toml::from_str(&saved).unwrap_or_else(|e| panic!("{e}:\n{saved}"));
    assert_eq!(
        doc["targets"]["pids"].as_array().unwrap()[0].as_integer(),
        Some(m0d.pid as i64),
        "{saved}"
    );
    let inst = doc["instruments"].as_table().unwrap();
    assert_eq!(inst["q"]["run"].as_str(), Some("motr.queue"), "{saved}");
    assert_eq!(
        inst["count"]["cmd"].as_str(),
        Some("count u:m0d:m0_fom_fini"),
        "{saved}"
    );
    // What a session cannot run stays, as a comment, in its place.
    let at = |s: &str| saved.find(s).unwrap_or_else(|| panic!("no {s}:\n{saved}"));
    assert!(
        at("[instruments.count]") < at("# ran: fid decode"),
        "{saved}"
    );
    assert!(at("# ran: fid decode") < at("[instruments.q]"), "{saved}");
    t.keys(&["C-d"]);
    t.wait_for("EXIT=0", 30);
    assert_unprobed(m0d.pid);

    // The saved file replays as a session: both instruments ran.
    let bundle = t.dir().join("bundle");
    let out = Command::new(ri_bin())
        .args(["session", "run"])
        .arg(&file)
        .args(["--duration", "1", "--quiet", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "session run of the saved file: {out:?}"
    );
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.join("manifest.json")).expect("manifest"),
    )
    .unwrap();
    let mut names: Vec<&str> = m["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["count", "q"], "{m}");
    assert_eq!(m["targets"][0]["pid"].as_u64(), Some(m0d.pid as u64), "{m}");
    assert_unprobed(m0d.pid);
}

#[test]
fn shell_completes_usdt_probes_and_ctrl_r_finds_history_of_an_earlier_shell() {
    let dir = tempfile::tempdir().unwrap();
    // A short path: the line must fit the 80 columns.
    let bin = dir.path().join("sdt");
    std::fs::copy(ri_tests::fixture("sdt"), &bin).expect("copy sdt");
    let bin = bin.display().to_string();
    let history = dir.path().join("history");
    let start = |tag: &str| {
        let t = Tmux::start(
            tag,
            &format!(
                "{} shell --history {}",
                ri_bin().display(),
                history.display()
            ),
        );
        t.wait_for("ri> ", 20);
        t
    };
    let t = start("hist1");
    // A USDT probe point from the binary's notes.
    t.text(&format!("count usdt:{bin}:th"));
    t.keys(&["Tab"]);
    t.wait_for(&format!("count usdt:{bin}:three"), 20);
    t.keys(&["C-u"]);
    let s = t.command("ri> ", "fid decode '<7:9>'", 10);
    assert!(s.contains("key: 0x9"), "{s}");
    t.command("ri> ", "packs", 10);
    t.text("exit");
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0", 20);
    drop(t);
    // A new shell on the same history: Ctrl-R finds the earlier line (past
    // a later one) and Enter runs it.
    let t = start("hist2");
    t.keys(&["C-r"]);
    t.text("fid de");
    t.wait_for("fid decode '<7:9>'", 10);
    let before = t.screen().matches("key: 0x9").count();
    t.keys(&["Enter"]);
    let end = Instant::now() + Duration::from_secs(10);
    while t.screen().matches("key: 0x9").count() <= before {
        assert!(
            Instant::now() < end,
            "the line found did not run:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.wait_for("ri> ", 10);
    t.text("exit");
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0", 20);
}

#[test]
fn top_once_selects_by_exe_and_shows_a_generic_pack() {
    require_bpf();
    let dir = tempfile::tempdir().unwrap();
    // A copy of its own: only this test's m0d runs this file (other m0d
    // processes on the machine share its name, not its file).
    let bin = dir.path().join("m0d");
    std::fs::copy(ri_tests::fixture("m0d"), &bin).expect("copy m0d");
    let m0d = M0d::start_with(ri_tests::m0sim::M0dConfig {
        bin: Some(bin.clone()),
        ..Default::default()
    });
    let load = m0d.load(200, 8.0, "sel");
    std::thread::sleep(Duration::from_millis(300));
    let top = |args: &[&str]| {
        let out = Command::new(ri_bin())
            .arg("top")
            .args(args)
            .args(["--once", "--interval", "2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ri top {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = top(&["motr", "--exe", &bin.display().to_string()]);
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .contains(&m0d.pid.to_string()),
        "{text}"
    );
    for op in ["write (42)", "read (41)"] {
        assert!(text.lines().any(|l| l.starts_with(op)), "no {op}:\n{text}");
    }
    // Another pack: one pane per aggregating instrument.
    let text = top(&["libc", "-p", &m0d.pid.to_string()]);
    for pane in ["(libc.calls)", "(libc.sizes)"] {
        assert!(text.contains(pane), "no pane {pane}:\n{text}");
    }
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .next()
            .is_some_and(|k| k.ends_with(":malloc"))),
        "no malloc row:\n{text}"
    );
    drop(load);
    assert_unprobed(m0d.pid);
    // A name matching no process: one line, status 2.
    let out = Command::new(ri_bin())
        .args(["top", "--once", "--comm", "no-such-ri-x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        "ri: error: no running process matches --comm no-such-ri-x"
    );
}
