//! `ri top`: a full-screen view of a pack's aggregating instruments,
//! refreshed from the kernel's maps (nothing is sent per event).

mod fleet;
mod merge;
mod model;
mod screen;

use std::{io::Write as _, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    Error,
    agg::Live,
    cli::TopArgs,
    pack::{self, RunOptions},
};

pub use fleet::run as run_hosts;
pub use model::{Rates, Table};

/// Errors of `ri top`.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// A pack with nothing to show.
    #[error("pack {0} has no aggregating instrument without required parameters to show")]
    Empty(String),
    /// The terminal could not be set up or drawn.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// More hosts than `--fanout` for the full-screen view.
    #[error(
        "ri top -H: {hosts} hosts but --fanout {fanout}: the view streams from every host at once (add --fanout {hosts})"
    )]
    Fanout {
        /// Hosts named.
        hosts: usize,
        /// `--fanout`.
        fanout: u32,
    },
}

/// The panes of the motr pack: title, instrument, unit of its rows.
const MOTR: &[(&str, &str, &str)] = &[
    ("requests", "fops", "requests"),
    ("in flight", "queue", "requests"),
    ("sessions", "sessions", "sessions"),
    ("memory", "allocs", "allocations"),
];

/// What a pane shows: its names and its last table (what a remote ri
/// sends, one JSON line of them per refresh, with `--frames`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct View {
    /// Shown in the tab bar.
    pub title: String,
    /// `PACK.INSTRUMENT`.
    pub instrument: String,
    /// The last table read.
    pub table: Table,
}

/// One pane's instrument, attached, and its rates.
struct Pane {
    what: String,
    live: Live,
    rates: Rates,
}

impl Pane {
    /// Reads the instrument's maps into a new table.
    fn read(&mut self) -> Result<Table, Error> {
        let doc = self.live.json()?;
        Ok(model::table(&doc, &mut self.rates, &self.what))
    }
}

/// The panes of one machine: attached instruments and their last tables.
struct Local {
    head: String,
    panes: Vec<Pane>,
    views: Vec<View>,
}

impl screen::Source for Local {
    fn refresh(&mut self) -> Result<(), Error> {
        for (p, v) in self.panes.iter_mut().zip(&mut self.views) {
            v.table = p.read()?;
        }
        Ok(())
    }

    fn views(&self) -> &[View] {
        &self.views
    }

    fn head(&self) -> String {
        self.head.clone()
    }
}

/// The (title, instrument, unit) of each pane of `pack`.
fn layout(args: &TopArgs) -> Result<Vec<(String, String, String)>, Error> {
    if args.pack == "motr" {
        return Ok(MOTR
            .iter()
            .map(|(t, i, w)| (t.to_string(), format!("motr.{i}"), w.to_string()))
            .collect());
    }
    let packs = pack::load_all(&args.packs)?;
    let loaded = pack::find_pack(&packs, &args.pack)?;
    let v: Vec<_> = (loaded.file.instruments.iter())
        .filter(|(_, i)| i.kind != "trace" && i.params.values().all(|p| p.default.is_some()))
        .map(|(n, _)| (n.clone(), format!("{}.{n}", args.pack), "hits".to_string()))
        .collect();
    if v.is_empty() {
        return Err(TopError::Empty(args.pack.clone()).into());
    }
    Ok(v)
}

/// Attaches every pane's instrument.
fn attach(args: &TopArgs, pids: &[u32]) -> Result<(Local, Vec<String>), Error> {
    let mut local = Local {
        head: screen::title(&args.pack, &scope(pids)),
        panes: Vec::new(),
        views: Vec::new(),
    };
    let mut notes = Vec::new();
    for (title, instrument, what) in layout(args)? {
        let opts = RunOptions {
            instrument: instrument.clone(),
            pids: pids.to_vec(),
            quiet: true,
            packs: args.packs.clone(),
            ..Default::default()
        };
        let (agg, n) = crate::cli::instrument_aggregation(&opts)?;
        notes.extend(n);
        local.panes.push(Pane {
            what,
            live: Live::start(agg)?,
            rates: Rates::default(),
        });
        local.views.push(View {
            title,
            instrument,
            table: Table::default(),
        });
    }
    Ok((local, notes))
}

/// The processes watched, as the header names them.
fn scope(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "all processes".to_string();
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("pid {}", pids.join(","))
}

/// The seconds between refreshes.
fn interval(args: &TopArgs) -> Result<Duration, Error> {
    Ok(crate::cli::seconds("--interval", Some(args.interval))
        .map_err(Error::Usage)?
        .unwrap_or(Duration::from_secs(1)))
}

/// `ri top`.
pub fn run(args: &TopArgs) -> Result<(), Error> {
    let every = interval(args)?;
    let pids = crate::select::running_now(&args.pids, &args.select.selection())?;
    let (mut local, notes) = attach(args, &pids)?;
    if args.frames {
        return frames(&mut local, every, args.once);
    }
    if args.once {
        for n in &notes {
            eprintln!("ri: {n}");
        }
        std::thread::sleep(every);
        screen::Source::refresh(&mut local)?;
        let mut out = std::io::stdout().lock();
        screen::plain(&mut out, &local.head, &local.views)?;
        return Ok(());
    }
    screen::run(&mut local, every, &notes)
}

/// `--frames`: one JSON line of every pane's view per refresh (one only
/// with `--once`), until killed or stdout closes.
fn frames(local: &mut Local, every: Duration, once: bool) -> Result<(), Error> {
    let mut next = std::time::Instant::now() + every;
    loop {
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        next += every;
        screen::Source::refresh(local)?;
        let line = serde_json::to_string(&local.views)
            .map_err(|e| Error::Usage(format!("top frame: {e}")))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        if once {
            return Ok(());
        }
    }
}
