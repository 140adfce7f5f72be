//! The engine's side of the overhead budget: mapping the `SITES` counters,
//! calibrating the trap cost and starting the watcher.

use std::{os::fd::AsFd, path::Path};

use super::{
    BudgetConfig, Engine, EngineError, Program, SiteKind, object, perf, release_concurrently,
    sites, watch,
};

/// The `SITES` array of `object`, mapped for `n` sites.
pub(super) fn site_table(object: &object::Object, n: u32) -> Result<sites::SiteTable, EngineError> {
    let fail = |reason: String| EngineError::Map {
        map: "SITES",
        reason,
    };
    let fd = object
        .map("SITES")
        .and_then(object::map_fd)
        .ok_or_else(|| fail("missing from the object".into()))?;
    sites::SiteTable::map(fd, n as usize).map_err(|e| fail(e.to_string()))
}

impl Engine {
    /// Starts the overhead budget (the engine must have been loaded with
    /// [`super::MapSizes::sites`] for every site): calibrates the trap cost
    /// on ri's own code, turns on BPF run-time statistics for the programs
    /// loaded so far, and starts the watcher. Returns the calibrated costs,
    /// for the note on stderr.
    pub fn start_budget(&mut self, cfg: BudgetConfig) -> Result<sites::TrapCosts, EngineError> {
        let Some(table) = self.sites.clone() else {
            return Err(EngineError::Map {
                map: "SITES",
                reason: "the budget needs the per-site counters loaded".into(),
            });
        };
        let traps = self.calibrate(cfg.kinds.contains(&SiteKind::Nop5))?;
        let progs = (self.progs.iter())
            .filter(|((p, _), _)| *p != Program::Bare)
            .filter_map(|(_, fd)| fd.try_clone().ok())
            .collect();
        let stats = sites::ProgStats::enable(progs);
        self.watch = Some(watch::Watch::start(
            cfg,
            traps,
            table,
            self.links.clone(),
            stats,
        ));
        Ok(traps)
    }

    /// The trap costs, measured by attaching the empty program to ri's own
    /// calibration functions (this process only) and timing calls of them;
    /// the nop5 one only when `nop5` sites are probed. The calibration
    /// probes are released on another thread.
    fn calibrate(&mut self, nop5: bool) -> Result<sites::TrapCosts, EngineError> {
        let fd = self
            .program(Program::Bare, false)?
            .try_clone_to_owned()
            .map_err(|e| EngineError::Load(e.to_string()))?;
        let pid = std::process::id();
        let mut attach = |path: &Path, offset: u64| {
            perf::attach_uprobe(fd.as_fd(), path, offset, None, false, Some(pid), 0)
                .map_err(|e| e.to_string())
        };
        let [(int3_fn, int3_at), (nop5_fn, nop5_at)] = sites::calibration_functions();
        let fail = |e: sites::SitesError| EngineError::Attach {
            site: "ri's calibration function".into(),
            reason: e.to_string(),
        };
        let (int3, l1) = sites::trap_cost(&int3_fn, int3_at, &mut attach).map_err(fail)?;
        let mut done = vec![l1];
        let nop5 = if nop5 {
            let (c, l2) = sites::trap_cost(&nop5_fn, nop5_at, &mut attach).map_err(fail)?;
            done.push(l2);
            c
        } else {
            int3
        };
        self.links()
            .releasing
            .push(std::thread::spawn(move || release_concurrently(done)));
        Ok(sites::TrapCosts { int3, nop5 })
    }

    /// The sites the budget detached so far.
    pub fn dropped(&self) -> Vec<crate::budget::Dropped> {
        self.watch
            .as_ref()
            .and_then(|w| w.dropped.lock().ok().map(|d| d.clone()))
            .unwrap_or_default()
    }
}
