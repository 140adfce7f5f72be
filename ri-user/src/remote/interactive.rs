//! Hosts for an interactive command (`ri shell -H`): one ssh master
//! connection per host opened when it starts and closed when it ends, and
//! one command line at a time run on every host through them.

use std::{
    ffi::OsString,
    io::Read as _,
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use super::{FleetArgs, HostCompletion, HostJob, JobError, RemoteError, hosts, session, ssh};
use crate::cli::Command;

/// Hosts kept connected; dropping it closes the connections.
pub struct Fleet {
    hosts: Vec<String>,
    ssh: ssh::Ssh,
    fanout: usize,
    /// This fleet's own socket folder (removed on drop).
    dir: PathBuf,
    /// Each host's master connection (`None`: it could not start).
    masters: Vec<Option<Child>>,
}

/// How long a master connection may take to come up.
const CONNECT: Duration = Duration::from_secs(20);

impl Fleet {
    /// Connects to every host `args` names; a host that cannot be reached
    /// is named on stderr (its commands then fail, each saying why).
    pub fn open(args: &FleetArgs) -> Result<Fleet, RemoteError> {
        let hosts = hosts::parse(args.hosts.as_deref().unwrap_or_default())?;
        // A folder of its own: its masters are this shell's, and closing
        // them cannot end another ri's.
        let dir = ssh::control_dir().join(format!("shell-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut fleet = Fleet {
            ssh: ssh::Ssh {
                config: args.ssh_config.clone(),
                control_dir: dir.clone(),
                push: args.push,
            },
            fanout: args.fanout as usize,
            dir,
            masters: Vec::new(),
            hosts,
        };
        // Started from this thread: they end when it does (the whole ri).
        fleet.masters = (fleet.hosts.iter())
            .map(|h| match fleet.ssh.spawn_master(h) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("ri: {h}: failed: cannot run ssh: {e}");
                    None
                }
            })
            .collect();
        fleet.wait_ready();
        Ok(fleet)
    }

    /// Waits until every master is up, or has ended (named on stderr with
    /// why), or [`CONNECT`] has passed.
    fn wait_ready(&mut self) {
        let end = Instant::now() + CONNECT;
        let mut pending: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| self.masters[i].is_some())
            .collect();
        while !pending.is_empty() {
            pending.retain(|&i| {
                let host = &self.hosts[i];
                let Some(child) = self.masters[i].as_mut() else {
                    return false;
                };
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    let why = ssh::classify(status.code(), &err, false)
                        .map_or_else(|| "the connection closed".to_string(), |f| f.to_string());
                    eprintln!("ri: {host}: failed: {why}");
                    self.masters[i] = None;
                    return false;
                }
                !self.ssh.master_ready(host)
            });
            if Instant::now() > end {
                for &i in &pending {
                    eprintln!(
                        "ri: {}: no connection after {} s (its commands connect on their own)",
                        self.hosts[i],
                        CONNECT.as_secs()
                    );
                }
                break;
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The hosts, in order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Starts ri's arguments `args` (`run PACK.INSTRUMENT ...`) in the
    /// background on every host (see [`HostJob`]).
    pub fn start_job(&self, args: &[String]) -> Result<HostJob, JobError> {
        HostJob::start(&self.ssh, &self.hosts, args)
    }

    /// Completion from the hosts' processes that `targets` (ri's flags) name.
    pub fn completion(&self, targets: Vec<String>) -> HostCompletion {
        HostCompletion::new(self.ssh.clone(), self.hosts.clone(), targets)
    }

    /// Runs ri's arguments `words` (parsed as `command`) on every host, as
    /// `ri -H` runs a command line; false when a host failed.
    pub fn run(&self, words: &[String], command: &Command) -> bool {
        let args: Vec<OsString> = words.iter().map(OsString::from).collect();
        let (args, by_host) = super::strip_by_host(args);
        let (streamed, json, ctl_call) = super::shape(command);
        let plan = session::Plan {
            ssh: self.ssh.clone(),
            args,
            streamed,
            json,
            by_host,
            fanout: self.fanout,
        };
        session::run_one(plan, &self.hosts, ctl_call) == std::process::ExitCode::SUCCESS
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (h, m) in self.hosts.iter().zip(&mut self.masters) {
            let Some(child) = m.as_mut() else { continue };
            self.ssh.close_master(h);
            let end = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
