//! A terminal for tests that need one: a tmux server on a private socket
//! running one command, keys sent with `send-keys`, the screen read with
//! `capture-pane`; killed when dropped.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

/// A tmux server of its own with one 80×24 session.
pub struct Tmux {
    socket: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs the shell command line `cmd`; the line `EXIT=<status>` follows
    /// when it ends, and the pane stays.
    pub fn start(cmd: &str) -> Tmux {
        let dir = tempfile::Builder::new()
            .prefix("ri-tmux.")
            .tempdir()
            .expect("temporary directory");
        let socket = dir.path().join("tmux").display().to_string();
        let t = Tmux { socket, _dir: dir };
        let line = format!("{cmd}; echo EXIT=$?; sleep 600");
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "sh",
            "-c",
            &line,
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-S", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux is needed (cargo xtask setup installs it)")
    }

    /// Types `text` literally, then Enter.
    pub fn line(&self, text: &str) {
        let ok = self
            .tmux(&["send-keys", "-t", "0", "-l", text])
            .status
            .success()
            && self
                .tmux(&["send-keys", "-t", "0", "Enter"])
                .status
                .success();
        assert!(ok, "tmux send-keys failed");
    }

    /// The screen, wrapped lines joined, with the scrollback.
    pub fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-S", "-200", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen holds `what` (at most `secs` seconds).
    pub fn wait_for(&self, what: &str, secs: u64) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(Instant::now() < end, "no '{what}' on the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
