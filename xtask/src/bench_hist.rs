//! Whether `ri hist`'s log-linear buckets (count, sum, min and max per
//! bucket) cost within 1.05 times the log2 counters they replaced: the
//! target lines of the aggregation section.

use std::fmt::Write as _;

use crate::bench::verdict;

/// The log2 layout's per-hit ns in a quiet run (bench/RESULTS.md of commit
/// 0353e4c): bare program, `ri count`, `ri hist --value arg1`, and with
/// `--by 'arg0 % 16'`.
const LOG2: [f64; 4] = [468.1, 491.4, 496.9, 590.5];

/// The target lines: each histogram's ratio to the bare program and to
/// `ri count` of this run, over the same ratios of the log2 layout. The
/// count ratio takes less of the machine's noise between runs (count's
/// path did not change but for its slot's size).
pub fn targets(bare: f64, count: f64, hist: f64, hist_by: f64) -> String {
    let [b0, c0, h0, hb0] = LOG2;
    let mut s = String::new();
    for (name, now, then) in [("hist", hist, h0), ("hist --by", hist_by, hb0)] {
        let by_bare = (now / bare) / (then / b0);
        let by_count = (now / count) / (then / c0);
        let _ = writeln!(
            s,
            "- {name}, log-linear buckets against the log2 counters they replaced \
             ({then:.1} ns, {:.3} × bare, {:.3} × count in their run): {:.3} × bare now, \
             {by_bare:.3} of before (target ≤ 1.05: {}); {:.3} × count now, {by_count:.3} of \
             before (target ≤ 1.05: {})",
            then / b0,
            then / c0,
            now / bare,
            verdict(by_bare <= 1.05),
            now / count,
            verdict(by_count <= 1.05),
        );
    }
    s
}
