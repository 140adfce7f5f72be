//! `ri serve`: instruments kept attached, served as Prometheus metrics read from the kernel's maps at each scrape.
//!
//! Its loop is its own, not `launch::run`'s: it answers HTTP scrapes and
//! SIGHUP reloads, attaches and detaches instruments as their targets come
//! and go, and ends only on a signal.

mod config;
mod expose;
mod instrument;
mod series;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    signal::unix::{SignalKind, signal},
};

pub use config::{Config, Resolved, Spec, Targets, parse as parse_config};
use expose::{Family, Value};
use instrument::{Instrument, Phases};

use crate::Error;

/// Errors of `ri serve`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A config file that cannot be read or does not follow the format.
    #[error("{path}:{line}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Its line (0: not about a line).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An instrument that cannot be served.
    #[error("{0}")]
    Instrument(String),
    /// The listening address cannot be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// What `ri serve` was asked.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to serve `/metrics`.
    pub listen: SocketAddr,
    /// The config file.
    pub config: Option<PathBuf>,
    /// Pack instruments from the command line.
    pub instruments: Vec<String>,
    /// `-p`, `--comm`, `--exe`: the instruments' targets in place of the
    /// config file's.
    pub targets: Targets,
    /// `--pack`.
    pub packs: Vec<PathBuf>,
}

/// A line on stderr with its syslog priority (`<6>` info, `<4>` warning,
/// `<3>` error), as systemd's journal reads it.
pub fn log(priority: u8, msg: &str) {
    eprintln!("<{priority}>ri serve: {msg}");
}

/// The instruments `opts` stand for now (the config re-read).
fn specs(opts: &ServeOptions) -> Result<Vec<Resolved>, Error> {
    let cfg = match &opts.config {
        Some(p) => config::read(p)?,
        None => Config::default(),
    };
    let specs = cfg.resolve(&opts.instruments, &opts.targets)?;
    for s in &specs {
        instrument::validate(s, &opts.packs)?;
        crate::select::Selection {
            comms: s.targets.comms.clone(),
            exes: s.targets.exes.clone(),
        }
        .matcher()?;
    }
    Ok(specs)
}

/// The served state.
struct Server {
    opts: ServeOptions,
    instruments: Vec<Instrument>,
    /// Attach failures and losses of instruments removed by a reload.
    gone_failures: u64,
    gone_lost: u64,
    gone_full: u64,
    /// The last scrape's phases, and its text's length (the next one's
    /// capacity).
    phases: Phases,
    last_len: usize,
}

impl Server {
    fn follow(&mut self, rt: &tokio::runtime::Runtime) {
        for i in &mut self.instruments {
            i.follow(&self.opts.packs, rt);
        }
    }

    /// Re-reads the config: unchanged instruments stay as they are.
    fn reload(&mut self, rt: &tokio::runtime::Runtime) {
        let specs = match specs(&self.opts) {
            Ok(s) => s,
            Err(e) => {
                log(
                    3,
                    &format!("reload refused, keeping the running instruments: {e}"),
                );
                return;
            }
        };
        let mut old = std::mem::take(&mut self.instruments);
        for s in specs {
            match old.iter().position(|i| i.spec == s) {
                Some(at) => self.instruments.push(old.swap_remove(at)),
                None => {
                    log(6, &format!("{}: added", s.name));
                    self.instruments.push(Instrument::new(s));
                }
            }
        }
        for i in old {
            let (lost, full) = i.losses();
            self.gone_lost += lost;
            self.gone_full += full;
            self.gone_failures += i.attach_failures;
            log(6, &format!("{}: removed", i.spec.name));
        }
        self.follow(rt);
    }

