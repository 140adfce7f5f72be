//! An aggregation kept attached while other work goes on (`ri shell`'s
//! background jobs, `ri top`'s panes): the kernel aggregates, and the maps
//! are read only when asked.

use std::{cell::RefCell, time::Instant};

use super::{AggKind, AggOptions, AggPlan, Snapshot, build, labels, printer, render};
use crate::{
    Error,
    engine::Engine,
    launch::{self, Launched},
    session::ProbeSet,
    stack::Stacks,
};

/// An attached aggregation; dropping it detaches.
pub struct Live {
    opts: AggOptions,
    set: ProbeSet,
    plans: Vec<AggPlan>,
    engine: Engine,
    stacks: RefCell<Stacks>,
    names: RefCell<labels::Names>,
    attached: Instant,
}

impl Live {
    /// Builds and attaches `opts` (with `-p` processes, not `-c`).
    pub fn start(opts: AggOptions) -> Result<Live, Error> {
        if opts.trace.command.is_some() {
            return Err(Error::Usage(
                "a background instrument watches -p processes; -c is for commands run in front"
                    .into(),
            ));
        }
        launch::check(&opts.trace.launching())?;
        let (set, plans) = build(&opts)?;
        let Launched { engine, .. } = launch::start(
            None,
            &opts.trace.launching(),
            &set,
            opts.max_keys,
            launch::Delivery::ALONE,
        )?;
        let mut stacks = Stacks::new();
        if set.has_stacks() {
            for &pid in &opts.trace.pids {
                stacks.watch(pid);
            }
        }
        let names = labels::Names::new(opts.trace.pids.clone());
        Ok(Live {
            opts,
            set,
            plans,
            engine,
            stacks: RefCell::new(stacks),
            names: RefCell::new(names),
            attached: Instant::now(),
        })
    }

    /// Which aggregation it is.
    pub fn kind(&self) -> &AggKind {
        &self.opts.kind
    }

    /// Seconds since it was attached.
    pub fn age(&self) -> f64 {
        self.attached.elapsed().as_secs_f64()
    }

    /// Prints the totals so far, as the command prints them at its end
    /// (text, or one JSON object when `json`).
    pub fn print(&self, out: &mut impl std::io::Write, json: bool) -> Result<(), Error> {
        let mut opts = self.opts.clone();
        opts.trace.json = json;
        opts.folded = false;
        opts.flamegraph = None;
        if self.set.has_stacks() {
            self.stacks.borrow_mut().refresh();
        }
        let printer = printer::Printer {
            view: render::View {
                set: &self.set,
                plans: &self.plans,
                opts: &opts,
                engine: &self.engine,
                stacks: &self.stacks,
                names: &self.names,
            },
            opts: &opts,
            attached: self.attached,
        };
        printer.show(out, true, &mut Snapshot::default())
    }

    /// The totals so far as the JSON object `--json` prints.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        let mut buf = Vec::new();
        self.print(&mut buf, true)?;
        serde_json::from_slice(&buf)
            .map_err(|e| Error::Usage(format!("unreadable aggregation JSON: {e}")))
    }
}
