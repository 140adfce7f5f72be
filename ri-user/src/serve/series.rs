//! An instrument's series: stable ids with their label text rendered once,
//! hits carried across attachments, a cap, and their exposition text.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    hash::{BuildHasher, RandomState},
};

use ri_common::hist_bucket_range;

use crate::agg;

/// The id of a series refused by the cap.
pub const REFUSED: u32 = u32::MAX;

/// Powers of two exported at full resolution (16 buckets each, which
/// `histogram_quantile` needs to stay within a few percent): the top ones
/// of the range, where the tail and its p99 lie. Below them, fine buckets
/// merge 4 at a time, so a series has at most 128 + 4 per further power of
/// two `le` lines, where it had 16 per power of two.
pub const FULL_OCTAVES: u32 = 8;

/// Hits of one series: count, wrapping sum, hits per fine bucket (sorted).
#[derive(Debug, Default, Clone)]
pub struct Hits {
    count: u64,
    sum: u64,
    buckets: Vec<(u32, u64)>,
}

impl Hits {
    fn clear(&mut self) {
        self.count = 0;
        self.sum = 0;
        self.buckets.clear();
    }

    fn add_bucket(&mut self, b: u32, n: u64) {
        match self.buckets.binary_search_by_key(&b, |e| e.0) {
            Ok(i) => self.buckets[i].1 += n,
            Err(i) => self.buckets.insert(i, (b, n)),
        }
    }

    fn add_cell(&mut self, c: &agg::Cell) {
        self.count += c.count;
        for (b, v) in &c.buckets {
            self.sum = self.sum.wrapping_add(v.sum);
            self.add_bucket(*b, v.count);
        }
    }

    fn take_from(&mut self, other: &mut Hits) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        for &(b, n) in &other.buckets {
            self.add_bucket(b, n);
        }
        other.clear();
    }
}

/// One series: its label text (`a="x",b="y"`), the hits of attachments
/// gone, and those of the current one.
#[derive(Debug)]
struct Series {
    text: String,
    base: Hits,
    now: Hits,
}

/// The series of one metric, admitted up to a cap.
#[derive(Debug)]
pub struct Table {
    cap: usize,
    series: Vec<Series>,
    by_text: HashMap<String, u32>,
    /// Hashes of the label texts refused, to count each once; cleared when
    /// it holds [`Table::refused_max`] (a series refused after that many
    /// others is counted again).
    refused: HashSet<u64>,
    hasher: RandomState,
    dropped: u64,
    /// Fine bucket range of the histogram, only ever widened.
    range: Option<(u32, u32)>,
    /// `le` texts of the current range.
    les: Vec<String>,
    les_for: (u32, u32),
}

