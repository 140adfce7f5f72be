//! Metric families and their Prometheus/OpenMetrics text, through `prometheus-client`.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

/// Labels of one series, in order.
pub type Labels = Vec<(String, String)>;

/// One series' value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A monotonic count.
    Counter(f64),
    /// A level.
    Gauge(f64),
    /// Sum, count and `(le, hits in (previous le, le])`, ending with `+Inf`.
    Histogram {
        /// Sum of the values.
        sum: f64,
        /// Hits.
        count: u64,
        /// Non-cumulative hits per upper bound.
        buckets: Vec<(f64, u64)>,
    },
}

/// A metric: name, help and its series (all of one type).
#[derive(Debug, Clone)]
pub struct Family {
    /// Name (counters get `_total` when encoded).
    pub name: String,
    /// Help text.
    pub help: String,
    /// The series.
    pub series: Vec<(Labels, Value)>,
}

impl Family {
    /// A family without series yet.
    pub fn new(name: &str, help: &str) -> Self {
        Family {
            name: name.to_string(),
            help: help.to_string(),
            series: Vec::new(),
        }
    }

    /// Adds a series.
    pub fn with(mut self, labels: Labels, v: Value) -> Self {
        self.series.push((labels, v));
        self
    }

    fn kind(&self) -> MetricType {
        match self.series.first().map(|s| &s.1) {
            Some(Value::Counter(_)) => MetricType::Counter,
            Some(Value::Histogram { .. }) => MetricType::Histogram,
            _ => MetricType::Gauge,
        }
    }
}

/// One scrape's families, as a collector.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut m = encoder.encode_descriptor(&f.name, &f.help, None, f.kind())?;
            for (labels, v) in &f.series {
                let mut e = m.encode_family(labels)?;
                match v {
                    Value::Counter(c) => e.encode_counter::<NoLabelSet, _, f64>(c, None)?,
                    Value::Gauge(g) => e.encode_gauge(g)?,
                    Value::Histogram {
                        sum,
                        count,
                        buckets,
                    } => e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

/// The text exposition of `families`.
pub fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(families)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`classic`]'s text.
pub const CLASSIC_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as Prometheus's classic text format (for clients that
/// do not ask for OpenMetrics, e.g. `promtool check metrics`): a counter's
/// HELP and TYPE name its `_total` samples, and no `# EOF`.
pub fn classic(open: &str) -> String {
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_total() {
        let text = encode(vec![
            Family::new("ri_x", "x").with(
                vec![("op".into(), "w".into())],
                Value::Histogram {
                    sum: 10.0,
                    count: 3,
                    buckets: vec![(1.0, 1), (2.0, 2), (f64::INFINITY, 0)],
                },
            ),
            Family::new("ri_n", "n").with(Vec::new(), Value::Counter(4.0)),
        ]);
        assert!(
            text.contains("ri_x_bucket{le=\"2.0\",op=\"w\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ri_x_bucket{le=\"+Inf\",op=\"w\"} 3"),
            "{text}"
        );
        assert!(text.contains("ri_n_total 4.0"), "{text}");
        let old = classic(&text);
        assert!(old.contains("# TYPE ri_n_total counter\n"), "{old}");
        assert!(old.contains("# HELP ri_n_total n\n"), "{old}");
        assert!(!old.contains("# EOF"), "{old}");
    }
}
