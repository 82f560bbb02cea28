//! Latency samples, percentiles, and the per-backend result rows.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; zero when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One measured number for one backend.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
}

/// The numbers measured against one backend, in the order they were taken.
#[derive(Default, Debug)]
pub struct Results {
    pub metrics: Vec<Metric>,
}

impl Results {
    pub fn push(&mut self, name: impl Into<String>, unit: &'static str, value: f64) {
        let name = name.into();
        eprintln!("    {name}: {value:.3} {unit}");
        self.metrics.push(Metric { name, unit, value });
    }

    /// p50 and p99 in ms of `samples`, as two rows named `{name} p50` / `{name} p99`.
    pub fn latency(&mut self, name: &str, samples: &[Duration]) {
        self.push(format!("{name} p50"), "ms", ms(percentile(samples, 50.0)));
        self.push(format!("{name} p99"), "ms", ms(percentile(samples, 99.0)));
    }

    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// A markdown table of one backend's numbers.
pub fn column(name: &str, results: &Results) -> String {
    let mut out = format!("| metric | unit | {name} |\n| --- | --- | ---: |\n");
    for metric in &results.metrics {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            metric.name,
            metric.unit,
            number(metric.value)
        ));
    }
    out
}

/// Three significant digits or so, as the tables print numbers.
fn number(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// A markdown table: one row per metric, a column for each of two backends (named),
/// and the second's value over the first's.
pub fn table(
    (a_name, a_results): (&str, &Results),
    (b_name, b_results): (&str, &Results),
) -> String {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for m in a_results.metrics.iter().chain(b_results.metrics.iter()) {
        if !names.iter().any(|(n, _)| *n == m.name) {
            names.push((&m.name, m.unit));
        }
    }
    let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), number);
    let mut out = format!(
        "| metric | unit | {a_name} | {b_name} | {b_name}/{a_name} |\n| --- | --- | ---: | ---: | ---: |\n",
    );
    for (name, unit) in names {
        let a = a_results.get(name).map(|m| m.value);
        let b = b_results.get(name).map(|m| m.value);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
            _ => "n/a".to_string(),
        };
        out.push_str(&format!(
            "| {name} | {unit} | {} | {} | {ratio} |\n",
            fmt(a),
            fmt(b)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 99.0),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn table_has_ratio() {
        let mut a = Results::default();
        let mut b = Results::default();
        a.push("x", "ms", 2.0);
        b.push("x", "ms", 3.0);
        b.push("only etcd", "MB", 1.0);
        let t = table(("embedded", &a), ("etcd", &b));
        assert!(
            t.contains("| metric | unit | embedded | etcd | etcd/embedded |"),
            "{t}"
        );
        assert!(t.contains("| x | ms | 2.00 | 3.00 | 1.50 |"), "{t}");
        assert!(t.contains("| only etcd | MB | n/a | 1.00 | n/a |"), "{t}");
    }
}
