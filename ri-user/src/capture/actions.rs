//! What a fired trigger does: start or stop instruments, `ri report` and
//! `ri ctl` of the targets, a snapshot of every aggregation, and flight
//! recorder dumps; each recorded in the manifest with the files it wrote.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use serde_json::{Map, Value};

use super::{
    CaptureError,
    bundle::{ActionRecord, Firing, Stamp},
    hosts::{host_file, host_of},
    instrument::Kind,
    run::Session,
    trigger::Action,
};

/// The text of an action, as the manifest shows it.
fn describe(a: &Action) -> String {
    match a {
        Action::Start(n, None) => format!("start {n}"),
        Action::Start(n, Some(d)) => format!("start {n} for {}s", d.as_secs_f64()),
        Action::Stop(n) => format!("stop {n}"),
        Action::Report => "report".into(),
        Action::Ctl(w) => format!("ctl {}", w.join(" ")),
        Action::Snapshot => "snapshot".into(),
        Action::Dump(None) => "dump".into(),
        Action::Dump(Some(n)) => format!("dump {n}"),
    }
}

/// Runs ri itself with `args`; its stderr's last line when it fails.
fn ri(args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().last().unwrap_or("failed").to_string())
    }
}

impl Session {
    /// Fires trigger `k` (its condition's value `value`): runs its actions
    /// in order and records them.
    pub(super) fn fire(&mut self, k: usize, value: Option<f64>) -> Result<(), CaptureError> {
        let now = Instant::now();
        let n = self.manifest.fired.len() + 1;
        let tname = self.trigs[k].name.clone();
        let tag = format!("{n:03}-{tname}");
        crate::text::say(&format!(
            "ri: trigger {tname} fired at {:.1}s ({}{})",
            self.t(now),
            self.trigs[k].when,
            value.map_or(String::new(), |v| format!(": {v}"))
        ));
        let mut records = Vec::new();
        for a in self.trigs[k].spec.actions.clone() {
            let (result, files) = match self.act(&a, &tag, now) {
                Ok(files) => ("ok".to_string(), files),
                Err(e) => {
                    crate::text::say(&format!("ri: trigger {tname}: {}: {e}", describe(&a)));
                    (e, Vec::new())
                }
            };
            records.push(ActionRecord {
                action: describe(&a),
                result,
                files,
            });
        }
        let mut at = Stamp::now();
        at.mono_ns = self.mono(now);
        self.manifest.fired.push(Firing {
            trigger: tname,
            when: self.trigs[k].when.clone(),
            at,
            t: self.t(now),
            value,
            actions: records,
        });
        Ok(())
    }

    /// One action; the bundle files it wrote, or why it failed.
    fn act(&mut self, a: &Action, tag: &str, now: Instant) -> Result<Vec<String>, String> {
        let index = |n: &str| self.lives.iter().position(|l| l.inst.name == n);
        match a {
            Action::Start(n, d) => {
                let i = index(n).ok_or("no such instrument")?;
                self.start_instrument(i).map_err(|e| e.to_string())?;
                self.lives[i].stop_at = d.map(|d| now + d);
                Ok(Vec::new())
            }
            Action::Stop(n) => {
                let i = index(n).ok_or("no such instrument")?;
                self.stop_instrument(i);
                Ok(Vec::new())
            }
            Action::Report if !self.hosts.is_empty() => self.remote_report(tag),
            Action::Report => {
                let mut files = Vec::new();
                let mut errors = Vec::new();
                for &pid in &self.pids {
                    let rel = format!("reports/{tag}.{pid}.json");
                    let path = self.writer.dir.join(&rel);
                    let _ = std::fs::create_dir_all(self.writer.dir.join("reports"));
                    let args = vec![
                        "report".into(),
                        pid.to_string(),
                        "--json".into(),
                        "-o".into(),
                        path.display().to_string(),
                    ];
                    match ri(&args) {
                        Ok(()) => files.push(rel),
                        Err(e) => errors.push(format!("pid {pid}: {e}")),
                    }
                }
                if self.pids.is_empty() {
                    errors.push("no target process to report on".into());
                }
                match errors.is_empty() {
                    true => Ok(files),
                    false => Err(errors.join("; ")),
                }
            }
            Action::Ctl(words) if !self.hosts.is_empty() => self.remote_ctl(words, tag),
            Action::Ctl(words) => self.ctl(words, tag),
            Action::Snapshot => {
                let mut all = Map::new();
                for l in &self.lives {
                    if l.inst.kind != Kind::Aggregation {
                        continue;
                    }
                    if !self.hosts.is_empty() {
                        let by_host = l.host_prints.clone().into_iter().collect();
                        all.insert(l.inst.name.clone(), Value::Object(by_host));
                    } else if let Some(p) = &l.last_print {
                        all.insert(l.inst.name.clone(), p.clone());
                    }
                }
                let rel = format!("triggered/{tag}.snapshot.json");
                let json =
                    serde_json::to_vec_pretty(&Value::Object(all)).map_err(|e| e.to_string())?;
                self.writer.file(&rel, &json).map_err(|e| e.to_string())?;
                Ok(vec![rel])
            }
            Action::Dump(which) => {
                let mut files = Vec::new();
                for i in 0..self.lives.len() {
                    let l = &mut self.lives[i];
                    if which.as_ref().is_some_and(|w| *w != l.inst.name) {
                        continue;
                    }
                    let Some(r) = l.recorder.as_mut() else {
                        if which.is_some() {
                            return Err(format!("{} has no flight_recorder", l.inst.name));
                        }
                        continue;
                    };
                    let dir = match l.inst.kind {
                        Kind::Trace => "events",
                        Kind::Aggregation => "snapshots",
                    };
                    let rel = format!("flight/{tag}/{dir}/{}.jsonl.zst", l.inst.name);
                    let lines: Vec<String> = r.window(now).map(|(_, s)| s.clone()).collect();
                    let fleet = !self.hosts.is_empty();
                    let mut written = Vec::new();
                    for s in &lines {
                        let host = match fleet {
                            true => serde_json::from_str::<Value>(s)
                                .ok()
                                .and_then(|v| host_of(&v)),
                            false => None,
                        };
                        let f = host_file(host.as_deref(), &rel);
                        self.writer.line(&f, s).map_err(|e| e.to_string())?;
                        if !written.contains(&f) {
                            written.push(f);
                        }
                    }
                    if written.is_empty() {
                        // An empty window is a file too: the dump happened.
                        let empty = zstd::encode_all(&[][..], 3).map_err(|e| e.to_string())?;
                        self.writer.file(&rel, &empty).map_err(|e| e.to_string())?;
                        written.push(rel);
                    }
                    for f in written {
                        self.writer.close(&f).map_err(|e| e.to_string())?;
                        self.lives[i].info.files.push(f.clone());
                        files.push(f);
                    }
                }
                Ok(files)
            }
        }
    }

