//! "Nodes" on this machine for the fleet tests: each one a network and pid
//! namespace (with its own /proc) behind a veth pair at 198.18.N.2, running
//! its own OpenSSH server (throwaway host key, key-only root login), its
//! own copy of m0d and its own m0client load. Everything ends in `Drop`.

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{fixture, ri_bin};

/// One fleet at a time in a test binary (the addresses are fixed per run).
static ONE: Mutex<()> = Mutex::new(());

/// Loads started: each works on objects of its own.
static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The machine's sshd.
const SSHD: &str = "/usr/sbin/sshd";

/// A set of nodes, with the ssh client configuration that reaches them.
pub struct Fleet {
    /// The nodes, `n1`, `n2`, ...
    pub nodes: Vec<Node>,
    /// Client ssh config (`--ssh-config`).
    pub ssh_config: PathBuf,
    /// Client known_hosts.
    pub known_hosts: PathBuf,
    dir: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

/// One node.
pub struct Node {
    /// Its ssh name (`n1`...).
    pub name: String,
    /// Its directory: bin/ (m0d, ri), home/, ctl/, logs.
    pub dir: PathBuf,
    /// Its address.
    pub addr: String,
    /// The namespace holder (`unshare`), and the pid of the node's init.
    holder: Child,
    /// The node's init (root-namespace pid).
    pub init: i32,
    sshd: Option<Child>,
    veth: String,
    m0d: Option<Child>,
    loads: Vec<Child>,
    /// m0d's endpoint inside the node, once started.
    pub endpoint: Option<String>,
    /// m0d's control socket, once started.
    pub socket: Option<PathBuf>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The first child of `pid` (waits up to 5 s for it).
fn child_of(pid: u32) -> i32 {
    let t = Instant::now();
    loop {
        let path = format!("/proc/{pid}/task/{pid}/children");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(c) = text.split_whitespace().next() {
            return c.parse().expect("pid");
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no child of {pid}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Fleet {
    /// Builds `n` nodes with sshd running (m0d not started yet).
    pub fn new(n: usize) -> Fleet {
        crate::require_bpf();
        let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run `cargo xtask setup` (installs openssh-server)"
        );
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("ri-fleet.")
            .tempdir()
            .expect("temporary directory");
        let key = dir.path().join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ri-fleet", "-f"])
            .arg(&key));
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let base = 1 + (std::process::id() % 48) * 5;
        let mut fleet = Fleet {
            nodes: Vec::new(),
            ssh_config: dir.path().join("ssh_config"),
            known_hosts: dir.path().join("known_hosts"),
            dir,
            _one: one,
        };
        let mut config = String::new();
        let mut known = String::new();
        for i in 0..n {
            let node = Node::start(fleet.dir.path(), i + 1, base as usize + i, &pubkey);
            config.push_str(&format!(
                "Host {}\n  HostName {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
                 PasswordAuthentication no\n  LogLevel ERROR\n\n",
                node.name,
                node.addr,
                key.display(),
                fleet.known_hosts.display()
            ));
            known.push_str(&format!("{} {}", node.addr, node.host_key()));
            fleet.nodes.push(node);
        }
        std::fs::write(&fleet.ssh_config, config).unwrap();
        std::fs::write(&fleet.known_hosts, known).unwrap();
        for n in &fleet.nodes {
            n.wait_ssh();
        }
        fleet
    }

    /// The nodes' names, comma-separated (a `-H` value).
    pub fn hosts(&self) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        names.join(",")
    }

    /// `ri -H HOSTS --ssh-config ... ARGS`, as a command to start.
    pub fn ri(&self, hosts: &str, args: &[&str]) -> Command {
        let mut c = Command::new(ri_bin());
        c.args(["-H", hosts, "--ssh-config"])
            .arg(&self.ssh_config)
            .args(args)
            .env("RI_SSH_CONTROL_DIR", self.control_dir())
            .stdin(Stdio::null());
        c
    }

    /// `count` more host names, spread over the nodes round-robin, each at
    /// an address of its own (so each gets its own ssh connection, as a
    /// distinct machine would); returns an inventory file listing them.
    pub fn aliases(&self, count: usize) -> PathBuf {
        let mut config = std::fs::read_to_string(&self.ssh_config).unwrap();
        let mut inventory = String::from("[sim]\n");
        let key = self.dir.path().join("id_ed25519");
        for i in 0..count {
            let node = &self.nodes[i % self.nodes.len()];
            let addr = format!("198.19.{}.{}", i / 250, i % 250 + 2);
            let name = format!("s{i:04}");
            run(&mut node.enter(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"]));
            run(Command::new("ip").args([
                "route",
                "replace",
                &format!("{addr}/32"),
                "dev",
                &node.veth,
            ]));
            config.push_str(&format!(
                "Host {name}\n  HostName {addr}\n  HostKeyAlias {}\n  User root\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  LogLevel ERROR\n\n",
                node.addr,
                key.display(),
                self.known_hosts.display()
            ));
            inventory.push_str(&name);
            inventory.push('\n');
        }
        std::fs::write(&self.ssh_config, config).unwrap();
        let path = self.dir.path().join("inventory");
        std::fs::write(&path, inventory).unwrap();
        path
    }

    /// Where ri keeps its ssh master sockets in these tests.
    pub fn control_dir(&self) -> PathBuf {
        self.dir.path().join("mux")
    }

    /// The fleet's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `ri -H hosts ARGS` and waits until each of the `n` hosts
    /// printed an `attached` line (`HOST: ri: attached ...`).
    pub fn start_attached(&self, hosts: &str, n: usize, args: &[&str]) -> Running {
        let mut child = self
            .ri(hosts, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ri");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut attached = std::collections::BTreeSet::new();
        let mut seen = String::new();
        while attached.len() < n {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "ri exited before every host attached:\n{seen}"
            );
            seen.push_str(&line);
            if line.contains("attached") {
                attached.insert(line.split(':').next().unwrap_or("").to_string());
            }
        }
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let log = std::sync::Arc::new(Mutex::new(seen));
        let shared = log.clone();
        let stderr = std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut s = shared.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            shared.lock().unwrap().clone()
        });
        Running {
            child,
            output: Some((stdout, stderr)),
            log,
        }
    }

    /// [`Fleet::start_attached`] on every node.
    pub fn start_all(&self, args: &[&str]) -> Running {
        self.start_attached(&self.hosts(), self.nodes.len(), args)
    }

    /// Removes `host`'s line from the client's known_hosts.
    pub fn forget_host_key(&self, node: usize) {
        let addr = &self.nodes[node].addr;
        let text = std::fs::read_to_string(&self.known_hosts).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{addr} ")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&self.known_hosts, kept).unwrap();
    }
}

/// Readers of a background command's stdout and stderr.
type Output2 = (
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
);

/// A fleet command running in the background (killed when dropped).
pub struct Running {
    /// The local ri.
    pub child: Child,
    output: Option<Output2>,
    /// Its stderr so far.
    log: std::sync::Arc<Mutex<String>>,
}

impl Running {
    /// Ctrl-C, then its stdout and stderr; it must have succeeded.
    pub fn stop(mut self) -> (String, String) {
        // SAFETY: signals our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let st = self.child.wait().unwrap();
        let (out, err) = self.output.take().expect("stopped once");
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        assert!(st.success(), "ri failed ({st}):\n{err}");
        (out, err)
    }

