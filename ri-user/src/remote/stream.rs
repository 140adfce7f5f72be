//! Remote ri's that keep printing (`ri top -H`'s frames): one ssh session
//! per host whose stdout lines come back as they are printed, kept alive by
//! the heartbeat, and ended (each remote ri detaching) when dropped.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader, Write as _},
    process::ChildStdin,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::Sender,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{Failure, FleetArgs, ssh};

/// What a host's session sends back.
#[derive(Debug)]
pub enum Event {
    /// One line its ri printed on stdout.
    Line(String),
    /// The session ended: cleanly (`None`), or why not.
    Ended(Option<Failure>),
}

/// How long the sessions get to end by themselves once their stdin is
/// closed, before their ssh clients are killed.
const GRACE: Duration = Duration::from_secs(3);

/// How long an ended session's stderr may take to close.
const ENDING: Duration = Duration::from_secs(1);

/// State the sessions share with [`Streams`].
struct Shared {
    ssh: ssh::Ssh,
    /// Each host's session stdin: closing it ends that remote ri.
    stdins: Mutex<Vec<Option<ChildStdin>>>,
    /// Each host's ssh client (its process group).
    groups: Mutex<Vec<Option<i32>>>,
    /// Sessions running, at most `fanout`.
    running: (Mutex<usize>, Condvar),
    fanout: usize,
    stopping: AtomicBool,
}

/// The running sessions; dropping them ends every remote ri.
pub struct Streams {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Streams {
    /// Runs ri's arguments `args` on every host of `hosts`, at most
    /// `--fanout` at once; each host's lines and end go to `tx`, tagged
    /// with its index.
    pub fn start(
        fleet: &FleetArgs,
        hosts: &[String],
        args: Vec<OsString>,
        tx: Sender<(usize, Event)>,
    ) -> Streams {
        let shared = Arc::new(Shared {
            ssh: ssh::Ssh {
                config: fleet.ssh_config.clone(),
                control_dir: ssh::control_dir(),
                push: fleet.push,
            },
            stdins: Mutex::new((0..hosts.len()).map(|_| None).collect()),
            groups: Mutex::new(vec![None; hosts.len()]),
            running: (Mutex::new(0), Condvar::new()),
            fanout: fleet.fanout as usize,
            stopping: AtomicBool::new(false),
        });
        let args = Arc::new(args);
        let mut threads: Vec<JoinHandle<()>> = (hosts.iter().enumerate())
            .map(|(i, host)| {
                let (shared, args, tx, host) =
                    (shared.clone(), args.clone(), tx.clone(), host.clone());
                std::thread::spawn(move || {
                    let end = shared.host(i, &host, &args, &tx);
                    let _ = tx.send((i, Event::Ended(end)));
                })
            })
            .collect();
        let beat = shared.clone();
        threads.push(std::thread::spawn(move || {
            while !beat.stopping.load(Ordering::Relaxed) {
                std::thread::sleep(super::child::HEARTBEAT);
                for s in beat.stdins.lock().unwrap().iter_mut().flatten() {
                    let _ = s.write(b"\n");
                }
            }
        }));
        Streams { shared, threads }
    }
}

impl Shared {
    /// One host's session (uploading ri first with `--push` when it is
    /// not cached there): what went wrong, if anything.
    fn host(
        &self,
        i: usize,
        host: &str,
        args: &[OsString],
        tx: &Sender<(usize, Event)>,
    ) -> Option<Failure> {
        let (count, ready) = (&self.running.0, &self.running.1);
        let mut n = count.lock().unwrap();
        while *n >= self.fanout && !self.stopping.load(Ordering::Relaxed) {
            n = ready.wait(n).unwrap();
        }
        *n += 1;
        drop(n);
        let mut end = self.session(i, host, args, tx);
        if let Err((code, err)) = &end
            && self.ssh.needs_upload(*code, err)
        {
            end = match self.ssh.upload(host) {
                Ok(()) => self.session(i, host, args, tx),
                Err(f) => Ok(Some(f)),
            };
        }
        *count.lock().unwrap() -= 1;
        ready.notify_one();
        end.unwrap_or_else(|(code, err)| ssh::classify(code, &err, false))
    }

    /// Runs one session to its end, sending its lines. `Err` is a session
    /// that printed nothing (exit status and stderr), to classify or retry.
    fn session(
        &self,
        i: usize,
        host: &str,
        args: &[OsString],
        tx: &Sender<(usize, Event)>,
    ) -> Result<Option<Failure>, (Option<i32>, String)> {
        if self.stopping.load(Ordering::Relaxed) {
            return Ok(Some(Failure::Remote("not started: stopped".into())));
        }
        let mut child = (self.ssh.session(host, args))
            .map_err(|e| (Some(255), format!("ssh: cannot run ssh: {e}")))?;
        if let Some(stdin) = child.stdin.take() {
            self.stdins.lock().unwrap()[i] = Some(stdin);
        }
        self.groups.lock().unwrap()[i] = Some(child.id() as i32);
        if self.stopping.load(Ordering::Relaxed) {
            self.stdins.lock().unwrap()[i] = None;
        }
        // Read on its own: a master connection started by this session
        // may keep the pipe open after the session ends.
        let stderr = child.stderr.take().expect("piped stderr");
        let err = Arc::new(Mutex::new(String::new()));
        let into = err.clone();
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = into.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut printed = false;
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        for line in out.lines().map_while(Result::ok) {
            printed = true;
            let _ = tx.send((i, Event::Line(line)));
        }
        let status = child.wait();
        self.stdins.lock().unwrap()[i] = None;
        self.groups.lock().unwrap()[i] = None;
        wait_for(&[err_thread], ENDING);
        let err = std::mem::take(&mut *err.lock().unwrap());
        let code = status.ok().and_then(|s| s.code());
        if !printed && code != Some(0) {
            return Err((code, err));
        }
        let remote = err.lines().any(|l| l == super::HELLO);
        Ok(ssh::classify(code, &err, remote))
    }
}

impl Drop for Streams {
    /// Closes every session's stdin (each remote ri detaches and ends),
    /// waits a little for them, then ends the ssh clients left.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.running.1.notify_all();
        for s in self.shared.stdins.lock().unwrap().iter_mut() {
            s.take();
        }
        wait_for(&self.threads, GRACE);
        for g in self.shared.groups.lock().unwrap().iter().flatten() {
            // SAFETY: signals the ssh clients' own process groups.
            unsafe { libc::kill(-g, libc::SIGTERM) };
        }
        // A thread still reading a pipe a master connection holds is left.
        wait_for(&self.threads, ENDING);
    }
}

/// Waits until every thread of `threads` has finished, at most `most`.
fn wait_for(threads: &[JoinHandle<()>], most: Duration) {
    let end = Instant::now() + most;
    while Instant::now() < end && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
}
