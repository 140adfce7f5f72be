//! `-H HOSTS`: runs the same command on many hosts through the system's OpenSSH and merges what they print.
//!
//! The local ri runs itself on each host (`ri --remote-child=PROTO ARGS`, or
//! a pushed copy), at most `--fanout` sessions at once, over one
//! multiplexed ssh connection per host. `ssh` is driven as a process rather
//! than through the `openssh` crate: that crate keeps its master sockets in
//! a fresh directory per session, while a ControlPath shared between runs
//! is what makes a second command on the same hosts cheap, and ri needs the
//! raw exit status and stderr of each session to name why a host failed.

mod child;
mod complete;
mod hosts;
mod interactive;
mod jobs;
mod merge;
mod session;
mod ssh;
mod stream;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::Args;

pub use child::active as child_active;
pub use complete::HostCompletion;
pub use interactive::Fleet;
pub use jobs::{HostJob, JobError};
pub use stream::{Event, Streams};

/// The protocol between a local and a remote ri: a version of the argument
/// and output conventions, and ri's own version.
pub const PROTOCOL: &str = concat!("1/", env!("CARGO_PKG_VERSION"));

/// The remote ri's first line on stderr: ssh's and the shell's lines come
/// before it.
pub const HELLO: &str = concat!("ri-remote 1/", env!("CARGO_PKG_VERSION"));

pub use crate::ctl::defer::{CONFIRM, NEEDS_CONFIRMATION};

/// This binary's GNU build-id (its SHA-256 when it has none): two ri of
/// the same version but another build are told apart by it.
pub fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        crate::report::build_id(std::path::Path::new("/proc/self/exe"))
            .unwrap_or_else(|| ssh::exe_hash().to_string())
    })
}

/// Flags of every command that send it to other hosts.
#[derive(Debug, Default, Args)]
pub struct FleetArgs {
    /// Run on these hosts through ssh: `h1,h2,...`, or `@FILE` (one host
    /// per line, `[group]` sections), or `@FILE:GROUP`.
    #[arg(
        short = 'H',
        long = "hosts",
        global = true,
        value_name = "HOSTS|@FILE[:GROUP]"
    )]
    pub hosts: Option<String>,
    /// An ssh configuration file (passed to ssh as -F).
    #[arg(long, global = true, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// At most N ssh sessions at once.
    #[arg(long, global = true, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub fanout: u32,
    /// Copy this ri to each host's cache (~/.cache/ri/bin, by content hash)
    /// instead of using the `ri` on its PATH.
    #[arg(long, global = true)]
    pub push: bool,
    /// Run for a local ri over ssh (set by the local ri).
    #[arg(long, global = true, hide = true, value_name = "PROTOCOL")]
    pub remote_child: Option<String>,
}

impl FleetArgs {
    /// The ssh flags (not `-H`) as a command line passes them on.
    pub fn ssh_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.ssh_config {
            out.extend(["--ssh-config".into(), c.display().to_string()]);
        }
        out.extend(["--fanout".into(), self.fanout.to_string()]);
        if self.push {
            out.push("--push".into());
        }
        out
    }
}

/// The hosts a `-H` value names (a list or an inventory), in order.
pub fn parse_hosts(spec: &str) -> Result<Vec<String>, RemoteError> {
    hosts::parse(spec)
}

