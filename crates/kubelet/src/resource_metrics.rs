//! `/metrics/resource`: upstream's resource metrics endpoint, which metrics-server
//! scrapes. The node's, each pod's and each container's CPU time and working set, and
//! each container's start time, in Prometheus' text format with the samples' own
//! timestamps, taken from the latest Summary sample.

use std::fmt::Write;

use serde_json::Value;

/// One metric's help, type and samples.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    samples: Vec<(String, f64, Option<i64>)>,
}

impl Family<'_> {
    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} [STABLE] {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value, at) in &self.samples {
            let _ = write!(out, "{}{labels} {value}", self.name);
            if let Some(at) = at {
                let _ = write!(out, " {at}");
            }
            out.push('\n');
        }
    }
}

/// A Summary timestamp as Prometheus' milliseconds.
fn millis(time: &Value) -> Option<i64> {
    let at: jiff::Timestamp = time.as_str()?.parse().ok()?;
    Some(at.as_millisecond())
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// CPU seconds and working set bytes of a Summary entry, with their times.
fn cpu_seconds(entry: &Value) -> Option<(f64, Option<i64>)> {
    let nanos = entry["cpu"]["usageCoreNanoSeconds"].as_u64()?;
    Some((nanos as f64 / 1e9, millis(&entry["cpu"]["time"])))
}

fn working_set(entry: &Value) -> Option<(f64, Option<i64>)> {
    let bytes = entry["memory"]["workingSetBytes"].as_u64()?;
    Some((bytes as f64, millis(&entry["memory"]["time"])))
}

/// The endpoint's text for a Summary (`None`: no sample could be taken).
pub fn render(summary: Option<&Value>) -> String {
    let mut families = [
        Family {
            name: "container_cpu_usage_seconds_total",
            help: "Cumulative cpu time consumed by the container in core-seconds",
            kind: "counter",
            samples: vec![],
        },
        Family {
            name: "container_memory_working_set_bytes",
            help: "Current working set of the container in bytes",
            kind: "gauge",
            samples: vec![],
        },
        Family {
            name: "container_start_time_seconds",
            help: "Start time of the container since unix epoch in seconds",
            kind: "gauge",
            samples: vec![],
        },
        Family {
            name: "node_cpu_usage_seconds_total",
            help: "Cumulative cpu time consumed by the node in core-seconds",
            kind: "counter",
            samples: vec![],
        },
        Family {
            name: "node_memory_working_set_bytes",
            help: "Current working set of the node in bytes",
            kind: "gauge",
            samples: vec![],
        },
        Family {
            name: "pod_cpu_usage_seconds_total",
            help: "Cumulative cpu time consumed by the pod in core-seconds",
            kind: "counter",
            samples: vec![],
        },
        Family {
            name: "pod_memory_working_set_bytes",
            help: "Current working set of the pod in bytes",
            kind: "gauge",
            samples: vec![],
        },
        Family {
            name: "resource_scrape_error",
            help: "1 if there was an error while getting container metrics, 0 otherwise",
            kind: "gauge",
            samples: vec![],
        },
    ];
    let [container_cpu, container_memory, container_start, node_cpu, node_memory, pod_cpu, pod_memory, scrape_error] =
        &mut families;
    let error = if summary.is_some() { 0.0 } else { 1.0 };
    scrape_error.samples.push((String::new(), error, None));
    if let Some(summary) = summary {
        let node = &summary["node"];
        if let Some((value, at)) = cpu_seconds(node) {
            node_cpu.samples.push((String::new(), value, at));
        }
        if let Some((value, at)) = working_set(node) {
            node_memory.samples.push((String::new(), value, at));
        }
        for pod in summary["pods"].as_array().into_iter().flatten() {
            let namespace = pod["podRef"]["namespace"].as_str().unwrap_or_default();
            let name = pod["podRef"]["name"].as_str().unwrap_or_default();
            let pod_labels = labels(&[("namespace", namespace), ("pod", name)]);
            if let Some((value, at)) = cpu_seconds(pod) {
                pod_cpu.samples.push((pod_labels.clone(), value, at));
            }
            if let Some((value, at)) = working_set(pod) {
                pod_memory.samples.push((pod_labels, value, at));
            }
            for container in pod["containers"].as_array().into_iter().flatten() {
                let container_name = container["name"].as_str().unwrap_or_default();
                let container_labels = labels(&[
                    ("container", container_name),
                    ("namespace", namespace),
                    ("pod", name),
                ]);
                if let Some((value, at)) = cpu_seconds(container) {
                    container_cpu
                        .samples
                        .push((container_labels.clone(), value, at));
                }
                if let Some((value, at)) = working_set(container) {
                    container_memory
                        .samples
                        .push((container_labels.clone(), value, at));
                }
                if let Some(started) = millis(&container["startTime"]) {
                    let at = millis(&container["cpu"]["time"]);
                    container_start
                        .samples
                        .push((container_labels, started as f64 / 1000.0, at));
                }
            }
        }
    }
    let mut out = String::new();
    for family in &families {
        family.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_samples_become_upstreams_resource_metrics() {
        let summary = json!({
            "node": {
                "nodeName": "n",
                "cpu": {"time": "2026-01-01T00:00:10Z", "usageCoreNanoSeconds": 2_500_000_000u64},
                "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 1024},
            },
            "pods": [{
                "podRef": {"name": "web", "namespace": "default", "uid": "u"},
                "cpu": {"time": "2026-01-01T00:00:10Z", "usageCoreNanoSeconds": 1_000_000_000u64},
                "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 512},
                "containers": [{
                    "name": "c",
                    "startTime": "2026-01-01T00:00:01Z",
                    "cpu": {"time": "2026-01-01T00:00:10Z", "usageCoreNanoSeconds": 500_000_000u64},
                    "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 256},
                }],
            }],
        });
        let text = render(Some(&summary));
        let at = 1_767_225_610_000i64;
        for line in [
            format!("node_cpu_usage_seconds_total 2.5 {at}"),
            format!("node_memory_working_set_bytes 1024 {at}"),
            format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"web\"}} 1 {at}"),
            format!("pod_memory_working_set_bytes{{namespace=\"default\",pod=\"web\"}} 512 {at}"),
            format!("container_cpu_usage_seconds_total{{container=\"c\",namespace=\"default\",pod=\"web\"}} 0.5 {at}"),
            format!("container_memory_working_set_bytes{{container=\"c\",namespace=\"default\",pod=\"web\"}} 256 {at}"),
            format!("container_start_time_seconds{{container=\"c\",namespace=\"default\",pod=\"web\"}} 1767225601 {at}"),
            "resource_scrape_error 0".to_string(),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
            "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(render(None).contains("\nresource_scrape_error 1\n"));
    }
}
