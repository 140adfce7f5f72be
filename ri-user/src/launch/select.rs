//! `--comm`/`--exe` in a launch: the checks, which pids resolve names and
//! end the run, and the watcher started after loading.

use super::Options;
use crate::{
    Error,
    engine::{Engine, Selecting},
    select::{Matcher, Watcher},
};

impl<'a> Options<'a> {
    /// The processes whose mappings resolve library names: `-p`, and the
    /// first process `--comm`/`--exe` matches now.
    pub(crate) fn resolving_pids(&self) -> Vec<u32> {
        let mut pids = self.pids.to_vec();
        if let Ok(m) = self.select.matcher() {
            pids.extend(m.running().first().map(|f| f.pid));
        }
        pids
    }

    /// The processes whose exit ends the run: `-p`, unless processes are
    /// chosen by name too (then the run waits for more).
    pub(crate) fn ending_pids(&self) -> &'a [u32] {
        if self.select.is_empty() {
            self.pids
        } else {
            &[]
        }
    }
}

/// Refuses `--comm`/`--exe` with `-c`, and names that cannot match.
pub(crate) fn check(opts: &Options) -> Result<(), Error> {
    if opts.select.is_empty() {
        return Ok(());
    }
    if opts.command.is_some() {
        return Err(Error::Usage(
            "-c cannot be combined with --comm or --exe".into(),
        ));
    }
    opts.select.matcher()?;
    Ok(())
}

/// A launch's choice of processes: the matcher when choosing by name.
pub(crate) struct Launching(Option<Matcher>);

impl Launching {
    /// The matcher of `opts`' `--comm`/`--exe`, if any.
    pub(crate) fn new(opts: &Options) -> Result<Self, Error> {
        Ok(Launching(match opts.select.is_empty() {
            true => None,
            false => Some(opts.select.matcher()?),
        }))
    }

    /// How the object is loaded for it.
    pub(crate) fn selecting(&self) -> Selecting {
        self.0.as_ref().map(|m| m.selecting()).unwrap_or_default()
    }

    /// The pids to attach for: `pids`, or none when chosen by name (every
    /// process is attached; the kernel filters).
    pub(crate) fn attach_pids(&self, pids: &[u32]) -> Vec<u32> {
        match self.0 {
            Some(_) => Vec::new(),
            None => pids.to_vec(),
        }
    }

    /// Starts the watcher on the loaded `engine` in `rt` (before
    /// attaching, so no exec is missed): the processes chosen by name, kept up to date, and
    /// those selected at the start.
    pub(crate) fn start(
        &self,
        rt: Option<&tokio::runtime::Runtime>,
        engine: &mut Engine,
        opts: &Options,
    ) -> Result<Option<(Watcher, Vec<u32>)>, Error> {
        let Some(m) = &self.0 else {
            return Ok(None);
        };
        // Background instruments (ri serve, ri top) read no notices.
        let Some(rt) = rt else {
            return Err(Error::Usage(
                "--comm and --exe apply to commands run in front, not background instruments"
                    .into(),
            ));
        };
        let _in = rt.enter();
        Watcher::start(engine, m, opts.pids, opts.quiet).map(Some)
    }
}
