//! `ri top -H HOSTS`: each host's ri attaches the panes' instruments and
//! prints their tables once per refresh (`--frames`, one ssh session per
//! host); this ri merges them into one view, a host column on every row.

use std::{
    ffi::OsString,
    process::ExitCode,
    sync::mpsc::{Receiver, channel},
    time::{Duration, Instant},
};

use super::{TopError, View, merge, screen};
use crate::{
    Error,
    cli::TopArgs,
    remote::{Event, FleetArgs, Streams},
};

/// How often the view takes in the frames that came.
const REDRAW: Duration = Duration::from_millis(250);

/// Where one host stands.
enum Host {
    /// No frame yet.
    Waiting,
    /// Its last frame, and when it came.
    Up(Vec<View>, Instant),
    /// Its session ended: why.
    Down(String),
}

/// The hosts' sessions and their last frames.
struct Hosts {
    pack: String,
    names: Vec<String>,
    hosts: Vec<Host>,
    rx: Receiver<(usize, Event)>,
    /// `h`: one host shown alone.
    only: Option<usize>,
    merged: Vec<View>,
    every: Duration,
    /// Dropped last: ends every remote ri.
    _streams: Streams,
}

impl Hosts {
    /// Takes in one event of host `i`.
    fn take(&mut self, i: usize, ev: Event) {
        match ev {
            Event::Line(l) => {
                if let Ok(v) = serde_json::from_str::<Vec<View>>(&l) {
                    self.hosts[i] = Host::Up(v, Instant::now());
                }
            }
            Event::Ended(f) => {
                let why = f.map_or_else(|| "its ri ended".to_string(), |f| f.to_string());
                self.hosts[i] = Host::Down(why);
            }
        }
    }

    /// Merges the last frames again.
    fn merge(&mut self) {
        let frames: Vec<(&str, Option<&[View]>)> = (self.names.iter().zip(&self.hosts))
            .map(|(n, h)| match h {
                Host::Up(v, _) => (n.as_str(), Some(&v[..])),
                _ => (n.as_str(), None),
            })
            .collect();
        let only = self.only.map(|i| self.names[i].as_str());
        self.merged = merge::views(&frames, only);
    }
}

impl screen::Source for Hosts {
    fn refresh(&mut self) -> Result<(), Error> {
        while let Ok((i, ev)) = self.rx.try_recv() {
            self.take(i, ev);
        }
        self.merge();
        Ok(())
    }

    fn views(&self) -> &[View] {
        &self.merged
    }

    fn head(&self) -> String {
        let scope = match self.only {
            Some(i) => format!("host {} (of {})", self.names[i], self.names.len()),
            None => format!("hosts {}", self.names.join(",")),
        };
        screen::title(&self.pack, &scope)
    }

    /// The hosts that failed, dropped, send nothing or have not yet.
    fn status(&self) -> Option<String> {
        let late = self.every * 3 + Duration::from_secs(2);
        let mut waiting = Vec::new();
        let mut bad = Vec::new();
        for (n, h) in self.names.iter().zip(&self.hosts) {
            match h {
                Host::Waiting => waiting.push(n.as_str()),
                Host::Up(_, at) if at.elapsed() > late => bad.push(format!(
                    "{n}: no frame for {:.0}s",
                    at.elapsed().as_secs_f64()
                )),
                Host::Up(..) => {}
                Host::Down(why) => bad.push(format!("{n}: {why}")),
            }
        }
        if !waiting.is_empty() {
            bad.push(format!("waiting for {}", waiting.join(",")));
        }
        (!bad.is_empty()).then(|| bad.join("; "))
    }

    fn has_hosts(&self) -> bool {
        true
    }

    fn next_host(&mut self) {
        self.only = match self.only {
            None => Some(0),
            Some(i) if i + 1 < self.names.len() => Some(i + 1),
            Some(_) => None,
        };
        self.merge();
    }
}

/// `ri top -H`: the merged full-screen view, or with `--once` one merged
/// frame; `argv` is the whole command line.
pub fn run(fleet: &FleetArgs, args: &TopArgs, argv: &[OsString]) -> ExitCode {
    match start(fleet, args, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ri: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn start(fleet: &FleetArgs, args: &TopArgs, argv: &[OsString]) -> Result<ExitCode, Error> {
    let every = super::interval(args)?;
    let names = crate::remote::parse_hosts(fleet.hosts.as_deref().unwrap_or_default())?;
    if !args.once && names.len() > fleet.fanout as usize {
        return Err(TopError::Fanout {
            hosts: names.len(),
            fanout: fleet.fanout,
        }
        .into());
    }
    let mut remote = crate::remote::forwarded(argv);
    remote.push("--frames".into());
    let (tx, rx) = channel();
    let streams = Streams::start(fleet, &names, remote, tx);
    let mut hosts = Hosts {
        pack: args.pack.clone(),
        hosts: names.iter().map(|_| Host::Waiting).collect(),
        names,
        rx,
        only: None,
        merged: Vec::new(),
        every,
        _streams: streams,
    };
    if args.once {
        return once(hosts);
    }
    screen::run(&mut hosts, REDRAW.min(every), &[])?;
    Ok(ExitCode::SUCCESS)
}

/// `--once`: each host prints one frame and ends; prints them merged, and
/// one line per host that failed.
fn once(mut hosts: Hosts) -> Result<ExitCode, Error> {
    let mut framed = vec![false; hosts.names.len()];
    let mut failed: Vec<Option<String>> = vec![None; hosts.names.len()];
    let mut left = hosts.names.len();
    while left > 0 {
        let Ok((i, ev)) = hosts.rx.recv() else { break };
        match ev {
            Event::Line(_) => {
                hosts.take(i, ev);
                framed[i] |= matches!(hosts.hosts[i], Host::Up(..));
            }
            Event::Ended(f) => {
                left -= 1;
                failed[i] = f
                    .map(|f| f.to_string())
                    .or_else(|| (!framed[i]).then(|| "no frame came".to_string()));
            }
        }
    }
    hosts.merge();
    let head = screen::Source::head(&hosts);
    let mut out = std::io::stdout().lock();
    if hosts.merged.is_empty() {
        eprintln!("ri: no host sent a frame");
    } else {
        screen::plain(&mut out, &head, &hosts.merged)?;
    }
    let mut n = 0;
    for (name, f) in hosts.names.iter().zip(&failed) {
        if let Some(why) = f {
            eprintln!("ri: {name}: failed: {why}");
            n += 1;
        }
    }
    if n == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("ri: {n} of {} hosts failed", hosts.names.len());
    Ok(ExitCode::from(1))
}
