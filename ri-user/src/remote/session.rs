//! One ssh session per host, at most `--fanout` at once: lines tagged with
//! their host, aggregations merged, failures named at the end, and Ctrl-C
//! (or this ri's death) ending every remote ri through its stdin.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader, IsTerminal, Write},
    process::{ChildStdin, ExitCode},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use serde_json::{Value as Json, json};

use super::{Failure, RemoteError, merge::Merged, ssh};

/// What to run and how to show it.
pub struct Plan {
    /// How to reach the hosts.
    pub ssh: ssh::Ssh,
    /// The command line each host runs.
    pub args: Vec<OsString>,
    /// Print lines as they come (trace, aggregations), not one section per host.
    pub streamed: bool,
    /// The user asked for JSON.
    pub json: bool,
    /// `--by host`.
    pub by_host: bool,
    /// Sessions at once.
    pub fanout: usize,
}

/// State shared by the sessions.
struct Shared {
    plan: Plan,
    merged: Mutex<Merged>,
    /// Each running session's stdin: closing it ends that remote ri.
    stdins: Mutex<Vec<Option<ChildStdin>>>,
    /// Process groups of the running ssh clients.
    groups: Mutex<Vec<i32>>,
    stopping: AtomicBool,
    /// The run is over: its helper threads end.
    done: AtomicBool,
}

/// How one host's session ended.
struct Outcome {
    failure: Option<Failure>,
    stdout: String,
    /// Processes a mutation was held back for, to confirm.
    pending: Vec<Pending>,
}

/// Runs `plan` on `hosts`; for `ri ctl COMMAND` without --yes (`ctl_call`),
/// hosts whose command turns out to mutate are listed and confirmed first.
pub fn run(plan: Plan, hosts: &[String], ctl_call: Option<String>) -> ExitCode {
    let shared = Shared::new(plan);
    watch_signals(shared.clone());
    heartbeat(shared.clone());
    run_shared(&shared, hosts, ctl_call)
}

/// `run` for one command of a process that goes on afterwards (`ri shell
/// -H`): Ctrl-C (SIGINT, which the process otherwise ignores) stops this
/// command's sessions, and nothing of the run is left when it returns.
pub fn run_one(plan: Plan, hosts: &[String], ctl_call: Option<String>) -> ExitCode {
    let shared = Shared::new(plan);
    heartbeat(shared.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut int) = signal(SignalKind::interrupt()) else {
                    return;
                };
                let _ = ready_tx.send(());
                tokio::pin!(stop_rx);
                loop {
                    tokio::select! {
                        _ = int.recv() => interrupt(&shared),
                        _ = &mut stop_rx => break,
                    }
                }
            });
        })
    };
    let _ = ready_rx.recv();
    let code = run_shared(&shared, hosts, ctl_call);
    shared.done.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(());
    let _ = watcher.join();
    code
}

impl Shared {
    fn new(plan: Plan) -> Arc<Shared> {
        Arc::new(Shared {
            merged: Mutex::new(Merged::new(plan.by_host)),
            stdins: Mutex::new(Vec::new()),
            groups: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            done: AtomicBool::new(false),
            plan,
        })
    }
}

/// Runs the sessions of `shared`'s plan to their end; the exit status.
fn run_shared(shared: &Arc<Shared>, hosts: &[String], ctl_call: Option<String>) -> ExitCode {
    let mut outcomes = fan_out(shared, hosts, &shared.plan.args);
    if let Some(command) = ctl_call {
        let targets: Vec<usize> = (0..hosts.len())
            .filter(|&i| !outcomes[i].pending.is_empty())
            .collect();
        if !targets.is_empty() {
            let names: Vec<String> = targets.iter().map(|&i| hosts[i].clone()).collect();
            let touched: Vec<(&str, &Pending)> = targets
                .iter()
                .flat_map(|&i| {
                    outcomes[i]
                        .pending
                        .iter()
                        .map(move |p| (hosts[i].as_str(), p))
                })
                .collect();
            if let Err(e) = confirm(&command, &touched, names.len()) {
                eprintln!("ri: error: {e}");
                return ExitCode::from(2);
            }
            let mut args = shared.plan.args.clone();
            let at = args.iter().position(|a| a == "ctl").map_or(0, |p| p + 1);
            args.insert(at, "--yes".into());
            let again = fan_out(shared, &names, &args);
            for (i, o) in targets.into_iter().zip(again) {
                outcomes[i] = o;
            }
        }
    }
    finish(shared, hosts, outcomes)
}

