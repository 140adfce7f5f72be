//! Small metric families (gauges, ri's own counters) and their Prometheus
//! text, through `prometheus-client`.

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
                }
            }
        }
        Ok(())
    }
}

/// Appends the classic text exposition of `families` to `out`.
pub fn encode(out: &mut String, families: Vec<Family>) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(families)));
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(out, &registry);
}

/// The content type of the exposition: Prometheus's classic text format,
/// which Prometheus and `promtool check metrics` both read.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_total() {
        let mut text = String::new();
        encode(
            &mut text,
            vec![
                Family::new("ri_n", "n").with(Vec::new(), Value::Counter(4.0)),
                Family::new("ri_g", "g").with(vec![("a".into(), "b".into())], Value::Gauge(1.5)),
            ],
        );
        assert!(text.contains("# TYPE ri_n_total counter\n"), "{text}");
        assert!(text.contains("ri_n_total 4"), "{text}");
        assert!(text.contains("ri_g{a=\"b\"} 1.5"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}
