//! A `-c` command started before its probes are attached, because one
//! probe's library is found nowhere until the command maps it (a `dlopen`
//! by a path outside the loader's search): ri waits for the mapping.

use std::{path::PathBuf, sync::Mutex};

use nix::{
    sys::wait::{WaitPidFlag, WaitStatus, waitpid},
    unistd::Pid,
};

use super::child::HeldChild;
use crate::{
    Error,
    target::{self, SignalWait, TargetError},
};

/// The command started early; `launch` takes it instead of forking another.
static STARTED: Mutex<Option<HeldChild>> = Mutex::new(None);

/// Starts CMD now (once) and waits until it maps a file named `name`; an
/// error when it ends first.
pub fn wait_for(cmd: &str, name: &str) -> Result<PathBuf, Error> {
    let mut slot = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let pid = match slot.as_ref() {
        Some(c) => c.pid,
        None => {
            let mut c = HeldChild::spawn(cmd)?;
            c.release()?;
            let pid = c.pid;
            *slot = Some(c);
            pid
        }
    };
    // Held back after the fork (the command must not inherit the mask) and
    // before the line that tells the user to press Ctrl-C.
    let signals = SignalWait::new();
    crate::text::say(&format!(
        "ri: waiting for {name}: '{cmd}' (pid {pid}) runs until it maps it, its calls before the attach unseen (Ctrl-C ends the wait)"
    ));
    loop {
        if signals.pause() {
            if let Some(c) = slot.take() {
                c.abort();
            }
            return Err(TargetError::Interrupted(name.to_string()).into());
        }
        let ended = !matches!(
            waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        let found = target::mapped_files(pid)
            .ok()
            .and_then(|files| files.into_iter().find(|f| target::named(f, name)));
        match found {
            Some(f) if !ended => {
                eprintln!("ri: pid {pid} mapped {}", f.display());
                return Ok(f);
            }
            _ if ended => {
                slot.take();
                return Err(TargetError::EndedWaiting {
                    name: name.to_string(),
                    pid,
                }
                .into());
            }
            _ => {}
        }
    }
}

/// The command started by [`wait_for`], if any.
pub fn take() -> Option<HeldChild> {
    STARTED.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Kills and reaps a command started by [`wait_for`] that no attach took
/// (an error after the wait, before probes were attached).
pub fn abort() {
    if let Some(c) = take() {
        c.abort();
    }
}
