//! The histogram layout of `HIST`: log-linear buckets and their per-CPU value.
//!
//! Values below `2^(HIST_SUB_BITS + 1)` (32) have a bucket each; above, every
//! power of two `[2^m, 2^(m+1))` is cut into `2^HIST_SUB_BITS` (16) equal
//! sub-buckets, as HdrHistogram does. A bucket is at most 1/16 of its lower
//! edge wide, so the midpoint of the values seen in it is within 3.2% of any
//! of them. The layout is fixed: histograms from two runs or two nodes merge
//! by adding bucket by bucket ([`AggValue::merge`]), and each bucket's upper
//! edge is a Prometheus `le` boundary ([`hist_bucket_range`]).

/// Bits of sub-bucket index within a power of two (16 sub-buckets).
pub const HIST_SUB_BITS: u32 = 4;
/// Sub-buckets per power of two.
const SUB: u32 = 1 << HIST_SUB_BITS;
/// Number of buckets of `HIST`: 16 one-value buckets (0..16), then 16 per
/// power of two from `2^4` to `2^63`.
pub const HIST_BUCKETS: u32 = SUB + (64 - HIST_SUB_BITS) * SUB;

/// The bucket of `v`: `v` itself below 32 (exact), else `(m - 3) * 16 + s`
/// where `m` is the index of the top bit and `s` the next four bits.
#[inline(always)]
pub const fn hist_bucket(v: u64) -> u32 {
    if v < SUB as u64 {
        return v as u32;
    }
    let msb = 63 - v.leading_zeros();
    let sub = (v >> (msb - HIST_SUB_BITS)) as u32 & (SUB - 1);
    (msb - HIST_SUB_BITS + 1) * SUB + sub
}

/// The values bucket `b` holds, `[lo, hi)`; the last bucket's `hi` is
/// `u64::MAX` (which it also holds). `hi` is the bucket's Prometheus `le`
/// boundary less one: a bucket holds integers, so `v < hi` is `v <= hi - 1`.
pub const fn hist_bucket_range(b: u32) -> (u64, u64) {
    if b < SUB {
        return (b as u64, b as u64 + 1);
    }
    let b = if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    };
    let msb = b / SUB + HIST_SUB_BITS - 1;
    let width = 1u64 << (msb - HIST_SUB_BITS);
    let lo = (1u64 << msb) + (b % SUB) as u64 * width;
    (lo, lo.saturating_add(width))
}

/// The per-CPU value of an aggregation slot (`AGG`, `AGG_SMALL`, `FAST`):
/// hits, and for `HIST` the sum, least and greatest value among them. A
/// slot with `count == 0` (another CPU's, not yet hit here) has no min/max.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggValue {
    /// Hits.
    pub count: u64,
    /// Sum of the values (wrapping; two's complement for signed values).
    pub sum: u64,
    /// Least value (unsigned order).
    pub min: u64,
    /// Greatest value (unsigned order).
    pub max: u64,
}

impl AggValue {
    /// A slot holding one value.
    #[inline(always)]
    pub const fn one(v: u64) -> Self {
        AggValue {
            count: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    /// Adds one value.
    #[inline(always)]
    pub fn add(&mut self, v: u64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(v);
    }

    /// Adds another slot of the same bucket (another CPU's, another run's).
    pub fn merge(&mut self, o: &AggValue) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        self.count += o.count;
        self.sum = self.sum.wrapping_add(o.sum);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range() {
        assert_eq!(HIST_BUCKETS, 976);
        let mut next = 0u64;
        for b in 0..HIST_BUCKETS {
            let (lo, hi) = hist_bucket_range(b);
            assert_eq!(lo, next, "bucket {b}");
            assert_eq!(hist_bucket(lo), b);
            assert_eq!(hist_bucket(hi - 1), b);
            assert!(b < 32 || (hi - lo) * 16 <= lo, "bucket {b} too wide");
            next = hi;
        }
        assert_eq!(next, u64::MAX);
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
        for v in 0..32 {
            assert_eq!(hist_bucket_range(hist_bucket(v)), (v, v + 1));
        }
    }

    #[test]
    fn slots_merge() {
        let mut a = AggValue::default();
        a.add(7);
        a.add(3);
        let mut b = AggValue::one(9);
        b.merge(&a);
        b.merge(&AggValue::default());
        assert_eq!(
            b,
            AggValue {
                count: 3,
                sum: 19,
                min: 3,
                max: 9
            }
        );
    }
}
