//! The one event loop every attaching command runs: a session of instruments over a stop, a watcher and timers.
//!
//! A command is a session with one instrument: `trace` hands it a sink over
//! the ring buffer, `agg` an aggregation printing at intervals; a session
//! run in one process would hand it several. The loop owns what they share:
//! when the run ends ([`Stop`]), the processes chosen by name as they come
//! (the watcher), each instrument's ring buffer (read when the kernel wakes
//! the reader and on the reader tick, with batches waiting on CPUs asked
//! for on the flush tick) and the periodic work the instruments ask for
//! ([`Tick`]). `serve` keeps its own loop: it answers HTTP scrapes and
//! SIGHUP reloads, attaches and detaches instruments while it runs and has
//! no end but a signal, none of which an instrument's hooks describe.

use std::{future::poll_fn, task::Poll, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, time::Instant};

use super::Stop;
use crate::{Error, select::Watcher};

/// Periodic work an instrument asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Re-read the processes' mappings while they live: stacks and late
    /// reads must still resolve once they have exited.
    Maps,
    /// Read the names of labelled values while the processes live.
    Names,
    /// The instrument's own period (`--interval` prints); the first comes
    /// after one period, every other tick's at once.
    Interval,
}

/// What the loop runs: hooks called as the run goes and when it ends.
pub(crate) trait Instrument {
    /// The ring buffer it reads, if any (taken once, when the loop starts).
    fn ring(&mut self) -> Option<RingBuf<MapData>> {
        None
    }

    /// Whether the kernel holds its events in per-CPU batches.
    fn batched(&self) -> bool {
        false
    }

    /// Asks the kernel for the batches waiting on CPUs (sent to the ring):
    /// those that have waited a while, or with `all` (the run ends) every one.
    fn flush(&mut self, _all: bool) -> Result<(), Error> {
        Ok(())
    }

    /// Reads the records waiting in its ring.
    fn on_ring(&mut self, _ring: &mut RingBuf<MapData>) {}

    /// The periodic work it needs, each with its period.
    fn ticks(&self) -> Vec<(Tick, Duration)> {
        Vec::new()
    }

    /// Does one tick's work.
    fn on_tick(&mut self, _tick: Tick) -> Result<(), Error> {
        Ok(())
    }

    /// A process the watcher chose by name since the start.
    fn on_new_process(&mut self, _pid: u32) {}

    /// The run has ended (its ring read a last time): the last print.
    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// What a timer wakes.
#[derive(Clone, Copy, Debug)]
enum Wake {
    /// Read the ring: the kernel does not wake the reader for every event.
    Ring,
    /// Ask for batches left waiting on a CPU that saw no more events.
    Flush,
    /// The instrument's own tick.
    Own(Tick),
}

/// One periodic wake of one instrument.
struct Timer {
    at: Instant,
    every: Duration,
    owner: usize,
    wake: Wake,
}

/// The instruments' timers, each re-armed one period after it fired.
struct Timers(Vec<Timer>);

impl Timers {
    /// Returns the next timer due once it is (cancel-safe: a timer is
    /// re-armed only when it is returned).
    async fn next(&mut self) -> (usize, Wake) {
        let Some(t) = self.0.iter_mut().min_by_key(|t| t.at) else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(t.at).await;
        t.at = Instant::now() + t.every;
        (t.owner, t.wake)
    }
}

/// A ring with records waiting, its readiness cleared (before it is read,
/// so records that come meanwhile wake it again). The rings are asked in
/// turn from `from`, which moves past the one returned: a busy ring does
/// not keep the others waiting.
async fn ready(
    rings: &mut [Option<AsyncFd<RingBuf<MapData>>>],
    from: &mut usize,
) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let n = rings.len();
        for i in (0..n).map(|k| (*from + k) % n) {
            if let Some(r) = &mut rings[i]
                && let Poll::Ready(g) = r.poll_read_ready_mut(cx)
            {
                g?.clear_ready();
                *from = i + 1;
                return Poll::Ready(Ok(i));
            }
        }
        Poll::Pending
    })
    .await
}

/// Runs `instruments` in `rt` until `stop` says the run ends, telling them
/// of the processes `watcher` chooses; then reads each ring a last time
/// and finishes them. Returns the `-c` command's exit status.
pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    mut stop: Stop,
    mut watcher: Option<Watcher>,
    instruments: &mut [&mut dyn Instrument],
) -> Result<Option<i32>, Error> {
    rt.block_on(async {
        let now = Instant::now();
        let mut timers = Vec::new();
        let mut rings = Vec::new();
        for (owner, inst) in instruments.iter_mut().enumerate() {
            let ring = match inst.ring() {
                // SAFETY: the ring buffer owns its map fd for as long as
                // the AsyncFd holds it.
                Some(r) => Some(unsafe { AsyncFd::register(r) }.map_err(|e| e.into_parts().1)?),
                None => None,
            };
            let timer = |wake, every: Duration, at| Timer {
                at,
                every,
                owner,
                wake,
            };
            if ring.is_some() {
                let tick = Duration::from_millis(ri_common::READER_TICK_MS);
                timers.push(timer(Wake::Ring, tick, now));
                if inst.batched() {
                    let flush = Duration::from_millis(ri_common::FLUSH_TICK_MS);
                    timers.push(timer(Wake::Flush, flush, now));
                }
            }
            for (tick, period) in inst.ticks() {
                let at = match tick {
                    Tick::Interval => now + period,
                    _ => now,
                };
                timers.push(timer(Wake::Own(tick), period, at));
            }
            rings.push(ring);
        }
        let mut timers = Timers(timers);
        let mut next_ring = 0;
        loop {
            tokio::select! {
                i = ready(&mut rings, &mut next_ring) => {
                    let i = i?;
                    if let Some(r) = &mut rings[i] {
                        instruments[i].on_ring(r.get_mut());
                    }
                }
                (i, wake) = timers.next() => {
                    let inst = &mut instruments[i];
                    match (wake, &mut rings[i]) {
                        (Wake::Ring, Some(r)) => inst.on_ring(r.get_mut()),
                        (Wake::Flush, Some(r)) => {
                            inst.flush(false)?;
                            inst.on_ring(r.get_mut());
                        }
                        (Wake::Own(tick), _) => inst.on_tick(tick)?,
                        _ => {}
                    }
                }
                c = crate::select::changed(&mut watcher) => {
                    for pid in c? {
                        for inst in instruments.iter_mut() {
                            inst.on_new_process(pid);
                        }
                    }
                }
                r = stop.wait() => {
                    r?;
                    break;
                }
            }
        }
        let status = stop.finish();
        for (inst, ring) in instruments.iter_mut().zip(&mut rings) {
            if let Some(r) = ring {
                inst.flush(true)?;
                inst.on_ring(r.get_mut());
            }
            inst.finish()?;
        }
        Ok(status)
    })
}
