//! A terminal for tests that need one: a tmux server on a private socket
//! running one command, keys sent with `send-keys`, the screen read with
//! `capture-pane`; killed when dropped.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

/// A tmux server of its own (its socket in a temporary folder) with one
/// 80×24 session; killed and the folder removed when dropped (on failure
/// too).
pub struct Tmux {
    socket: String,
    /// Holds the socket and the shell's history; removed when dropped.
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Runs `cmd` (a shell command line; `{dir}` is a temporary folder of
    /// its own) in a new 80×24 session; the line `EXIT=<status>` follows
    /// when it ends, and the pane stays.
    pub fn start(tag: &str, cmd: &str) -> Tmux {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ri-test-{tag}."))
            .tempdir()
            .unwrap();
        let socket = dir.path().join("tmux").display().to_string();
        let cmd = cmd.replace("{dir}", &dir.path().display().to_string());
        let t = Tmux { socket, dir };
        // `sh` itself gets the terminal's Ctrl-C too: a no-op trap keeps it
        // (its child starts with the default action).
        let line = format!("trap : INT; {cmd}; echo EXIT=$?; sleep 600");
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

    /// The session's own temporary folder (`{dir}` in its command).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Types `text` literally, then Enter.
    pub fn line(&self, text: &str) {
        self.text(text);
        self.keys(&["Enter"]);
    }

    /// Types `keys` (tmux key names, e.g. "Tab", "Enter", "C-u").
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types `text` literally.
    pub fn text(&self, text: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", "0", "-l", text])
                .status
                .success()
        );
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

    /// Types `typed` and `tabs` Tabs, waits (at most 30 s) until the
    /// screen holds `want`, then clears the line (Ctrl-U); the screen.
    pub fn complete(&self, typed: &str, tabs: usize, want: &str) -> String {
        self.text(typed);
        self.keys(&vec!["Tab"; tabs]);
        let s = self.wait_for(want, 30);
        self.keys(&["C-u"]);
        s
    }

    /// Types `line` and Enter at the prompt `prompt`, and waits for the
    /// next prompt; returns the screen.
    pub fn command(&self, prompt: &str, line: &str, secs: u64) -> String {
        let before = self.screen().matches(prompt).count();
        self.text(line);
        self.keys(&["Enter"]);
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if s.matches(prompt).count() > before && s.trim_end().ends_with(prompt.trim_end()) {
                return s;
            }
            assert!(Instant::now() < end, "'{line}' did not finish:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `line` as [`Tmux::command`] does; the first JSON line it printed.
    pub fn command_json(&self, prompt: &str, line: &str, secs: u64) -> serde_json::Value {
        let s = self.command(prompt, line, secs);
        let printed = s.rsplit(&format!("{prompt}{line}")).next().unwrap_or(&s);
        printed
            .lines()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON after '{line}' on the screen:\n{s}"))
    }

    /// The pid of the program the session runs (`sh`'s child).
    pub fn program_pid(&self) -> i32 {
        let out = self.tmux(&["display", "-p", "-t", "0", "#{pane_pid}"]);
        let sh: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let kids = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).unwrap();
        kids.split_whitespace()
            .next()
            .expect("a running program")
            .parse()
            .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
