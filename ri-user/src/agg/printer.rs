//! One print of an aggregation: the kernel map (or the in-flight table)
//! read, labels named, and the table, JSON or folded stacks written; and
//! the instrument printing them as a command's run goes.

use std::time::Duration;

use super::{AggKind, AggOptions, Snapshot, inflight, labels, leaks, read, render};
use crate::{
    Error,
    launch::{Instrument, Tick},
};

/// Everything one print of an aggregation needs.
pub(super) struct Printer<'a> {
    pub(super) view: render::View<'a>,
    pub(super) opts: &'a AggOptions,
    /// When the probes were attached (for `ri leaks`' call rates).
    pub(super) attached: std::time::Instant,
}

impl Printer<'_> {
    /// Reads the names of labelled values not seen before.
    pub(super) fn read_names(&self) -> Result<(), Error> {
        let v = &self.view;
        match self.opts.kind {
            AggKind::Inflight(..) => {
                for f in inflight::read(v.engine)? {
                    let plan = &v.plans[0];
                    render::labelled(render::key_parts(&f.payload, &plan.keys, v), plan, v);
                }
            }
            _ => {
                v.names
                    .borrow_mut()
                    .fold(read::snapshot(v.engine, v.set)?, v.plans);
            }
        }
        Ok(())
    }

    /// Prints the map's state (an interval's additions since `prev`, or the
    /// totals when `last`); writes the flame graph at the end.
    pub(super) fn show(
        &self,
        out: &mut impl std::io::Write,
        last: bool,
        prev: &mut Snapshot,
    ) -> Result<(), Error> {
        let v = &self.view;
        let folded_only = self.opts.folded;
        let lines = match &self.opts.kind {
            AggKind::Inflight(..) => {
                let flights = inflight::read(v.engine)?;
                inflight::print(out, v, &v.plans[0], &flights, self.opts.trace.json, last)?;
                return Ok(());
            }
            AggKind::Leaks(l) => {
                let flights = inflight::read(v.engine)?;
                let groups = leaks::group(&flights);
                let resolved = groups
                    .iter()
                    .map(|g| v.stacks.borrow_mut().resolve(v.engine, g.stack, None))
                    .collect::<Result<Vec<_>, _>>()?;
                let lines =
                    leaks::folded(&groups, &resolved, |pid| v.stacks.borrow_mut().comm(pid));
                if !folded_only {
                    let (a, f) = leaks::hit_plans(self.opts.trace.probes.len(), l.frees.len());
                    let sum = |ids: Vec<u32>| -> Result<u64, Error> {
                        ids.into_iter().map(|id| read::hits(v.engine, id)).sum()
                    };
                    let calls = leaks::Calls {
                        allocs: sum(a)?,
                        frees: sum(f)?,
                        seconds: self.attached.elapsed().as_secs_f64(),
                    };
                    leaks::print(
                        out,
                        &groups,
                        &resolved,
                        l.top,
                        calls,
                        inflight::monotonic_ns(),
                        self.opts.trace.json,
                        last,
                    )?;
                }
                lines
            }
            _ => {
                let now = v
                    .names
                    .borrow_mut()
                    .fold(read::snapshot(v.engine, v.set)?, v.plans);
                let snap = if last { now.clone() } else { now.since(prev) };
                if !folded_only {
                    v.print(out, &snap, last)?;
                }
                *prev = now;
                v.folded(&snap)
            }
        };
        if folded_only && last {
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            out.flush()?;
        }
        if last && let Some(path) = &self.opts.flamegraph {
            let title = match &self.opts.kind {
                AggKind::Leaks(_) => "ri leaks: bytes outstanding by allocation stack",
                _ => "ri: hits by user stack",
            };
            crate::stack::flamegraph(path, title, &lines)?;
        }
        Ok(())
    }
}

/// The aggregation instrument of a command run in front: prints at each
/// `--interval` and at the end, reading names and stacks as it goes.
pub(super) struct Shown<'a> {
    pub(super) printer: Printer<'a>,
    pub(super) out: std::io::StdoutLock<'static>,
    /// The map at the last print (an interval prints what was added).
    pub(super) prev: Snapshot,
    pub(super) has_stacks: bool,
    pub(super) has_labels: bool,
}

impl Instrument for Shown<'_> {
    fn ticks(&self) -> Vec<(Tick, Duration)> {
        let mut ticks: Vec<(Tick, Duration)> = (self.printer.opts.interval)
            .map(|every| (Tick::Interval, every))
            .into_iter()
            .collect();
        if self.has_stacks {
            ticks.push((Tick::Maps, crate::stack::MAPS_REFRESH));
        }
        // Names are read while the processes live.
        if self.has_labels {
            ticks.push((Tick::Names, labels::READ_EVERY));
        }
        ticks
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), Error> {
        match tick {
            Tick::Interval => self.printer.show(&mut self.out, false, &mut self.prev),
            Tick::Maps => {
                self.printer.view.stacks.borrow_mut().refresh();
                Ok(())
            }
            Tick::Names => self.printer.read_names(),
        }
    }

    fn on_new_process(&mut self, pid: u32) {
        let v = &self.printer.view;
        v.names.borrow_mut().add(pid);
        if self.has_stacks {
            v.stacks.borrow_mut().watch(pid);
        }
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.printer.show(&mut self.out, true, &mut self.prev)
    }
}