    /// Every family, read now, as Prometheus's text format.
    fn scrape(&mut self) -> String {
        let mut out = String::with_capacity(self.last_len + self.last_len / 8);
        let mut small: Vec<Family> = Vec::new();
        let mut phases = Phases::default();
        let (mut lost, mut full, mut failures, mut targets) =
            (self.gone_lost, self.gone_full, self.gone_failures, 0);
        let per = |name: &str, help: &str| Family::new(name, help);
        let mut refused = per(
            "ri_series_dropped",
            "series not exposed because their metric reached its cap",
        );
        let mut restarts = per(
            "ri_target_restarts",
            "processes attached by name after the first one an instrument followed (restarts, or more of them)",
        );
        let mut series = per("ri_series", "series exposed, per instrument");
        for i in &mut self.instruments {
            if let Err(e) = i.write(&mut out, &mut small, &mut phases) {
                log(4, &format!("{}: cannot read its maps: {e}", i.spec.name));
            }
            let (l, f) = i.losses();
            lost += l;
            full += f;
            failures += i.attach_failures;
            targets += i.attached();
            let label = || vec![("instrument".to_string(), i.spec.name.clone())];
            refused = refused.with(label(), Value::Counter(i.refused() as f64));
            restarts = restarts.with(label(), Value::Counter(i.restarts as f64));
            series = series.with(label(), Value::Gauge(i.series() as f64));
        }
        let t = Instant::now();
        let (cpu, rss) = own_usage();
        let last = self.phases;
        let phase = |name: &str, d: Duration| {
            (
                vec![("phase".to_string(), name.to_string())],
                Value::Gauge(d.as_secs_f64()),
            )
        };
        let mut scrape = per(
            "ri_scrape_duration_seconds",
            "time the previous scrape spent reading maps, building series and writing text",
        );
        scrape.series = vec![
            phase("read", last.read),
            phase("build", last.build),
            phase("encode", last.encode),
        ];
        small.extend([
            Family::new("ri_events_lost", "events lost to a full ring buffer")
                .with(Vec::new(), Value::Counter(lost as f64)),
            Family::new(
                "ri_map_full_updates",
                "aggregation updates dropped because a map was full",
            )
            .with(Vec::new(), Value::Counter(full as f64)),
            Family::new("ri_attach_failures", "instrument attachments that failed")
                .with(Vec::new(), Value::Counter(failures as f64)),
            Family::new(
                "ri_targets_attached",
                "processes (or file-wide instruments) attached now",
            )
            .with(Vec::new(), Value::Gauge(targets as f64)),
            refused,
            restarts,
            series,
            scrape,
            Family::new(
                "ri_process_cpu_seconds",
                "CPU time of ri serve itself, user and system",
            )
            .with(Vec::new(), Value::Counter(cpu)),
            Family::new(
                "ri_process_resident_memory_bytes",
                "resident memory of ri serve itself",
            )
            .with(Vec::new(), Value::Gauge(rss)),
        ]);
        small.retain(|f| !f.series.is_empty());
        expose::encode(&mut out, small);
        phases.encode += t.elapsed();
        self.phases = phases;
        self.last_len = out.len();
        out
    }
}

/// Own CPU seconds and resident bytes.
fn own_usage() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
    let pages: f64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    (cpu, pages * 4096.0)
}

/// Answers one HTTP/1.1 request: `GET /metrics`, or 404.
async fn answer(mut conn: TcpStream, server: &mut Server) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    let read = async {
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return Ok(());
    }
    let line = String::from_utf8_lossy(&req)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match (line.split_whitespace().next(), path.split('?').next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", expose::CONTENT_TYPE, server.scrape()),
        (Some("GET"), Some("/")) => (
            "200 OK",
            "text/plain",
            "ri serve: metrics at /metrics\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

/// Runs until SIGINT or SIGTERM: follows the targets every second, answers
/// scrapes, reloads the config on SIGHUP.
pub fn run(opts: ServeOptions) -> Result<(), Error> {
    let specs = specs(&opts)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rt_ref = &rt;
    rt.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| ServeError::Listen {
                addr: opts.listen,
                reason: e.to_string(),
            })?;
        let mut server = Server {
            instruments: specs.into_iter().map(Instrument::new).collect(),
            opts,
            gone_failures: 0,
            gone_lost: 0,
            gone_full: 0,
            phases: Phases::default(),
            last_len: 0,
        };
        server.follow(rt_ref);
        log(
            6,
            &format!(
                "serving /metrics on http://{}/metrics",
                listener.local_addr()?
            ),
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = listener.accept() => match c {
                    Ok((conn, _)) => {
                        if let Err(e) = answer(conn, &mut server).await {
                            log(4, &format!("scrape: {e}"));
                        }
                    }
                    Err(e) => log(4, &format!("accept: {e}")),
                },
                _ = tick.tick() => server.follow(rt_ref),
                _ = hup.recv() => {
                    log(6, "SIGHUP: reloading the config");
                    server.reload(rt_ref);
                }
                _ = int.recv() => break,
                _ = term.recv() => break,
            }
        }
        log(6, "stopping: detaching");
        Ok(())
    })
}
