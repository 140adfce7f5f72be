//! `ri top`: a full-screen view of a pack's aggregating instruments,
//! refreshed from the kernel's maps (nothing is sent per event).

mod model;
mod screen;

use std::time::Duration;

use crate::{
    Error,
    agg::Live,
    cli::TopArgs,
    pack::{self, RunOptions},
};

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
}

/// The panes of the motr pack: title, instrument, unit of its rows.
const MOTR: &[(&str, &str, &str)] = &[
    ("requests", "fops", "requests"),
    ("in flight", "queue", "requests"),
    ("sessions", "sessions", "sessions"),
    ("memory", "allocs", "allocations"),
];

/// One pane: an attached instrument and its rates.
pub struct Pane {
    /// Shown in the tab bar.
    pub title: String,
    /// `PACK.INSTRUMENT`.
    pub instrument: String,
    what: String,
    live: Live,
    rates: Rates,
    /// The last table read.
    pub table: Table,
}

impl Pane {
    /// Reads the instrument's maps into a new table.
    pub fn refresh(&mut self) -> Result<(), Error> {
        let doc = self.live.json()?;
        self.table = model::table(&doc, &mut self.rates, &self.what);
        Ok(())
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
fn attach(args: &TopArgs, pids: &[u32]) -> Result<(Vec<Pane>, Vec<String>), Error> {
    let mut panes = Vec::new();
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
        panes.push(Pane {
            title,
            instrument,
            what,
            live: Live::start(agg)?,
            rates: Rates::default(),
            table: Table::default(),
        });
    }
    Ok((panes, notes))
}

/// `ri top`.
pub fn run(args: &TopArgs) -> Result<(), Error> {
    let every = crate::cli::seconds("--interval", Some(args.interval))
        .map_err(Error::Usage)?
        .unwrap_or(Duration::from_secs(1));
    let pids = crate::select::running_now(&args.pids, &args.select.selection())?;
    let (mut panes, notes) = attach(args, &pids)?;
    if args.once {
        for n in &notes {
            eprintln!("ri: {n}");
        }
        std::thread::sleep(every);
        for p in &mut panes {
            p.refresh()?;
        }
        let mut out = std::io::stdout().lock();
        screen::plain(&mut out, &args.pack, &pids, &panes)?;
        return Ok(());
    }
    screen::run(&args.pack, &pids, &mut panes, every, &notes)
}
