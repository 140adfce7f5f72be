//! Completion from the hosts' own targets (`ri shell -H`): the text before
//! the cursor goes to a host's ri (`ri shell --complete=TEXT`) through the
//! kept connection, which answers from its own processes' files; a short
//! timeout, and answers kept for the shell's life.

use std::{
    cell::RefCell,
    collections::HashMap,
    ffi::OsString,
    io::{Read as _, Write as _},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value as Json;

use super::ssh;

/// How long the hosts may take to answer one Tab, together.
const ANSWER: Duration = Duration::from_secs(5);

/// Candidates: where the replaced part starts, and the replacements.
pub type Candidates = (usize, Vec<String>);

/// Asks the hosts for completions.
pub struct HostCompletion {
    ssh: ssh::Ssh,
    hosts: Vec<String>,
    /// The shell's processes as ri's flags (`--comm m0d`).
    targets: Vec<String>,
    /// Answers by the text they complete.
    cache: RefCell<HashMap<String, Candidates>>,
}

impl HostCompletion {
    /// Completion from `hosts`' processes that `targets` (ri's flags) name.
    pub fn new(ssh: ssh::Ssh, hosts: Vec<String>, targets: Vec<String>) -> HostCompletion {
        HostCompletion {
            ssh,
            hosts,
            targets,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The candidates for `before` (the line up to the cursor) from the
    /// first host that answers within [`ANSWER`]; `None` when none did.
    pub fn candidates(&self, before: &str) -> Option<Candidates> {
        if let Some(c) = self.cache.borrow().get(before) {
            return Some(c.clone());
        }
        let until = Instant::now() + ANSWER;
        let got = (self.hosts.iter())
            .take_while(|_| Instant::now() < until)
            .find_map(|h| self.ask(h, before, until))?;
        self.cache
            .borrow_mut()
            .insert(before.to_string(), got.clone());
        Some(got)
    }

    /// Runs `ri shell --complete` on `host`, its stdin fed a heartbeat
    /// until it answers or `until` passes.
    fn ask(&self, host: &str, before: &str, until: Instant) -> Option<Candidates> {
        let mut args: Vec<OsString> = vec!["shell".into(), format!("--complete={before}").into()];
        args.extend(self.targets.iter().map(OsString::from));
        let mut child = self.ssh.session(host, &args).ok()?;
        let mut stdin = child.stdin.take();
        let (mut stdout, mut stderr) = (child.stdout.take()?, child.stderr.take()?);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let text = loop {
            match rx.recv_timeout(super::child::HEARTBEAT) {
                Ok(t) => break Some(t),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < until => {
                    if let Some(i) = stdin.as_mut() {
                        let _ = i.write(b"\n");
                    }
                }
                Err(_) => break None,
            }
        };
        drop(stdin);
        if text.is_none() {
            // SAFETY: signals this call's own ssh client's process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
        }
        let _ = child.wait();
        parse(&text?, before)
    }
}

/// The answer `{"start": N, "candidates": [...]}`, checked against `before`.
fn parse(text: &str, before: &str) -> Option<Candidates> {
    let doc: Json = serde_json::from_str(text.trim()).ok()?;
    let start = usize::try_from(doc["start"].as_u64()?).ok()?;
    if !before.is_char_boundary(start) {
        return None;
    }
    let names = (doc["candidates"].as_array()?.iter())
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    Some((start, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let before = "count u:m0d:m0_fom_qu";
        assert_eq!(
            parse(r#"{"start": 12, "candidates": ["m0_fom_queue"]}"#, before),
            Some((12, vec!["m0_fom_queue".to_string()]))
        );
        assert_eq!(parse(r#"{"start": 99, "candidates": []}"#, before), None);
        assert_eq!(parse("ri: error: no process", before), None);
    }
}