/// Prints what is left (sections, the merged aggregation) and one line per
/// failed host; the exit status.
fn finish(shared: &Shared, hosts: &[String], outcomes: Vec<Outcome>) -> ExitCode {
    let plan = &shared.plan;
    let mut out = std::io::stdout().lock();
    if !plan.streamed {
        for (host, o) in hosts.iter().zip(&outcomes) {
            if o.failure.is_some() && o.stdout.is_empty() {
                continue;
            }
            let _ = section(&mut out, host, &o.stdout);
        }
    }
    let merged = shared.merged.lock().unwrap();
    if !merged.is_empty() {
        let _ = if plan.json {
            writeln!(out, "{}", merged.json(hosts))
        } else {
            merged.text(&mut out)
        };
    }
    let _ = out.flush();
    let mut failed = 0;
    for (host, o) in hosts.iter().zip(&outcomes) {
        if let Some(f) = &o.failure {
            eprintln!("ri: {host}: failed: {f}");
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("ri: {failed} of {} hosts failed", hosts.len());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One host's whole output: a JSON object gains `host`, text goes under a
/// `== HOST ==` header.
fn section(w: &mut impl Write, host: &str, stdout: &str) -> std::io::Result<()> {
    // One JSON object per line (one per process with --comm/--exe).
    let lines: Option<Vec<serde_json::Map<String, Json>>> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Json>(l) {
            Ok(Json::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    match serde_json::from_str::<Json>(stdout) {
        Ok(Json::Object(m)) => writeln!(w, "{}", with_host(host, m)),
        Ok(v) => writeln!(w, "{}", json!({"host": host, "output": v})),
        Err(_) if lines.as_ref().is_some_and(|l| !l.is_empty()) => {
            for m in lines.into_iter().flatten() {
                writeln!(w, "{}", with_host(host, m))?;
            }
            Ok(())
        }
        Err(_) => {
            writeln!(w, "== {host} ==")?;
            write!(w, "{stdout}")?;
            if !stdout.ends_with('\n') && !stdout.is_empty() {
                writeln!(w)?;
            }
            Ok(())
        }
    }
}

/// A print of `host` with `host` as its first member, and as the first
/// column of each of its rows (in flight, leaks).
pub(super) fn tagged(host: &str, mut m: serde_json::Map<String, Json>) -> Json {
    if let Some(Json::Array(rows)) = m.get_mut("entries") {
        for r in rows.iter_mut() {
            if let Json::Object(e) = r {
                *e = host_first(host, std::mem::take(e));
            }
        }
    }
    with_host(host, m)
}

/// `m` with `host` as its first member.
fn with_host(host: &str, m: serde_json::Map<String, Json>) -> Json {
    Json::Object(host_first(host, m))
}

/// `m` with `host` as its first member, as a map.
fn host_first(host: &str, m: serde_json::Map<String, Json>) -> serde_json::Map<String, Json> {
    let mut o = serde_json::Map::new();
    o.insert("host".into(), json!(host));
    o.extend(m);
    o
}

/// Lists every process a mutation would touch, host by host, and asks for
/// a typed `yes`.
fn confirm(command: &str, touched: &[(&str, &Pending)], hosts: usize) -> Result<(), RemoteError> {
    let what = format!(
        "'{command}' changes the target: {} {} on {hosts} {}",
        touched.len(),
        if touched.len() == 1 {
            "process"
        } else {
            "processes"
        },
        if hosts == 1 { "host" } else { "hosts" }
    );
    eprintln!("ri: {what}:");
    for (host, p) in touched {
        eprintln!("  {host}: pid {} ({})", p.pid, p.comm);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(RemoteError::NotConfirmed(format!(
            "{what}: add --yes to run it (stdin is not a terminal to ask on)"
        )));
    }
    eprint!(
        "Type 'yes' to run '{command}' on these {} processes: ",
        touched.len()
    );
    let mut answer = String::new();
    let _ = stdin.read_line(&mut answer);
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(RemoteError::NotConfirmed(
            "not confirmed: nothing was run".into(),
        ))
    }
}

/// A process a held-back mutation would touch, as its host named it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    pid: i64,
    comm: String,
}

/// The processes a remote ri held a mutation back for (its
/// [`super::CONFIRM`] lines).
fn pending(stderr: &str) -> Vec<Pending> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(super::CONFIRM)?.trim().parse::<Json>().ok())
        .map(|v| Pending {
            pid: v["pid"].as_i64().unwrap_or(-1),
            comm: v["comm"].as_str().unwrap_or("?").to_string(),
        })
        .collect()
}

/// Runs `args` on every host, `fanout` at a time; outcomes in host order.
fn fan_out(shared: &Arc<Shared>, hosts: &[String], args: &[OsString]) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..hosts.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..shared.plan.fanout.min(hosts.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(host) = hosts.get(i) else { break };
                    let o = if shared.stopping.load(Ordering::Relaxed) {
                        Outcome {
                            failure: Some(Failure::Remote("not started: interrupted".into())),
                            stdout: String::new(),
                            pending: Vec::new(),
                        }
                    } else {
                        host_session(shared, host, args)
                    };
                    results.lock().unwrap()[i] = Some(o);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect()
}

/// One host: the session, plus the upload and a second try with --push.
fn host_session(shared: &Shared, host: &str, args: &[OsString]) -> Outcome {
    let ssh = &shared.plan.ssh;
    let first = session(shared, host, args);
    match first {
        Err((code, err)) if ssh.needs_upload(code, &err) => match ssh.upload(host) {
            Ok(()) => session(shared, host, args).unwrap_or_else(|(code, err)| failed(code, &err)),
            Err(f) => Outcome {
                failure: Some(f),
                stdout: String::new(),
                pending: Vec::new(),
            },
        },
        Err((code, err)) => failed(code, &err),
        Ok(o) => o,
    }
}

fn failed(code: Option<i32>, err: &str) -> Outcome {
    Outcome {
        failure: ssh::classify(code, err, false),
        stdout: String::new(),
        pending: pending(err),
    }
}

/// Runs one ssh session to its end. `Err` is a session that printed nothing
/// on stdout (exit status and stderr), to classify or retry.
fn session(
    shared: &Shared,
    host: &str,
    args: &[OsString],
) -> Result<Outcome, (Option<i32>, String)> {
    let plan = &shared.plan;
    let mut child = plan
        .ssh
        .session(host, args)
        .map_err(|e| (Some(255), format!("ssh: cannot run ssh: {e}")))?;
    let stdin = child.stdin.take();
    let slot = {
        let mut s = shared.stdins.lock().unwrap();
        s.push(stdin);
        shared.groups.lock().unwrap().push(child.id() as i32);
        s.len() - 1
    };
    if shared.stopping.load(Ordering::Relaxed) {
        shared.stdins.lock().unwrap()[slot] = None;
    }
    let stderr = child.stderr.take().expect("piped stderr");
    let tag = host.to_string();
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        let mut remote = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line == super::HELLO {
                remote = true;
                continue;
            }
            if remote && !line.starts_with("ri: error: ") && !line.starts_with(super::CONFIRM) {
                eprintln!("{tag}: {line}");
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stdout = String::new();
    let mut printed = false;
    let reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    for line in reader.lines().map_while(Result::ok) {
        printed = true;
        if plan.streamed {
            stream_line(shared, host, &line);
        } else {
            stdout.push_str(&line);
            stdout.push('\n');
        }
    }
    let status = child.wait();
    shared.stdins.lock().unwrap()[slot] = None;
    let err = err_thread.join().unwrap_or_default();
    let code = status.ok().and_then(|s| s.code());
    if !printed && code != Some(0) {
        return Err((code, err));
    }
    Ok(Outcome {
        failure: ssh::classify(code, &err, true),
        stdout,
        pending: pending(&err),
    })
}

/// One line of a streamed command: an aggregation's final print goes to
/// the merge; other JSON gains `host`; text gets a `HOST: ` prefix.
fn stream_line(shared: &Shared, host: &str, line: &str) {
    let doc = serde_json::from_str::<Json>(line).ok();
    let text = match doc {
        Some(Json::Object(m)) => {
            let doc = Json::Object(m);
            if Merged::mergeable(&doc) {
                if doc["type"] == "final" {
                    shared.merged.lock().unwrap().add(host, &doc);
                    return;
                }
                let mut one = Merged::new(false);
                one.add(host, &doc);
                if !shared.plan.json {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "--- interval {host}");
                    let _ = one.text(&mut out);
                    return;
                }
                let Json::Object(m) = one.json(&[host.into()]) else {
                    return;
                };
                with_host(host, m)
                    .to_string()
                    .replace("\"final\"", "\"interval\"")
            } else {
                let Json::Object(m) = doc else { return };
                tagged(host, m).to_string()
            }
        }
        _ => format!("{host}: {line}"),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Writes a line to every running session every 250 ms: a remote ri that
/// hears nothing for 2 s ends (the connection dropped silently).
fn heartbeat(shared: Arc<Shared>) {
    std::thread::spawn(move || {
        while !shared.done.load(Ordering::Relaxed) {
            std::thread::sleep(super::child::HEARTBEAT);
            for s in shared.stdins.lock().unwrap().iter_mut().flatten() {
                let _ = s.write(b"\n");
            }
        }
    });
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread and waits for them in
/// one: the first closes every session's stdin (each remote ri then prints
/// its totals and ends), the second ends the ssh clients.
fn watch_signals(shared: Arc<Shared>) {
    // SAFETY: signal mask calls on plain local sets.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: waits on the set blocked above.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                interrupt(&shared);
            }
        }
    });
}