    /// `ri report` of the targets on every host (at once): each process's
    /// report in its host's part.
    fn remote_report(&mut self, tag: &str) -> Result<Vec<String>, String> {
        let mut args = vec!["report".to_string()];
        args.extend(super::targets::select_flags(&self.targets));
        args.push("--json".into());
        let outs = self.on_hosts(&args);
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (host, out) in outs {
            match out {
                Ok(o) => {
                    for d in super::targets::documents(&o) {
                        let pid = d["pid"].as_u64().unwrap_or(0);
                        let rel = host_file(Some(&host), &format!("reports/{tag}.{pid}.json"));
                        let json = serde_json::to_vec_pretty(&d).map_err(|e| e.to_string())?;
                        self.writer.file(&rel, &json).map_err(|e| e.to_string())?;
                        files.push(rel);
                    }
                }
                Err(e) => errors.push(format!("{host}: {e}")),
            }
        }
        match errors.is_empty() {
            true => Ok(files),
            false => Err(errors.join("; ")),
        }
    }

    /// `ri ctl COMMAND ARGS` of the targets on every host (at once), with
    /// `--yes` only when the file allows mutations.
    fn remote_ctl(&mut self, words: &[String], tag: &str) -> Result<Vec<String>, String> {
        let mut args = vec!["ctl".to_string()];
        args.extend(super::targets::select_flags(&self.targets));
        args.push("--json".into());
        if self.file.allow_mutations {
            args.push("--yes".into());
        }
        args.extend(words.iter().cloned());
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (host, out) in self.on_hosts(&args) {
            match out {
                Ok(o) => {
                    let rel = host_file(Some(&host), &format!("ctl/{tag}.{}.json", words[0]));
                    self.writer.file(&rel, &o).map_err(|e| e.to_string())?;
                    files.push(rel);
                }
                Err(e) if e.contains("--yes") && !self.file.allow_mutations => errors.push(format!(
                    "{host}: '{}' changes the target: the session file needs allow_mutations = true",
                    words[0]
                )),
                Err(e) => errors.push(format!("{host}: {e}")),
            }
        }
        match errors.is_empty() {
            true => Ok(files),
            false => Err(errors.join("; ")),
        }
    }

    /// `ri -H HOST ARGS` on every host at once; each host's output.
    fn on_hosts(&self, args: &[String]) -> Vec<(String, Result<Vec<u8>, String>)> {
        let ssh = &self.ssh;
        std::thread::scope(|s| {
            let running: Vec<_> = self
                .hosts
                .iter()
                .map(|h| {
                    (
                        h.clone(),
                        s.spawn(move || super::targets::on_host(h, ssh, args)),
                    )
                })
                .collect();
            running
                .into_iter()
                .map(|(h, r)| (h, r.join().unwrap_or_else(|_| Err("panicked".into()))))
                .collect()
        })
    }

    /// `ctl COMMAND ARGS` on every target: read-only commands always;
    /// mutating ones only with `allow_mutations = true` (then confirmed
    /// with `--yes`; the target still audits them).
    fn ctl(&mut self, words: &[String], tag: &str) -> Result<Vec<String>, String> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for &pid in &self.pids {
            let rel = format!("ctl/{tag}.{pid}.{}.json", words[0]);
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(exe);
            cmd.args(["ctl", "-p", &pid.to_string(), "--json"]);
            if self.file.allow_mutations {
                cmd.arg("--yes");
            }
            let out = cmd
                .args(words)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                self.writer
                    .file(&rel, &out.stdout)
                    .map_err(|e| e.to_string())?;
                files.push(rel);
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err.lines().last().unwrap_or("failed");
                errors.push(if last.contains("--yes") && !self.file.allow_mutations {
                    format!(
                        "pid {pid}: '{}' changes the target: the session file needs allow_mutations = true",
                        words[0]
                    )
                } else {
                    format!("pid {pid}: {last}")
                });
            }
        }
        match errors.is_empty() {
            true => Ok(files),
            false => Err(errors.join("; ")),
        }
    }
}
