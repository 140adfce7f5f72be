//! The overhead budget's policy: how much CPU time ri may add to the probed
//! processes (`--max-overhead`), estimated from per-site hits times each
//! site's cost per hit, and which sites to detach, hottest first, to stay
//! under it.

use std::{collections::VecDeque, time::Duration};

/// The budget when a probe string matches more than one site, in percent.
pub const DEFAULT_PCT: f64 = 5.0;

/// How often the estimate is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(10);

/// The estimate's window: the cost of the last second (or since attaching,
/// counted as at least a second, so a short burst may spend a second's
/// budget at once).
const WINDOW: Duration = Duration::from_secs(1);

/// How often a snapshot of the hits is kept for the window.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);

/// `--max-overhead`: a percentage, `off`, or unset (on at
/// [`DEFAULT_PCT`] only for wildcards).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum MaxOverhead {
    /// Not given: the default applies to wildcards.
    #[default]
    Auto,
    /// `off`: never detach.
    Off,
    /// A budget in percent of one CPU.
    Pct(f64),
}

impl MaxOverhead {
    /// Parses `PCT` (`5`, `0.5`, `5%`; above 0, at most 100), `off`, or
    /// `auto` (the default).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MaxOverhead::Off);
        }
        if s == "auto" {
            return Ok(MaxOverhead::Auto);
        }
        let n = s.strip_suffix('%').unwrap_or(s).trim();
        match n.parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(MaxOverhead::Pct(p)),
            _ => Err(format!(
                "--max-overhead takes a percentage above 0 and at most 100, or off; not '{s}'"
            )),
        }
    }

    /// The value of a `--max-overhead` flag meaning this (none for the
    /// default).
    pub fn flag(self) -> Option<String> {
        match self {
            MaxOverhead::Auto => None,
            MaxOverhead::Off => Some("off".into()),
            MaxOverhead::Pct(p) => Some(p.to_string()),
        }
    }

    /// The budget in percent, or `None` when off; `wildcard`: some probe
    /// string matched more than one site.
    pub fn resolve(self, wildcard: bool) -> Option<f64> {
        match self {
            MaxOverhead::Auto => wildcard.then_some(DEFAULT_PCT),
            MaxOverhead::Off => None,
            MaxOverhead::Pct(p) => Some(p),
        }
    }
}

/// A site the budget detached.
#[derive(Clone, Debug)]
pub struct Dropped {
    /// Site id.
    pub site: u32,
    /// Its estimated cost over the window when detached, in ns.
    pub cost_ns: f64,
    /// The window, in seconds.
    pub window_s: f64,
}

/// The running estimate: hits snapshots over the window and each site's
/// cost per hit.
pub struct Estimator {
    pct: f64,
    /// Hits of each site at the window's snapshots, oldest first.
    snaps: VecDeque<(Duration, Vec<u64>)>,
    /// Sites detached already (not charged any more).
    off: Vec<bool>,
}

impl Estimator {
    /// Starts at time `now` (since any fixed instant) with `hits`.
    pub fn new(pct: f64, now: Duration, hits: Vec<u64>) -> Self {
        let off = vec![false; hits.len()];
        Estimator {
            pct,
            snaps: VecDeque::from([(now, hits)]),
            off,
        }
    }

    /// Checks the budget at `now` with the sites' `hits` so far and
    /// `cost` per hit (ns): the sites to detach (hottest first) until the
    /// window's estimate is back within the budget, or none.
    pub fn check(
        &mut self,
        now: Duration,
        hits: &[u64],
        cost: &dyn Fn(usize) -> f64,
    ) -> Vec<Dropped> {
        let (t0, base) = self.snaps.front().expect("one snapshot at least");
        let window_s = now.saturating_sub(*t0).as_secs_f64();
        let span = now.saturating_sub(*t0).max(WINDOW).as_secs_f64() * 1e9;
        let allowed = span * self.pct / 100.0;
        let mut spent: Vec<(usize, f64)> = hits
            .iter()
            .zip(base)
            .enumerate()
            .filter(|(i, _)| !self.off[*i])
            .map(|(i, (n, b))| (i, n.saturating_sub(*b) as f64 * cost(i)))
            .filter(|(_, c)| *c > 0.0)
            .collect();
        let mut total: f64 = spent.iter().map(|s| s.1).sum();
        let mut dropped = Vec::new();
        if total > allowed {
            spent.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (i, c) in spent {
                if total <= allowed {
                    break;
                }
                total -= c;
                self.off[i] = true;
                dropped.push(Dropped {
                    site: i as u32,
                    cost_ns: c,
                    window_s,
                });
            }
        }
        let last = self.snaps.back().map_or(Duration::ZERO, |s| s.0);
        if now.saturating_sub(last) >= SNAPSHOT_EVERY {
            self.snaps.push_back((now, hits.to_vec()));
            while self
                .snaps
                .get(1)
                .is_some_and(|s| now.saturating_sub(s.0) >= WINDOW)
            {
                self.snaps.pop_front();
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percentages_and_off() {
        assert_eq!(MaxOverhead::parse("5").unwrap(), MaxOverhead::Pct(5.0));
        assert_eq!(MaxOverhead::parse("0.5%").unwrap(), MaxOverhead::Pct(0.5));
        assert_eq!(MaxOverhead::parse("OFF").unwrap(), MaxOverhead::Off);
        for bad in ["0", "-1", "101", "abc", "", "nan"] {
            assert!(MaxOverhead::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(MaxOverhead::Auto.resolve(true), Some(DEFAULT_PCT));
        assert_eq!(MaxOverhead::Auto.resolve(false), None);
        assert_eq!(MaxOverhead::Pct(2.0).resolve(false), Some(2.0));
    }

    #[test]
    fn the_hottest_site_goes_first_and_alone() {
        let ms = Duration::from_millis;
        let mut e = Estimator::new(5.0, ms(0), vec![0; 3]);
        // 1 µs a hit: 10 ms of a 1 s window is 1%.
        let cost = |_| 1000.0;
        assert!(e.check(ms(10), &[100, 10, 1], &cost).is_empty());
        let d = e.check(ms(20), &[60_000, 20, 2], &cost);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].site, 0);
        assert!(e.check(ms(30), &[90_000, 30, 3], &cost).is_empty());
    }
}
