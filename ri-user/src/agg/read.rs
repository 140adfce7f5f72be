//! Reading the kernel's aggregation map: per-CPU values merged, histogram
//! buckets gathered under their (site, key).

use std::collections::BTreeMap;

use aya::maps::{PerCpuArray, PerCpuHashMap, PerCpuValues};
use ri_common::{AGG_KEY_BYTES, AggKey, AggValue, HIST_BUCKETS, SmallAggKey, plan_flags};

use super::AggError;
use crate::{
    engine::{Engine, HashBatch},
    session::ProbeSet,
};

/// One key's hits: the total and, for histograms, each bucket's hits, sum,
/// least and greatest value ([`ri_common::hist`] layout), so the key's
/// count, sum, min and max are exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// Hits.
    pub count: u64,
    /// Non-empty buckets by index (all in bucket 0 for counts).
    pub buckets: BTreeMap<u32, AggValue>,
}

impl Cell {
    /// Adds one bucket's slot.
    pub fn add(&mut self, bucket: u32, v: &AggValue) {
        if v.count == 0 {
            return;
        }
        self.count += v.count;
        self.buckets
            .entry(bucket.min(HIST_BUCKETS - 1))
            .or_default()
            .merge(v);
    }
}

/// Where a cell is: plan id, site id, key bytes.
pub type CellKey = (u32, u32, Vec<u8>);

/// The map's content: (plan, site, key bytes) → hits.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Cells by plan, site and key bytes.
    pub cells: BTreeMap<CellKey, Cell>,
}

impl Snapshot {
    /// What was added since `before`. Counts and sums are the differences;
    /// a bucket's min and max stay those of the whole run (the kernel keeps
    /// no per-interval extremes), which lie inside the bucket.
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        let mut cells = BTreeMap::new();
        for (k, c) in &self.cells {
            let mut d = Cell::default();
            for (b, v) in &c.buckets {
                let old = before
                    .cells
                    .get(k)
                    .and_then(|o| o.buckets.get(b))
                    .copied()
                    .unwrap_or_default();
                let mut v = *v;
                v.count -= old.count.min(v.count);
                v.sum = v.sum.wrapping_sub(old.sum);
                d.add(*b, &v);
            }
            if d.count > 0 {
                cells.insert(k.clone(), d);
            }
        }
        Snapshot { cells }
    }

    /// Hits over all keys.
    pub fn total(&self) -> u64 {
        self.cells.values().map(|c| c.count).sum()
    }
}

/// One slot's per-CPU values merged.
fn merged(per_cpu: &PerCpuValues<AggValue>) -> AggValue {
    per_cpu.iter().fold(AggValue::default(), |mut a, v| {
        a.merge(v);
        a
    })
}

/// Counters beside the map.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Updates dropped because the map was full.
    pub dropped: u64,
    /// Returns skipped because nothing was saved at their call's entry.
    pub no_entry: u64,
}

fn err(e: impl std::fmt::Display) -> AggError {
    AggError::Read(e.to_string())
}

/// Reads the whole aggregation map, and the `FAST` slots of the plans of
/// `set` that use them.
pub fn snapshot(engine: &Engine, set: &ProbeSet) -> Result<Snapshot, crate::Error> {
    snapshot_with(engine, set, &mut HashBatch::default())
}

