//! Metrics through `prometheus-client`: live metrics (counters, histograms) registered in a
//! [`Registry`], and values read at scrape time (a store's space, a ledger's height) encoded
//! by a [`ScrapeFn`] collector. The library writes the text format; nothing here formats it.
//!
//! Naming: every name starts `cess_`, carries its unit as its suffix (the library appends
//! `_bytes` or `_seconds` from the [`Unit`], and `_total` to counters), and is listed in the
//! README's metrics table. Help texts end without a period: the encoder adds one.

pub use prometheus_client;
pub use prometheus_client::registry::{Registry, Unit};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

/// The content type of what `encode` writes: OpenMetrics text (the library's format; Prometheus
/// scrapes it, and it ends with `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for a latency measured in seconds: 1 ms to about 65 s.
pub fn latency_buckets_s() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// A histogram over [`latency_buckets_s`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets_s())
}

/// The registry in the text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a collector.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!("encoding metrics: {e}");
    }
    out
}

/// Values read at scrape time, written through the library's encoder.
pub struct Scrape<'a, 'b> {
    encoder: &'b mut DescriptorEncoder<'a>,
    failed: Option<std::fmt::Error>,
}

impl std::fmt::Debug for Scrape<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl Scrape<'_, '_> {
    fn record(&mut self, result: Result<(), std::fmt::Error>) {
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: i64) {
        let metric = ConstGauge::new(value);
        let result = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), metric.metric_type())
            .and_then(|e| metric.encode(e));
        self.record(result);
    }

    pub fn gauge_f64(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let metric = ConstGauge::new(value);
        let result = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), metric.metric_type())
            .and_then(|e| metric.encode(e));
        self.record(result);
    }

    pub fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, value: u64) {
        let metric = ConstCounter::new(value);
        let result = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), metric.metric_type())
            .and_then(|e| metric.encode(e));
        self.record(result);
    }

    /// A family of metrics of one type, one per label set.
    fn family<'l, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric_type: prometheus_client::metrics::MetricType,
        members: impl IntoIterator<Item = (&'l [(&'l str, &'l str)], M)>,
    ) {
        let result = (|| {
            let mut family =
                self.encoder
                    .encode_descriptor(name, help, unit.as_ref(), metric_type)?;
            for (labels, metric) in members {
                metric.encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        })();
        self.record(result);
    }

    /// One gauge per value of one label.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        label: &str,
        values: &[(&str, i64)],
    ) {
        let labels: Vec<[(&str, &str); 1]> = values.iter().map(|(v, _)| [(label, *v)]).collect();
        let members = labels
            .iter()
            .zip(values)
            .map(|(l, (_, value))| (&l[..], ConstGauge::new(*value)));
        self.family(name, help, unit, MetricType::Gauge, members);
    }

    /// One counter per value of one label.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        label: &str,
        values: &[(&str, u64)],
    ) {
        let labels: Vec<[(&str, &str); 1]> = values.iter().map(|(v, _)| [(label, *v)]).collect();
        let members = labels
            .iter()
            .zip(values)
            .map(|(l, (_, value))| (&l[..], ConstCounter::new(*value)));
        self.family(name, help, unit, MetricType::Counter, members);
    }

    /// One counter per set of labels.
    pub fn counters_by(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: &[(&[(&str, &str)], u64)],
    ) {
        let members = values
            .iter()
            .map(|(labels, value)| (*labels, ConstCounter::new(*value)));
        self.family(name, help, unit, MetricType::Counter, members);
    }

    /// One histogram per value of one label, from counts kept elsewhere: each entry is the
    /// label's value, the sum, the count and the buckets (upper bound, count in that bucket
    /// alone; the last bound `f64::MAX`).
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        label: &str,
        values: &[LabelledHistogram<'_>],
    ) {
        let result = (|| {
            let mut family =
                self.encoder
                    .encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
            for (value_label, sum, count, buckets) in values {
                let labels = [(label, *value_label)];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
            Ok(())
        })();
        self.record(result);
    }

    /// An info metric: a constant 1 labelled with what it describes (a backend, a version).
    pub fn info(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) {
        let members = [(labels, ConstGauge::new(1i64))];
        self.family(name, help, None, MetricType::Gauge, members);
    }
}

/// A label's value, a histogram's sum and count, and its buckets (upper bound, count in that
/// bucket alone; the last bound `f64::MAX`).
pub type LabelledHistogram<'a> = (&'a str, f64, u64, &'a [(f64, u64)]);

/// A collector that runs a function at each scrape.
pub struct ScrapeFn<F>(F);

impl<F> ScrapeFn<F>
where
    F: Fn(&mut Scrape<'_, '_>) + Send + Sync + 'static,
{
    /// Boxed, for [`Registry::register_collector`].
    pub fn boxed(f: F) -> Box<ScrapeFn<F>> {
        Box::new(ScrapeFn(f))
    }
}

impl<F> std::fmt::Debug for ScrapeFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeFn")
    }
}

impl<F> Collector for ScrapeFn<F>
where
    F: Fn(&mut Scrape<'_, '_>) + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut scrape = Scrape {
            encoder: &mut encoder,
            failed: None,
        };
        (self.0)(&mut scrape);
        match scrape.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
