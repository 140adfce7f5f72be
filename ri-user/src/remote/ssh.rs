//! The system's `ssh`: one multiplexed connection per host, batch mode,
//! changed host keys refused; the remote `ri` command line, `--push`, and
//! what a failed session's exit status and stderr mean.

use std::{
    ffi::OsString,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use sha2::Digest as _;

use super::{Failure, PROTOCOL};

/// Exit status of the remote shell when the pushed binary is not cached yet.
const NOT_CACHED: i32 = 96;

/// How to reach the hosts.
#[derive(Clone, Debug)]
pub struct Ssh {
    /// `--ssh-config FILE`.
    pub config: Option<PathBuf>,
    /// Where the multiplexing sockets live.
    pub control_dir: PathBuf,
    /// `--push`.
    pub push: bool,
}

impl Ssh {
    /// The options for `host`: the user's configuration, batch mode, a
    /// shared master connection, and no silently accepted host keys.
    pub fn command(&self, host: &str) -> Command {
        self.command_with(host, &[])
    }

    /// `command` with `first` options ahead of ri's (ssh keeps an option's
    /// first value).
    fn command_with(&self, host: &str, first: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(first);
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]);
        let socket = self.control_path(host);
        if master_up(&socket) {
            // The master checked the host's key already, and only it
            // connects: no need to ask ssh for the policy (`ssh -G` costs
            // a process per host and run). Should the master end meanwhile,
            // the connection ssh then makes checks strictly: the key is
            // known since the master's connection.
            c.args(["-o", "StrictHostKeyChecking=yes"]);
        } else if !self.strict_in_config(host) {
            // `no` would let a changed key through (with only password
            // logins turned off); `accept-new` adds unknown keys only.
            c.args(["-o", "StrictHostKeyChecking=accept-new"]);
        }
        c.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60"]);
        c.arg("-o").arg(format!("ControlPath={}", socket.display()));
        c.args(["-T", "-x", "-a", "-e", "none", "--", host]);
        c
    }

    /// The master socket for `host`, named by what picks the destination
    /// (the config file and the host as given) so ri finds it without
    /// asking ssh to resolve the host.
    fn control_path(&self, host: &str) -> PathBuf {
        use std::os::unix::ffi::OsStrExt as _;
        let mut h = sha2::Sha256::new();
        if let Some(f) = &self.config {
            h.update(f.as_os_str().as_bytes());
        }
        h.update([0]);
        h.update(host.as_bytes());
        let hex: String = h.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.control_dir.join(hex)
    }

    /// Whether the user's configuration already asks for strict checking
    /// (`yes`, or `ask`, which batch mode treats as `yes`, or `accept-new`).
    fn strict_in_config(&self, host: &str) -> bool {
        let mut c = Command::new("ssh");
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        let out = c.args(["-G", "--", host]).stderr(Stdio::null()).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        text.unwrap_or_default().lines().any(|l| {
            matches!(
                l.strip_prefix("stricthostkeychecking "),
                Some("true" | "ask" | "accept-new")
            )
        })
    }

    /// The shell command that runs `args` with the remote ri.
    pub fn remote_command(&self, args: &[OsString]) -> String {
        let mut line = String::new();
        for a in args {
            line.push(' ');
            line.push_str(&quote(&a.to_string_lossy()));
        }
        let child = format!("--remote-child={PROTOCOL}/{}", super::build_id());
        if self.push {
            format!(
                "p=\"$HOME/.cache/ri/bin/ri-{}\"; [ -x \"$p\" ] || exit {NOT_CACHED}; exec \"$p\" {child}{line}",
                exe_hash()
            )
        } else {
            format!("exec ri {child}{line}")
        }
    }

    /// Starts `host`'s ri on `args`, its stdin, stdout and stderr piped
    /// (stdin non-blocking: a stalled host never blocks a heartbeat), in a
    /// process group of its own and ended with the thread that starts it
    /// (the remote ri then ends too: its stdin closes).
    pub fn session(&self, host: &str, args: &[OsString]) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = self.command(host);
        cmd.arg(self.remote_command(args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        if let Some(i) = &child.stdin {
            use std::os::fd::AsRawFd as _;
            // SAFETY: flags of our own pipe end.
            unsafe { libc::fcntl(i.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        }
        Ok(child)
    }

    /// Copies this binary to the host's cache, under its content hash.
    pub fn upload(&self, host: &str) -> Result<(), Failure> {
        let hash = exe_hash();
        let script = format!(
            "set -e; d=\"$HOME/.cache/ri/bin\"; mkdir -p \"$d\"; t=$(mktemp \"$d/.ri.XXXXXX\"); \
             cat > \"$t\"; chmod 755 \"$t\"; \
             if command -v sha256sum >/dev/null; then \
             [ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" = {hash} ] || {{ rm -f \"$t\"; echo 'ri: pushed copy is damaged' >&2; exit 1; }}; fi; \
             mv -f \"$t\" \"$d/ri-{hash}\""
        );
        let exe = std::fs::File::open("/proc/self/exe")
            .map_err(|e| Failure::Push(format!("cannot read this binary: {e}")))?;
        let out = self
            .command(host)
            .arg(script)
            .stdin(exe)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Failure::Unreachable(format!("cannot run ssh: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(classify(out.status.code(), &err, false)
            .unwrap_or_else(|| Failure::Push(last_line(&err).into())))
    }

    /// Starts `host`'s master connection as a child of this ri, in a
    /// process group of its own (the terminal's Ctrl-C is not for it) and
    /// ended with this ri (so never left behind): the sessions of every
    /// later command share it. Ready once [`Ssh::master_ready`].
    pub fn spawn_master(&self, host: &str) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt as _;
        let mut c = self.command_with(
            host,
            &["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N"],
        );
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: one async-signal-safe call between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        c.spawn()
    }

    /// Whether `host`'s master connection is up (`ssh -O check`).
    pub fn master_ready(&self, host: &str) -> bool {
        self.control(host, "check")
    }

    /// Ends `host`'s master connection (`ssh -O exit`).
    pub fn close_master(&self, host: &str) {
        self.control(host, "exit");
    }

    /// `ssh -O OP` to `host`'s master; whether it succeeded.
    fn control(&self, host: &str, op: &str) -> bool {
        let mut c = Command::new("ssh");
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        c.arg("-o")
            .arg(format!("ControlPath={}/%C", self.control_dir.display()));
        c.args(["-O", op, "--", host])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether a finished session only found the pushed binary missing.
    pub fn needs_upload(&self, code: Option<i32>, stderr: &str) -> bool {
        self.push && code == Some(NOT_CACHED) && stderr.trim().is_empty()
    }
}

/// Whether a master connection listens on `socket`.
fn master_up(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// The default directory of the multiplexing sockets: `$RI_SSH_CONTROL_DIR`,
/// else `$XDG_RUNTIME_DIR/ri/ssh`, else `~/.cache/ri/ssh` (mode 0700).
pub fn control_dir() -> PathBuf {
    let dir = std::env::var_os("RI_SSH_CONTROL_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("ri/ssh")))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            Path::new(&home).join(".cache/ri/ssh")
        });
    let _ = std::fs::create_dir_all(&dir);
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    dir
}

/// SHA-256 of this binary, hex (computed once).
pub fn exe_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut h = sha2::Sha256::new();
        if let Ok(mut f) = std::fs::File::open("/proc/self/exe") {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// A word the remote shell reads back unchanged.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        return s.into();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The last non-empty line of `text`.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// What a session's exit status and stderr say went wrong, if anything.
/// `remote` is whether the remote ri printed its own first line (so a 255
/// is not ssh's).
pub fn classify(code: Option<i32>, stderr: &str, remote: bool) -> Option<Failure> {
    let has = |s: &str| stderr.contains(s);
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key for") && has("has changed") {
        return Some(Failure::HostKeyChanged);
    }
    if has("Host key verification failed") || has("No ED25519 host key is known") {
        return Some(Failure::HostKeyUnknown);
    }
    if has("Permission denied (") || has("Too many authentication failures") {
        return Some(Failure::AuthRefused);
    }
    if has("--remote-child") {
        return Some(Failure::OtherVersion(
            "its ri does not know the fleet protocol".into(),
        ));
    }
    if let Some(l) = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ri: error: fleet protocol "))
    {
        return Some(Failure::OtherVersion(l.into()));
    }
    if let Some(l) = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ri: error: other build: "))
    {
        let l = l.split(": push").next().unwrap_or(l);
        return Some(Failure::OtherVersion(l.into()));
    }
    match code {
        Some(0) => None,
        Some(127) => Some(Failure::Missing),
        Some(255) if !remote => Some(Failure::Unreachable(
            last_line(stderr).trim_start_matches("ssh: ").to_string(),
        )),
        None => Some(Failure::Remote("ssh was killed".into())),
        Some(c) if c == i32::from(super::NEEDS_CONFIRMATION) => Some(Failure::Remote(
            "a mutation was held back: not confirmed".into(),
        )),
        Some(c) => {
            let line = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("ri: error: "))
                .unwrap_or_else(|| last_line(stderr));
            Some(Failure::Remote(if line.is_empty() {
                format!("exit status {c}")
            } else {
                line.into()
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_failures() {
        assert_eq!(quote("motr.ops"), "motr.ops");
        assert_eq!(quote("u:m0d:f(a=arg0)"), "'u:m0d:f(a=arg0)'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        let changed = "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n";
        assert!(matches!(
            classify(Some(255), changed, false),
            Some(Failure::HostKeyChanged)
        ));
        assert!(matches!(
            classify(Some(255), "root@x: Permission denied (publickey).\n", false),
            Some(Failure::AuthRefused)
        ));
        assert!(matches!(
            classify(Some(255), "ssh: connect to host x port 22: Connection refused\n", false),
            Some(Failure::Unreachable(m)) if m.contains("Connection refused")
        ));
        assert!(matches!(
            classify(Some(127), "sh: 1: exec: ri: not found\n", false),
            Some(Failure::Missing)
        ));
        assert!(matches!(
            classify(Some(2), "ri: error: no function matches 'x' in /m0d\n", true),
            Some(Failure::Remote(m)) if m.starts_with("no function")
        ));
        assert!(classify(Some(0), "", true).is_none());
    }

    #[test]
    fn master_sockets_are_named_by_config_and_host() {
        let ssh = |config: Option<&str>| Ssh {
            config: config.map(PathBuf::from),
            control_dir: "/run/ri-test".into(),
            push: false,
        };
        let a = ssh(None).control_path("n1");
        assert_eq!(a, ssh(None).control_path("n1"));
        assert_ne!(a, ssh(None).control_path("n2"));
        assert_ne!(a, ssh(Some("cfg")).control_path("n1"));
        assert_eq!(a.parent(), Some(Path::new("/run/ri-test")));
        assert!(!master_up(&a));
    }
}