/// Why a fleet command cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// An inventory file that cannot be read or has no such group.
    #[error("inventory {path}: {reason}")]
    Inventory {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A `-H` value naming no host.
    #[error("-H '{0}' names no host")]
    NoHosts(String),
    /// A host name ssh would read as an option or cannot use.
    #[error("bad host name '{0}'")]
    BadHost(String),
    /// The local ri speaks another protocol.
    #[error(
        "fleet protocol {theirs} of the local ri, this ri speaks {ours}: push the same build (--push) or install it"
    )]
    Protocol {
        /// This ri's.
        ours: String,
        /// The local ri's.
        theirs: String,
    },
    /// The local ri is the same version but another build.
    #[error(
        "other build: local ri build {theirs}, remote ri build {ours}: push the same build (--push) or install it"
    )]
    Build {
        /// This ri's build-id.
        ours: String,
        /// The local ri's.
        theirs: String,
    },
    /// More hosts than --fanout for a command that runs until interrupted:
    /// the hosts past the first N would never start.
    #[error(
        "{hosts} hosts but --fanout {fanout}: this command runs until interrupted, so the hosts past the first {fanout} would never start (add --duration or --fanout {hosts})"
    )]
    Fanout {
        /// Hosts named.
        hosts: usize,
        /// `--fanout`.
        fanout: u32,
    },
    /// A mutation across hosts without --yes or a terminal to confirm on.
    #[error("{0}")]
    NotConfirmed(String),
}

/// Why one host failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No connection (refused, timed out, no route, unknown name).
    Unreachable(String),
    /// The server refused every key.
    AuthRefused,
    /// The host's key differs from the one in known_hosts.
    HostKeyChanged,
    /// The host's key is not in known_hosts and may not be added.
    HostKeyUnknown,
    /// No `ri` on the host's PATH.
    Missing,
    /// The host's ri is another version.
    OtherVersion(String),
    /// Copying the binary failed.
    Push(String),
    /// The remote ri failed (probe or process not found, ...).
    Remote(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) => write!(f, "unreachable: {why}"),
            Failure::AuthRefused => write!(f, "authentication refused"),
            Failure::HostKeyChanged => write!(
                f,
                "host key changed (refused; check the host, then fix known_hosts)"
            ),
            Failure::HostKeyUnknown => write!(f, "host key unknown (not in known_hosts)"),
            Failure::Missing => write!(f, "ri missing on the host (install it or use --push)"),
            Failure::OtherVersion(v) => write!(f, "ri of another version: {v} (use --push)"),
            Failure::Push(why) => write!(f, "push failed: {why}"),
            Failure::Remote(why) => write!(f, "{why}"),
        }
    }
}

/// Enters remote mode, for `--remote-child`.
pub fn enter_child(protocol: &str) -> Result<(), RemoteError> {
    child::enter(protocol)
}

/// Whether `args` (the whole command line) send the command to hosts.
fn has_hosts(args: &[OsString]) -> bool {
    args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "-H" || a.starts_with("-H") && !a.starts_with("--") || a.starts_with("--hosts")
    })
}

/// Takes `--by host` out of a fleet command line (ri merges by host itself;
/// no host evaluates it). Returns the rest and whether it was there.
pub fn take_by_host(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    if !has_hosts(&args) {
        return (args, false);
    }
    strip_by_host(args)
}

/// `args` without `--by host`, and whether it was there.
fn strip_by_host(args: Vec<OsString>) -> (Vec<OsString>, bool) {
    let mut out = Vec::with_capacity(args.len());
    let mut found = false;
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        if a == "--by" && it.peek().is_some_and(|n| n == "host") {
            it.next();
            found = true;
        } else if a == "--by=host" {
            found = true;
        } else {
            out.push(a);
        }
    }
    (out, found)
}

