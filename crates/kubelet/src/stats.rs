//! The Summary API (`GET /stats/summary`): the node's and every pod's and container's
//! CPU and memory, and containers' writable layers, in the form of upstream's
//! `stats/v1alpha1` that metrics pipelines read (Skiff's own metrics API among them).
//!
//! A sampler reads the runtime's stats (CRI `ListPodSandboxStats`) and the node's root
//! cgroup every [`SAMPLE_PERIOD`]; the runtime reports CPU rates against its previous
//! reading, so a steady sampler makes them rates over that period, as cAdvisor's
//! housekeeping does. Requests get the latest sample.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use skiff_runtime::proto;
use skiff_runtime::runtime::stats::{CpuSamples, Usage};

use crate::cri::Cri;

/// How often usage is sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

pub struct Stats {
    cri: Cri,
    node_name: String,
    memory_capacity: u64,
    node_samples: CpuSamples,
    latest: RwLock<Option<Value>>,
}

fn time(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(nanos as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn value(v: &Option<proto::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

/// Inserts the fields that are known, as upstream omits unknown ones.
fn fields(pairs: &[(&str, Option<Value>)]) -> Value {
    let mut object = Map::new();
    for (name, field) in pairs {
        if let Some(field) = field {
            object.insert((*name).to_string(), field.clone());
        }
    }
    Value::Object(object)
}

fn cpu(cpu: &proto::CpuUsage) -> Value {
    fields(&[
        ("time", Some(json!(time(cpu.timestamp)))),
        (
            "usageNanoCores",
            value(&cpu.usage_nano_cores).map(Value::from),
        ),
        (
            "usageCoreNanoSeconds",
            value(&cpu.usage_core_nano_seconds).map(Value::from),
        ),
    ])
}

fn memory(memory: &proto::MemoryUsage) -> Value {
    fields(&[
        ("time", Some(json!(time(memory.timestamp)))),
        (
            "availableBytes",
            value(&memory.available_bytes).map(Value::from),
        ),
        ("usageBytes", value(&memory.usage_bytes).map(Value::from)),
        (
            "workingSetBytes",
            value(&memory.working_set_bytes).map(Value::from),
        ),
        ("rssBytes", value(&memory.rss_bytes).map(Value::from)),
        ("pageFaults", value(&memory.page_faults).map(Value::from)),
        (
            "majorPageFaults",
            value(&memory.major_page_faults).map(Value::from),
        ),
    ])
}

/// One container's entry; `created` is when it was created (Unix nanoseconds), which
/// upstream reports as its `startTime`.
fn container(stats: &proto::ContainerStats, created: Option<i64>) -> Value {
    let name = stats
        .attributes
        .as_ref()
        .and_then(|a| a.metadata.as_ref())
        .map(|m| m.name.clone())
        .unwrap_or_default();
    fields(&[
        ("name", Some(json!(name))),
        ("startTime", created.map(|at| json!(time(at)))),
        ("cpu", stats.cpu.as_ref().map(cpu)),
        ("memory", stats.memory.as_ref().map(memory)),
        (
            "rootfs",
            stats.writable_layer.as_ref().map(|layer| {
                fields(&[
                    ("time", Some(json!(time(layer.timestamp)))),
                    ("usedBytes", value(&layer.used_bytes).map(Value::from)),
                    ("inodesUsed", value(&layer.inodes_used).map(Value::from)),
                ])
            }),
        ),
    ])
}

/// One pod's entry, from its sandbox's stats: its running containers only (`running`:
/// their IDs and creation times), as upstream leaves out terminated ones (an exited debug
/// container, a finished init container).
pub fn pod(stats: &proto::PodSandboxStats, running: &HashMap<String, i64>) -> Option<Value> {
    let metadata = stats.attributes.as_ref()?.metadata.as_ref()?;
    let linux = stats.linux.as_ref()?;
    Some(fields(&[
        (
            "podRef",
            Some(
                json!({"name": metadata.name, "namespace": metadata.namespace, "uid": metadata.uid}),
            ),
        ),
        (
            "containers",
            Some(Value::Array(
                linux
                    .containers
                    .iter()
                    .filter_map(|c| {
                        let created = running.get(&c.attributes.as_ref()?.id)?;
                        Some(container(c, Some(*created)))
                    })
                    .collect(),
            )),
        ),
        ("cpu", linux.cpu.as_ref().map(cpu)),
        ("memory", linux.memory.as_ref().map(memory)),
    ]))
}

/// The node's entry, from the root cgroup.
fn node(name: &str, usage: Option<Usage>, memory_capacity: u64) -> Value {
    let Some(usage) = usage else {
        return json!({"nodeName": name});
    };
    let at = time(usage.timestamp);
    json!({
        "nodeName": name,
        "cpu": fields(&[
            ("time", Some(json!(at))),
            ("usageNanoCores", usage.cpu_nano_cores.map(Value::from)),
            ("usageCoreNanoSeconds", Some(json!(usage.cpu_core_nanoseconds))),
        ]),
        "memory": {
            "time": at,
            "availableBytes": memory_capacity.saturating_sub(usage.memory_working_set_bytes),
            "usageBytes": usage.memory_usage_bytes,
            "workingSetBytes": usage.memory_working_set_bytes,
            "rssBytes": usage.memory_rss_bytes,
            "pageFaults": usage.page_faults,
            "majorPageFaults": usage.major_page_faults,
        },
    })
}

/// The node's process ID limit and the processes running, as upstream's summary
/// reports them (`rlimit`): the lower of the kernel's `pid_max` and `threads-max`, and
/// the kernel's count of scheduling entities (threads), which both limits count.
fn rlimit() -> Option<Value> {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let max = read("/proc/sys/kernel/pid_max")?.min(read("/proc/sys/kernel/threads-max")?);
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let running: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).ok()?;
    Some(json!({"time": now.to_string(), "maxpid": max, "curproc": running}))
}

impl Stats {
    pub fn new(cri: Cri, node_name: String, memory_capacity: u64) -> Arc<Stats> {
        Arc::new(Stats {
            cri,
            node_name,
            memory_capacity,
            node_samples: CpuSamples::default(),
            latest: RwLock::new(None),
        })
    }

    /// Takes one sample of the node and its pods.
    async fn sample(&self) -> crate::error::Result<Value> {
        let pods = self.cri.pod_sandbox_stats().await?;
        let running = self.cri.running_containers().await?;
        let node_usage = self.node_samples.read("/");
        let mut node = node(&self.node_name, node_usage, self.memory_capacity);
        if let (Some(node), Some(rlimit)) = (node.as_object_mut(), rlimit()) {
            node.insert("rlimit".into(), rlimit);
        }
        Ok(json!({
            "node": node,
            "pods": pods.iter().filter_map(|p| pod(p, &running)).collect::<Vec<_>>(),
        }))
    }

    /// Samples every [`SAMPLE_PERIOD`] until the kubelet stops.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
        loop {
            ticks.tick().await;
            match self.sample().await {
                Ok(summary) => {
                    *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(summary);
                }
                Err(e) => tracing::warn!(error = %e, "sampling usage failed"),
            }
        }
    }

    /// The latest sample (one taken now if there is none yet).
    pub async fn summary(&self) -> crate::error::Result<Value> {
        if let Some(latest) = self
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(latest);
        }
        self.sample().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pods_read_as_upstreams_summary() {
        let stats = proto::PodSandboxStats {
            attributes: Some(proto::PodSandboxAttributes {
                id: "sb".into(),
                metadata: Some(proto::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            linux: Some(proto::LinuxPodSandboxStats {
                cpu: Some(proto::CpuUsage {
                    timestamp: 1_000_000_000,
                    usage_core_nano_seconds: Some(proto::UInt64Value { value: 7 }),
                    usage_nano_cores: None,
                }),
                containers: ["c", "exited"]
                    .into_iter()
                    .map(|name| proto::ContainerStats {
                        attributes: Some(proto::ContainerAttributes {
                            id: format!("{name}-id"),
                            metadata: Some(proto::ContainerMetadata {
                                name: name.into(),
                                attempt: 0,
                            }),
                            ..Default::default()
                        }),
                        memory: Some(proto::MemoryUsage {
                            timestamp: 1_000_000_000,
                            working_set_bytes: Some(proto::UInt64Value { value: 4096 }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            windows: None,
        };
        let running = HashMap::from([("c-id".to_string(), 1_000_000_000)]);
        let pod = pod(&stats, &running).unwrap();
        assert_eq!(
            pod["podRef"],
            json!({"name": "web", "namespace": "default", "uid": "u1"})
        );
        assert_eq!(
            pod["cpu"],
            json!({"time": "1970-01-01T00:00:01Z", "usageCoreNanoSeconds": 7})
        );
        assert_eq!(pod["containers"][0]["name"], "c");
        assert_eq!(pod["containers"][0]["memory"]["workingSetBytes"], 4096);
        assert_eq!(pod["containers"][0]["startTime"], "1970-01-01T00:00:01Z");
        assert_eq!(
            pod["containers"].as_array().map(Vec::len),
            Some(1),
            "terminated containers are left out"
        );
        assert!(pod.get("memory").is_none(), "unknown fields are left out");
    }
}