    /// Waits until its stderr holds `what` (at most `secs` seconds).
    pub fn wait_stderr(&self, what: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.contains(what) {
                return;
            }
            assert!(Instant::now() < end, "no '{what}' on ri's stderr:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last JSON line of `out` whose `type` is `final` (a merged print).
pub fn final_doc(out: &str) -> Value {
    out.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["type"] == "final")
        })
        .unwrap_or_else(|| panic!("no final print in:\n{out}"))
}

impl Fleet {
    /// Waits (at most `within`) until no node runs a ri or holds a probe on
    /// its m0d; fails naming what is left `after` what.
    pub fn wait_clean(&self, within: Duration, after: &str) {
        let t = Instant::now();
        loop {
            let left: Vec<String> = (self.nodes.iter())
                .flat_map(|n| {
                    let mut v: Vec<String> = (n.ri_processes().iter())
                        .map(|p| format!("{}: ri pid {p}", n.name))
                        .collect();
                    v.extend(
                        probes_on(&n.dir.join("bin/m0d"))
                            .into_iter()
                            .map(|p| format!("{}: probe {p}", n.name)),
                    );
                    v
                })
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                t.elapsed() < within,
                "left {:?} after {after}: {left:?}",
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends every ssh master whose socket is in `dir`.
    pub fn close_masters(&self, dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let _ = Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", e.path().display()))
                .args(["-O", "exit", "master"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Masters first (their sshd sessions end with the namespaces anyway).
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("mux") {
                self.close_masters(&e.path());
            }
        }
        self.nodes.clear();
    }
}

impl Node {
    fn start(root: &Path, i: usize, net: usize, pubkey: &str) -> Node {
        let name = format!("n{i}");
        let dir = root.join(&name);
        for d in ["bin", "home", "ctl", "data"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::copy(fixture("m0d"), dir.join("bin/m0d")).expect("copy m0d");
        std::os::unix::fs::symlink(ri_bin(), dir.join("bin/ri")).unwrap();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &name, "-f"])
            .arg(dir.join("host_ed25519")));
        std::fs::write(dir.join("authorized_keys"), pubkey).unwrap();
        let d = dir.display();
        let config = format!(
            "ListenAddress 0.0.0.0\nPort 22\nHostKey {d}/host_ed25519\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nMaxSessions 200\nMaxStartups 200\n\
             SetEnv PATH={d}/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME={d}/home\n"
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let holder = Command::new("unshare")
            .args([
                "--net",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
                "sleep",
                "100000",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start unshare");
        let init = child_of(holder.id());
        let veth = format!("rif{}h{i}", std::process::id() % 100000);
        let addr = format!("198.18.{net}.2");
        let mut node = Node {
            name,
            dir,
            addr,
            holder,
            init,
            sshd: None,
            veth,
            m0d: None,
            loads: Vec::new(),
            endpoint: None,
            socket: None,
        };
        run(Command::new("ip").args([
            "link",
            "add",
            &node.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &init.to_string(),
        ]));
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("198.18.{net}.1/24"),
            "dev",
            &node.veth,
        ]));
        run(Command::new("ip").args(["link", "set", &node.veth, "up"]));
        run(&mut node.enter(&[
            "sh",
            "-c",
            &format!(
                "ip addr add {}/24 dev eth0 && ip link set eth0 up && ip link set lo up",
                node.addr
            ),
        ]));
        node.start_sshd();
        node
    }

    /// A command run inside the node's namespaces (network, pid, mount).
    pub fn enter(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-n", "-p", "-m", "--"])
            .args(args);
        c
    }

    /// Starts (or restarts) the node's sshd.
    pub fn start_sshd(&mut self) {
        let log = std::fs::File::create(self.dir.join("sshd.log")).unwrap();
        let cfg = self.dir.join("sshd_config");
        let child = self
            .enter(&[SSHD, "-D", "-e", "-f", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.sshd = Some(child);
    }

    /// Stops the node's sshd (its listener; open sessions end with it here).
    pub fn stop_sshd(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let sshd = child_of(c.id());
            // SAFETY: signals the sshd this node started.
            unsafe { libc::kill(sshd, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Cuts the node's link (the host side of its veth goes down): its
    /// connections stall without a close, as on a network failure.
    pub fn link_down(&self) {
        run(Command::new("ip").args(["link", "set", &self.veth, "down"]));
    }

    fn host_key(&self) -> String {
        let k = std::fs::read_to_string(self.dir.join("host_ed25519.pub")).unwrap();
        let mut w = k.split_whitespace();
        format!("{} {}\n", w.next().unwrap(), w.next().unwrap())
    }

    /// Replaces the node's host key (the client's known_hosts keeps the old).
    pub fn change_host_key(&mut self) {
        let key = self.dir.join("host_ed25519");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        self.stop_sshd();
        self.start_sshd();
        self.wait_ssh();
    }

    fn wait_ssh(&self) {
        let addr: SocketAddr = format!("{}:22", self.addr).parse().unwrap();
        let t = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "sshd of {} does not answer; its log:\n{}",
                self.name,
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node's m0d (its own copy, bin/m0d) and waits for it.
    pub fn start_m0d(&mut self) {
        let err = self.dir.join("m0d.stderr");
        let bin = self.dir.join("bin/m0d");
        let data = self.dir.join("data");
        let ctl = self.dir.join("ctl");
        let mut child = self
            .enter(&[bin.to_str().unwrap(), "--port", "0", "--no-sync"])
            .arg("--data")
            .arg(&data)
            .arg("--control-dir")
            .arg(&ctl)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start m0d");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap_or(0) > 0 && !line.starts_with("endpoint ") {
            line.clear();
        }
        let ep = line.trim().strip_prefix("endpoint ").map(String::from);
        assert!(
            ep.is_some(),
            "m0d on {} did not start: {}",
            self.name,
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        // Keep reading its stdout so it never blocks.
        std::thread::spawn(move || for _ in out.lines() {});
        self.endpoint = ep;
        self.socket = std::fs::read_to_string(&err)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("m0d: control socket "))
            .map(PathBuf::from);
        assert!(
            self.socket.is_some(),
            "m0d on {} has no control socket",
            self.name
        );
        self.m0d = Some(child);
    }

    /// Stops the node's m0d (SIGTERM, then waits for it).
    pub fn stop_m0d(&mut self) {
        if let Some(mut c) = self.m0d.take() {
            let m0d = child_of(c.id());
            // SAFETY: signals the m0d this node started.
            unsafe { libc::kill(m0d, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Keys ssh may log in with: none after this (every key refused).
    pub fn refuse_keys(&self) {
        std::fs::write(self.dir.join("authorized_keys"), "").unwrap();
    }

    /// m0d's pid inside the node's pid namespace.
    pub fn m0d_nspid(&self) -> i32 {
        let nsenter = self.m0d.as_ref().expect("m0d started").id();
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child_of(nsenter))).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .expect("NSpid");
        line.split_whitespace().last().unwrap().parse().unwrap()
    }

    /// Starts `m0client load` inside the node: `rate`/s for `secs` s.
    pub fn load(&mut self, rate: u32, secs: f64) {
        let ep = self.endpoint.clone().expect("m0d started");
        let client = fixture("m0client");
        let child = self
            .enter(&[
                client.to_str().unwrap(),
                "--endpoint",
                &ep,
                "--timeout",
                "30",
                "load",
            ])
            .args(["--rate", &rate.to_string(), "--concurrency", "4"])
            .args(["--duration", &secs.to_string(), "--objects", "16"])
            .args([
                "--size",
                "4096",
                "--prefix",
                &format!(
                    "{}-{}",
                    self.name,
                    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start m0client load");
        self.loads.push(child);
    }

    /// Waits for the node's loads to end.
    pub fn finish_loads(&mut self) {
        for mut c in self.loads.drain(..) {
            let st = c.wait().expect("wait load");
            assert!(st.success(), "m0client load on {} failed: {st}", self.name);
        }
    }

    /// m0d's own stats (`ri ctl --socket ... stats`).
    pub fn stats(&self) -> Value {
        let out = run(Command::new(ri_bin())
            .args(["ctl", "--json", "--socket"])
            .arg(self.socket.as_ref().expect("m0d started"))
            .arg("stats"));
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }

    /// Root-namespace pids of the node's processes whose name starts with `ri`.
    pub fn ri_processes(&self) -> Vec<i32> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)).ok();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != ns {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("ri") {
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in self
            .loads
            .iter_mut()
            .chain(self.m0d.as_mut())
            .chain(self.sshd.as_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The init's death ends every process of the node and its network
        // namespace, and with it the veth pair.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
    }
}

/// Every fd of every process whose fdinfo names `path` (a probe there).
pub fn probes_on(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        for f in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(&needle)) {
                found.push(format!("{pid}:{}", f.file_name().to_string_lossy()));
            }
        }
    }
    found
}
