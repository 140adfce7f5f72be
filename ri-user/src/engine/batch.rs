//! Whole per-CPU hash maps read in a few `BPF_MAP_LOOKUP_BATCH` calls
//! into buffers kept between reads (`ri serve`'s scrapes).

use ri_common::AggValue;

use super::{Engine, EngineError, object, sys};

/// One slot's per-CPU values (each padded to 8 bytes) merged.
pub(super) fn merge_cpus(bytes: &[u8]) -> AggValue {
    let size = std::mem::size_of::<AggValue>().div_ceil(8) * 8;
    bytes
        .chunks_exact(size)
        .fold(AggValue::default(), |mut a, c| {
            // SAFETY: AggValue is plain u64 words; `c` holds one.
            a.merge(&unsafe { std::ptr::read_unaligned(c.as_ptr() as *const AggValue) });
            a
        })
}

/// Buffers of batched per-CPU hash map reads, kept between reads so a
/// scrape allocates nothing for them.
#[derive(Debug, Default)]
pub struct HashBatch {
    keys: Vec<u8>,
    values: Vec<u8>,
    len: usize,
    key_size: usize,
    stride: usize,
}

impl HashBatch {
    /// The last read's entries: key bytes and the value merged over CPUs.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], AggValue)> + '_ {
        (0..self.len).map(move |i| {
            (
                &self.keys[i * self.key_size..(i + 1) * self.key_size],
                merge_cpus(&self.values[i * self.stride..(i + 1) * self.stride]),
            )
        })
    }
}

impl Engine {
    /// Reads every entry of the per-CPU hash map `name` (keys of
    /// `key_size` bytes, [`AggValue`] values) into `buf` in a few batched
    /// syscalls; an error where the kernel refuses batches (iterate then).
    pub fn read_hash_batch(
        &self,
        name: &'static str,
        key_size: usize,
        buf: &mut HashBatch,
    ) -> Result<(), EngineError> {
        let fail = |reason: String| EngineError::Map { map: name, reason };
        let map = self
            .object
            .map(name)
            .ok_or_else(|| fail("missing from the object".into()))?;
        let fd = object::map_fd(map).ok_or_else(|| fail("not a hash map".into()))?;
        let cpus = aya::util::nr_cpus().map_err(|(p, e)| fail(format!("{p}: {e}")))?;
        let size = std::mem::size_of::<AggValue>();
        buf.len = 0;
        buf.key_size = key_size;
        buf.stride = size.div_ceil(8) * 8 * cpus;
        buf.len = sys::lookup_hash_batch(fd, key_size, size, cpus, &mut buf.keys, &mut buf.values)
            .map_err(|e| fail(format!("batched lookup: {e}")))?;
        Ok(())
    }
}