/// Renders label pairs as `a="x",b="y"`, values escaped.
pub fn render(labels: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

impl Table {
    /// A table admitting `cap` series.
    pub fn new(cap: usize) -> Self {
        Table {
            cap,
            series: Vec::new(),
            by_text: HashMap::new(),
            refused: HashSet::new(),
            hasher: RandomState::new(),
            dropped: 0,
            range: None,
            les: Vec::new(),
            les_for: (0, 0),
        }
    }

    fn refused_max(&self) -> usize {
        (self.cap * 4).max(4096)
    }

    /// The id of the series of label text `text`: admitted while there is
    /// room, else [`REFUSED`] (counted once).
    pub fn id(&mut self, text: String) -> u32 {
        if let Some(&id) = self.by_text.get(&text) {
            return id;
        }
        if self.series.len() >= self.cap {
            if self.refused.len() >= self.refused_max() {
                self.refused.clear();
            }
            if self.refused.insert(self.hasher.hash_one(&text)) {
                self.dropped += 1;
            }
            return REFUSED;
        }
        let id = self.series.len() as u32;
        self.by_text.insert(text.clone(), id);
        self.series.push(Series {
            text,
            base: Hits::default(),
            now: Hits::default(),
        });
        id
    }

    /// Series refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Series admitted.
    pub fn admitted(&self) -> usize {
        self.series.len()
    }

    /// Forgets the current attachment's hits, before reading them again.
    pub fn begin(&mut self) {
        for s in &mut self.series {
            s.now.clear();
        }
    }

    /// Adds `cell` to the current hits of series `id`.
    pub fn add(&mut self, id: u32, cell: &agg::Cell) {
        if let Some(s) = self.series.get_mut(id as usize) {
            s.now.add_cell(cell);
        }
    }

    /// Keeps the current hits for good (their attachment is going).
    pub fn carry(&mut self) {
        for s in &mut self.series {
            let Series { base, now, .. } = s;
            base.take_from(now);
        }
    }

    /// Writes the series as counter `name` (classic text format).
    pub fn write_counter(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(
            out,
            "# HELP {name}_total {help}\n# TYPE {name}_total counter\n"
        );
        for s in &self.series {
            out.push_str(name);
            out.push_str("_total");
            if !s.text.is_empty() {
                out.push('{');
                out.push_str(&s.text);
                out.push('}');
            }
            out.push(' ');
            push_u64(out, s.base.count + s.now.count);
            out.push('\n');
        }
    }

    /// Writes the series as histogram `name`, values divided by `unit`
    /// (1e9: nanoseconds as seconds).
    pub fn write_histogram(&mut self, out: &mut String, name: &str, help: &str, unit: f64) {
        self.widen();
        let (lo, hi) = self.range.unwrap_or((0, 16));
        let full = hi.saturating_sub(16 * FULL_OCTAVES).max(lo);
        let coarse = (full - lo) / 4;
        if self.les_for != (lo, hi) || self.les.is_empty() {
            let tops = (lo..full).step_by(4).map(|b| b + 3).chain(full..hi);
            self.les = tops
                .map(|top| {
                    let v = hist_bucket_range(top).1.saturating_sub(1);
                    format!("{}", v as f64 / unit)
                })
                .collect();
            self.les_for = (lo, hi);
        }
        let index = |b: u32| {
            let b = b.clamp(lo, hi - 1);
            if b < full {
                (b - lo) / 4
            } else {
                coarse + (b - full)
            }
        };
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut counts = vec![0u64; self.les.len()];
        let mut prefix = String::new();
        for s in &self.series {
            counts.iter_mut().for_each(|c| *c = 0);
            for &(b, n) in s.base.buckets.iter().chain(&s.now.buckets) {
                counts[index(b) as usize] += n;
            }
            let sep = if s.text.is_empty() { "" } else { "," };
            // The hot loop: a line per bound, pushed without formatting.
            prefix.clear();
            let _ = write!(prefix, "{name}_bucket{{{}{sep}le=\"", s.text);
            let mut cum = 0;
            for (le, c) in self.les.iter().zip(&counts) {
                cum += c;
                out.push_str(&prefix);
                out.push_str(le);
                out.push_str("\"} ");
                push_u64(out, cum);
                out.push('\n');
            }
            let count = s.base.count + s.now.count;
            let sum = s.base.sum.wrapping_add(s.now.sum) as f64 / unit;
            let _ = writeln!(out, "{name}_bucket{{{}{sep}le=\"+Inf\"}} {count}", s.text);
            let (open, close) = if s.text.is_empty() {
                ("", "")
            } else {
                ("{", "}")
            };
            let _ = writeln!(out, "{name}_sum{open}{}{close} {sum}", s.text);
            let _ = writeln!(out, "{name}_count{open}{}{close} {count}", s.text);
        }
    }

    /// Widens the range to whole powers of two around every series' buckets.
    fn widen(&mut self) {
        for s in &self.series {
            for h in [&s.base, &s.now] {
                let (Some(first), Some(last)) = (h.buckets.first(), h.buckets.last()) else {
                    continue;
                };
                let (a, b) = (first.0 / 16 * 16, (last.0 / 16 + 1) * 16);
                self.range = Some(match self.range {
                    Some((x, y)) => (x.min(a), y.max(b)),
                    None => (a, b),
                });
            }
        }
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or("0"));
}

#[cfg(test)]
mod tests {
    use ri_common::{AggValue, hist_bucket};

    use super::*;

    fn cell(values: &[u64]) -> agg::Cell {
        let mut c = agg::Cell::default();
        for &v in values {
            c.add(hist_bucket(v), &AggValue::one(v));
        }
        c
    }

    #[test]
    fn the_cap_refuses_and_counts_each_series_once() {
        let mut t = Table::new(2);
        assert_eq!(t.id("a=\"1\"".into()), 0);
        assert_eq!(t.id("a=\"2\"".into()), 1);
        assert_eq!(t.id("a=\"3\"".into()), REFUSED);
        assert_eq!(t.id("a=\"3\"".into()), REFUSED);
        assert_eq!(t.id("a=\"1\"".into()), 0);
        assert_eq!(t.dropped(), 1);
    }

    #[test]
    fn carried_hits_add_to_current_ones() {
        let mut t = Table::new(10);
        let id = t.id(render(&[("op".into(), "w\"x".into())]));
        t.add(id, &cell(&[1, 2]));
        t.carry();
        t.begin();
        t.add(id, &cell(&[3]));
        let mut out = String::new();
        t.write_counter(&mut out, "ri_c", "c");
        assert!(out.contains("ri_c_total{op=\"w\\\"x\"} 3\n"), "{out}");
        let mut out = String::new();
        t.write_histogram(&mut out, "ri_h", "h", 1.0);
        assert!(
            out.contains("ri_h_bucket{op=\"w\\\"x\",le=\"1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("ri_h_bucket{op=\"w\\\"x\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("ri_h_sum{op=\"w\\\"x\"} 6\n"), "{out}");
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = String::new();
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            push_u64(&mut out, n);
            out.push(' ');
        }
        assert_eq!(out, format!("0 7 10 1234567890 {} ", u64::MAX));
    }

    #[test]
    fn wide_ranges_merge_buckets() {
        let mut t = Table::new(10);
        let id = t.id(String::new());
        t.add(id, &cell(&[1, 1 << 40]));
        let mut out = String::new();
        t.write_histogram(&mut out, "ri_h", "h", 1.0);
        let les = out.lines().filter(|l| l.starts_with("ri_h_bucket")).count();
        // Fine buckets 0..608: the top 128 one by one, the 480 below 4 at
        // a time, and +Inf.
        assert_eq!(les, 128 + 120 + 1, "{out}");
        // The top power of two at full resolution.
        let top = (1u64 << 40) + (1 << 36) - 1;
        assert!(out.contains(&format!("le=\"{top}\"}} 2")), "{out}");
        assert!(out.contains("ri_h_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("ri_h_count 2\n"), "{out}");
    }
}
