//! The attachments the engine holds, each tagged with its sites, so the
//! overhead budget can detach some sites while the rest stay attached.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
    thread::JoinHandle,
};

use ri_common::{GEN_MASK, GEN_SHIFT, SITE_OFF};

use super::{multi, perf::PerfLink, sites::SiteTable};

/// One multi-uprobe link and what it covers, to build its replacement.
pub(super) struct MultiLink {
    /// The link.
    pub(super) fd: OwnedFd,
    /// The multi-uprobe program it runs (a duplicate descriptor).
    pub(super) prog: OwnedFd,
    /// The file its sites are in.
    pub(super) path: PathBuf,
    /// Return probes.
    pub(super) ret: bool,
    /// One process, or all.
    pub(super) pid: Option<u32>,
    /// `(file offset, cookie)` of each site.
    pub(super) sites: Vec<(u64, u64)>,
}

/// Every attachment, by kind.
#[derive(Default)]
pub(super) struct Links {
    /// Multi-uprobe links, each covering many sites.
    pub(super) multi: Vec<MultiLink>,
    /// Per-site perf events (USDT, and uprobes where multi-uprobe links
    /// are unavailable), with their site id.
    pub(super) perf: Vec<(u32, PerfLink)>,
    /// Threads releasing what the budget detached (each close waits for a
    /// grace period); joined when the engine drops.
    pub(super) releasing: Vec<JoinHandle<()>>,
}

/// The site id a cookie names.
pub(super) fn site_of(cookie: u64) -> u32 {
    (cookie >> 32) as u32
}

/// `cookie` with its generation bits set to `generation`.
fn with_generation(cookie: u64, generation: u32) -> u64 {
    (cookie & !(GEN_MASK as u64)) | (u64::from(generation << GEN_SHIFT) & GEN_MASK as u64)
}

impl Links {
    /// Multi-uprobe links and perf events (uprobes and USDT) held.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.multi.len(), self.perf.len())
    }

    /// Everything held, to release at once.
    pub(super) fn take_all(&mut self) -> (Vec<OwnedFd>, Vec<PerfLink>) {
        (
            std::mem::take(&mut self.multi)
                .into_iter()
                .map(|m| m.fd)
                .collect(),
            std::mem::take(&mut self.perf)
                .into_iter()
                .map(|p| p.1)
                .collect(),
        )
    }

    /// Detaches `drop`: marks them off in `table` at once (their hits stop
    /// running), closes their perf events, and replaces each multi-uprobe
    /// link holding one by a link without them. The replacement runs with
    /// its sites' next generation: it is created, then the generation is
    /// raised (from then on the new link's hits run, the old one's return
    /// at once), then the old link is closed, so no hit is counted twice
    /// or missed. A site in a replaced link that another link also holds
    /// (its entry companion, another pid) gets that link replaced too.
    /// Closing happens on another thread: the trap is gone when the close
    /// starts; its grace period is waited for there.
    pub(super) fn drop_sites(
        &mut self,
        drop: &HashSet<u32>,
        table: &SiteTable,
    ) -> Result<(), String> {
        for &s in drop {
            table.set_generation(s, SITE_OFF);
        }
        let holds = |l: &MultiLink, set: &HashSet<u32>| {
            l.sites.iter().any(|(_, c)| set.contains(&site_of(*c)))
        };
        let mut rebuild: Vec<bool> = self.multi.iter().map(|l| holds(l, drop)).collect();
        let mut bumped: HashSet<u32> = HashSet::new();
        loop {
            for (l, _) in self.multi.iter().zip(&rebuild).filter(|(_, r)| **r) {
                bumped.extend(
                    l.sites
                        .iter()
                        .map(|(_, c)| site_of(*c))
                        .filter(|s| !drop.contains(s)),
                );
            }
            let mut changed = false;
            for (l, r) in self.multi.iter().zip(rebuild.iter_mut()) {
                if !*r && holds(l, &bumped) {
                    *r = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let next: HashMap<u32, u32> = bumped
            .iter()
            .map(|&s| {
                (
                    s,
                    (table.generation(s).wrapping_add(1)) & (GEN_MASK >> GEN_SHIFT),
                )
            })
            .collect();
        let mut replacements: Vec<(usize, Option<MultiLink>)> = Vec::new();
        for (i, l) in self.multi.iter().enumerate().filter(|(i, _)| rebuild[*i]) {
            let sites: Vec<(u64, u64)> = l
                .sites
                .iter()
                .filter(|(_, c)| !drop.contains(&site_of(*c)))
                .map(|&(o, c)| (o, with_generation(c, next[&site_of(c)])))
                .collect();
            if sites.is_empty() {
                replacements.push((i, None));
                continue;
            }
            let fd = match multi::attach(l.prog.as_fd(), &l.path, &sites, l.ret, l.pid) {
                Ok(fd) => fd,
                // The process has exited: nothing left to replace.
                Err(multi::MultiError::Link(e)) if e.raw_os_error() == Some(libc::ESRCH) => {
                    replacements.push((i, None));
                    continue;
                }
                // The old links stay: the dropped sites are off, their
                // traps remain.
                Err(e) => return Err(format!("replacing a multi-uprobe link: {e}")),
            };
            let prog = l.prog.try_clone().map_err(|e| e.to_string())?;
            let (path, ret, pid) = (l.path.clone(), l.ret, l.pid);
            replacements.push((
                i,
                Some(MultiLink {
                    fd,
                    prog,
                    path,
                    ret,
                    pid,
                    sites,
                }),
            ));
        }
        for (&s, &g) in &next {
            table.set_generation(s, g);
        }
        let mut old: Vec<Box<dyn Send>> = Vec::new();
        for (i, new) in replacements.into_iter().rev() {
            let gone = match new {
                Some(n) => std::mem::replace(&mut self.multi[i], n),
                None => self.multi.remove(i),
            };
            old.push(Box::new(gone.fd));
        }
        let (perf, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.perf)
            .into_iter()
            .partition(|(s, _)| drop.contains(s));
        self.perf = kept;
        old.extend(perf.into_iter().map(|p| Box::new(p.1) as Box<dyn Send>));
        if !old.is_empty() {
            self.releasing
                .push(std::thread::spawn(move || super::release_concurrently(old)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_bits_replace_only_themselves() {
        let c = ri_common::cookie(7 | ri_common::SAVE_ARGS, 4321);
        let g = with_generation(c, 3);
        assert_eq!(site_of(g), 4321);
        assert_eq!(g & !(GEN_MASK as u64), c);
        assert_eq!((g as u32 & GEN_MASK) >> GEN_SHIFT, 3);
        assert_eq!(with_generation(g, 0), c);
    }
}