/// [`snapshot`] reading the maps in batches through `buf`, kept between
/// reads (each key read one by one where the kernel refuses batches).
pub fn snapshot_with(
    engine: &Engine,
    set: &ProbeSet,
    buf: &mut HashBatch,
) -> Result<Snapshot, crate::Error> {
    let mut snap = Snapshot::default();
    let small = set
        .probes
        .iter()
        .any(|p| p.plan.plan.flags & plan_flags::SMALL_KEY != 0);
    // Key layout: plan, site, bucket, pad (u32 each), then the key bytes.
    let word =
        |k: &[u8], i: usize| u32::from_ne_bytes(k[i * 4..i * 4 + 4].try_into().unwrap_or_default());
    if engine
        .read_hash_batch("AGG", std::mem::size_of::<AggKey>(), buf)
        .is_ok()
    {
        for (k, v) in buf.entries() {
            snap.cells
                .entry((word(k, 0), word(k, 1), k[16..].to_vec()))
                .or_default()
                .add(word(k, 2), &v);
        }
    } else {
        let map: PerCpuHashMap<_, AggKey, AggValue> =
            PerCpuHashMap::try_from(engine.map("AGG")?).map_err(err)?;
        for item in map.iter() {
            let (k, per_cpu) = item.map_err(err)?;
            snap.cells
                .entry((k.plan, k.site, k.key.to_vec()))
                .or_default()
                .add(k.bucket, &merged(&per_cpu));
        }
    }
    if small {
        let mut add = |plan, site, bucket, word: u64, v: &AggValue| {
            let mut key = vec![0; AGG_KEY_BYTES];
            key[..8].copy_from_slice(&word.to_ne_bytes());
            snap.cells
                .entry((plan, site, key))
                .or_default()
                .add(bucket, v);
        };
        if engine
            .read_hash_batch("AGG_SMALL", std::mem::size_of::<SmallAggKey>(), buf)
            .is_ok()
        {
            for (k, v) in buf.entries() {
                let w = u64::from_ne_bytes(k[16..24].try_into().unwrap_or_default());
                add(word(k, 0), word(k, 1), word(k, 2), w, &v);
            }
        } else {
            let map: PerCpuHashMap<_, SmallAggKey, AggValue> =
                PerCpuHashMap::try_from(engine.map("AGG_SMALL")?).map_err(err)?;
            for item in map.iter() {
                let (k, per_cpu) = item.map_err(err)?;
                add(k.plan, k.site, k.bucket, k.key, &merged(&per_cpu));
            }
        }
    }
    fast(engine, set, &mut snap)?;
    Ok(snap)
}

/// Adds the `FAST` slots: a site's count, or its buckets, under an empty key.
fn fast(engine: &Engine, set: &ProbeSet, snap: &mut Snapshot) -> Result<(), crate::Error> {
    let uses = |f| set.probes.iter().any(|p| p.plan.plan.flags & f != 0);
    if !uses(plan_flags::COUNT_FAST) && !uses(plan_flags::HIST_FAST) {
        return Ok(());
    }
    let values = engine.fast_values(set.fast_slots())?;
    let slot = |i: u32| -> Result<AggValue, AggError> {
        values
            .get(i as usize)
            .copied()
            .ok_or_else(|| AggError::Read(format!("FAST slot {i} past its end")))
    };
    for (id, site) in set.sites.iter().enumerate() {
        let flags = set.probes[site.probe].plan.plan.flags;
        let id = id as u32;
        let mut cell = Cell::default();
        if flags & plan_flags::COUNT_FAST != 0 {
            cell.add(0, &slot(id)?);
        } else if flags & plan_flags::HIST_FAST != 0 {
            for b in 0..HIST_BUCKETS {
                cell.add(b, &slot(id * HIST_BUCKETS + b)?);
            }
        } else {
            continue;
        }
        if cell.count > 0 {
            snap.cells
                .insert((site.probe as u32, id, vec![0; AGG_KEY_BYTES]), cell);
        }
    }
    Ok(())
}

/// Hits of plan `plan` (flagged `HITS`), summed over CPUs.
pub fn hits(engine: &Engine, plan: u32) -> Result<u64, crate::Error> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(engine.map("HITS")?).map_err(err)?;
    Ok(map.get(&plan, 0).map_err(err)?.iter().sum())
}

/// Reads the dropped-update and skipped-return counters.
pub fn stats(engine: &Engine) -> Result<Stats, crate::Error> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(engine.map("AGG_DROPPED")?).map_err(err)?;
    let v = map.get(&0, 0).map_err(err)?;
    Ok(Stats {
        dropped: v.iter().sum(),
        no_entry: engine.no_entry()?,
    })
}