/// The command line without the fleet flags, as each host runs it.
pub fn forwarded(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if matches!(&*s, "-H" | "--hosts" | "--ssh-config" | "--fanout") {
            it.next();
        } else if s == "--push"
            || s.starts_with("--hosts=")
            || s.starts_with("--ssh-config=")
            || s.starts_with("--fanout=")
            || s.starts_with("-H") && !s.starts_with("--")
        {
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// How a command's output comes back from the hosts: streamed line by line
/// (probing commands) or one section per host; whether it is JSON; and for
/// `ri ctl COMMAND` without --yes, the command (confirmed before it
/// mutates).
fn shape(command: &crate::cli::Command) -> (bool, bool, Option<String>) {
    use crate::cli::Command;
    let streamed = matches!(
        command,
        Command::Trace(_)
            | Command::Count(_)
            | Command::Hist(_)
            | Command::Latency(_)
            | Command::Inflight(_)
            | Command::Leaks(_)
            | Command::Run(_)
    );
    let json = match command {
        Command::Trace(a) => a.json,
        Command::Count(a) => a.common.json,
        Command::Hist(a) => a.common.json,
        Command::Latency(a) => a.common.json,
        Command::Inflight(a) => a.common.json,
        Command::Leaks(a) => a.common.json,
        Command::Run(a) => a.json,
        _ => false,
    };
    let ctl_call = match command {
        Command::Ctl(a) => a.command.clone().filter(|_| !a.yes),
        _ => None,
    };
    (streamed, json, ctl_call)
}

/// Runs the parsed command line `cli` (from `args`) on every host it names.
pub fn run(cli: &crate::cli::Cli, args: Vec<OsString>, by_host: bool) -> ExitCode {
    use crate::cli::Command;
    let spec = cli.fleet.hosts.as_deref().unwrap_or_default();
    let hosts = match hosts::parse(spec) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ri: error: {e}");
            return ExitCode::from(2);
        }
    };
    let scope = match &cli.command {
        Command::Trace(a) => Some(&a.scope),
        Command::Count(a) => Some(&a.common.scope),
        Command::Hist(a) => Some(&a.common.scope),
        Command::Latency(a) => Some(&a.common.scope),
        Command::Inflight(a) => Some(&a.common.scope),
        Command::Leaks(a) => Some(&a.common.scope),
        Command::Run(a) => Some(&a.scope),
        _ => None,
    };
    if hosts.len() > cli.fleet.fanout as usize && scope.is_some_and(endless) {
        let e = RemoteError::Fanout {
            hosts: hosts.len(),
            fanout: cli.fleet.fanout,
        };
        eprintln!("ri: error: {e}");
        return ExitCode::from(2);
    }
    let (streamed, json, ctl_call) = shape(&cli.command);
    let plan = session::Plan {
        ssh: ssh::Ssh {
            config: cli.fleet.ssh_config.clone(),
            control_dir: ssh::control_dir(),
            push: cli.fleet.push,
        },
        args: forwarded(&args),
        streamed,
        json,
        by_host,
        fanout: cli.fleet.fanout as usize,
    };
    session::run(plan, &hosts, ctl_call)
}

/// Whether a probing command runs until interrupted: no --duration, no
/// `-c`, and processes chosen by name or none at all (`-p` alone ends when
/// they exit).
fn endless(scope: &crate::cli::ScopeArgs) -> bool {
    scope.duration.is_none()
        && scope.command.is_none()
        && (scope.pids.is_empty()
            || !scope.select.comms.is_empty()
            || !scope.select.exes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn fleet_flags_fit_every_command() {
        use clap::{CommandFactory as _, Parser as _};
        crate::cli::Cli::command().debug_assert();
        let cli =
            crate::cli::Cli::try_parse_from(["ri", "count", "u:x:f", "-H", "a,b", "--fanout", "3"])
                .unwrap();
        assert_eq!(cli.fleet.hosts.as_deref(), Some("a,b"));
        assert_eq!(cli.fleet.fanout, 3);
        let cli = crate::cli::Cli::try_parse_from([
            "ri",
            "--hosts=@inv:io",
            "--push",
            "ctl",
            "--discover",
        ])
        .unwrap();
        assert!(cli.fleet.push);
    }

    #[test]
    fn fleet_flags_are_not_forwarded() {
        let a = os(&[
            "ri",
            "-H",
            "a,b",
            "run",
            "motr.ops",
            "--push",
            "--fanout=3",
            "--json",
        ]);
        assert_eq!(forwarded(&a), os(&["run", "motr.ops", "--json"]));
        let (rest, by) = take_by_host(os(&["ri", "count", "-Ha", "--by", "host", "x"]));
        assert!(by);
        assert_eq!(rest, os(&["ri", "count", "-Ha", "x"]));
        let (_, by) = take_by_host(os(&["ri", "count", "--by", "host"]));
        assert!(!by);
    }
}
