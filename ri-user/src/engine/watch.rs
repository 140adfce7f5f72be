//! The overhead budget's watcher: a thread that checks the estimate every
//! 10 ms and detaches the hottest sites when it is over (see
//! `crate::budget`).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Instant,
};

use super::{
    links::Links,
    sites::{ProgStats, SiteTable, TrapCosts},
};
use crate::budget::{CHECK_EVERY, Dropped, Estimator};

/// What the trap at a site is, for its cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// A function entry (or offset) that is not a 5-byte nop: int3.
    Int3,
    /// A 5-byte nop, which the kernel may turn into a call.
    Nop5,
    /// A return probe: the entry's trap and the return's.
    Return,
}

/// What the budget is over.
#[derive(Clone, Debug)]
pub struct BudgetConfig {
    /// The budget, in percent of one CPU.
    pub pct: f64,
    /// Each site's short name, by site id.
    pub names: Vec<String>,
    /// Each site's kind, by site id.
    pub kinds: Vec<SiteKind>,
}

/// The running watcher.
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(super) dropped: Arc<Mutex<Vec<Dropped>>>,
}

impl Watch {
    /// Starts watching `table` with these costs; detaches through `links`.
    pub(super) fn start(
        cfg: BudgetConfig,
        traps: TrapCosts,
        table: Arc<SiteTable>,
        links: Arc<Mutex<Links>>,
        stats: Option<ProgStats>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let (s, d) = (stop.clone(), dropped.clone());
        let thread = std::thread::Builder::new()
            .name("ri-budget".into())
            .spawn(move || watch(cfg, traps, &table, &links, stats, &s, &d))
            .ok();
        Watch {
            stop,
            thread,
            dropped,
        }
    }

    /// Stops the thread (after a detach in progress).
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watcher's loop.
fn watch(
    cfg: BudgetConfig,
    traps: TrapCosts,
    table: &SiteTable,
    links: &Mutex<Links>,
    stats: Option<ProgStats>,
    stop: &AtomicBool,
    dropped: &Mutex<Vec<Dropped>>,
) {
    let start = Instant::now();
    let mut est = Estimator::new(cfg.pct, start.elapsed(), table.hits());
    // Without run-time statistics, a program run is taken to cost 1 µs.
    let mut prog_ns = 1000.0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(CHECK_EVERY);
        if let Some((t, n)) = stats.as_ref().map(ProgStats::totals)
            && n > 0
        {
            prog_ns = t as f64 / n as f64;
        }
        let hits = table.hits();
        let cost = |i: usize| {
            prog_ns
                + match cfg.kinds.get(i) {
                    Some(SiteKind::Nop5) => traps.nop5,
                    Some(SiteKind::Return) => 2.0 * traps.int3,
                    _ => traps.int3,
                }
        };
        let d = est.check(start.elapsed(), &hits, &cost);
        if d.is_empty() {
            continue;
        }
        let set: HashSet<u32> = d.iter().map(|d| d.site).collect();
        let t = Instant::now();
        let r = match links.lock() {
            Ok(mut l) => l.drop_sites(&set, table),
            Err(_) => Err("the attachments are poisoned".into()),
        };
        // The hottest few by name, then how many more.
        const NAMED: usize = 5;
        let mut names: Vec<String> = d
            .iter()
            .take(NAMED)
            .map(|x| {
                let name = cfg.names.get(x.site as usize).map_or("?", String::as_str);
                format!(
                    "{name} ({} hits, ~{:.0} ms of CPU in {:.1} s)",
                    hits.get(x.site as usize).copied().unwrap_or(0),
                    x.cost_ns / 1e6,
                    x.window_s
                )
            })
            .collect();
        if d.len() > NAMED {
            names.push(format!("and {} more sites", d.len() - NAMED));
        }
        match r {
            Ok(()) => eprintln!(
                "ri: over the {}% overhead budget: detached {} in {} ms; counts up to here kept, marked partial (--max-overhead off keeps every site)",
                cfg.pct,
                names.join(", "),
                t.elapsed().as_millis()
            ),
            Err(e) => eprintln!(
                "ri: over the {}% overhead budget: stopped counting {}, but could not detach: {e}",
                cfg.pct,
                names.join(", ")
            ),
        }
        if let Ok(mut all) = dropped.lock() {
            all.extend(d);
        }
    }
}