/// The first call closes every session's stdin (each remote ri then prints
/// its totals and ends), the next ones end the ssh clients.
fn interrupt(shared: &Shared) {
    if shared.stopping.swap(true, Ordering::Relaxed) {
        for g in shared.groups.lock().unwrap().iter() {
            // SAFETY: signals the ssh clients' own process groups.
            unsafe { libc::kill(-g, libc::SIGTERM) };
        }
    }
    for s in shared.stdins.lock().unwrap().iter_mut() {
        s.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_name_their_host() {
        let mut out = Vec::new();
        section(&mut out, "n1", "{\"pid\": 3}").unwrap();
        section(&mut out, "n2", "text\n").unwrap();
        section(&mut out, "n3", "{\"pid\":4}\n{\"pid\":5}\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"host\":\"n1\",\"pid\":3}\n== n2 ==\ntext\n\
             {\"host\":\"n3\",\"pid\":4}\n{\"host\":\"n3\",\"pid\":5}\n"
        );
    }

    #[test]
    fn held_back_mutations_name_their_processes() {
        let err = "ri-remote 1/x\nri-remote-confirm {\"pid\":7,\"comm\":\"m0d\",\"command\":\"reqh.pause\"}\nri: pid 9 (m0d): gone\n";
        assert_eq!(
            pending(err),
            [Pending {
                pid: 7,
                comm: "m0d".into()
            }]
        );
    }
}
