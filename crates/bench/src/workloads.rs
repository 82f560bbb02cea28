//! The measured workloads. Each takes a kube [`Client`] for one server and appends its
//! numbers to that backend's [`Results`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use serde_json::json;
use tokio::sync::{mpsc, Mutex};

use crate::stats::Results;

/// Creates namespace `name` (an existing one is fine).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Runs `f(0..n)` with at most `concurrency` in flight; returns each result with its
/// latency, and the wall time of the whole batch.
async fn run_ops<T, F, Fut>(
    n: usize,
    concurrency: usize,
    f: F,
) -> Result<(Vec<(usize, T, Duration)>, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let results: Vec<(usize, T, Duration)> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move {
                let t = Instant::now();
                let value = fut.await?;
                Ok::<_, anyhow::Error>((i, value, t.elapsed()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok((results, start.elapsed()))
}

fn configmap(name: &str, i: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        "data": {"index": i.to_string(), "payload": "x".repeat(128)}
    }))
    .expect("a valid ConfigMap")
}

/// Create, get and update (PUT with the resourceVersion from the create) of `n` small
/// ConfigMaps, `concurrency` requests in flight.
pub async fn crud(
    client: &Client,
    ns: &str,
    label: &str,
    n: usize,
    concurrency: usize,
    out: &mut Results,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = |i: usize| format!("cm-{slug}-{i}");
    let pp = PostParams::default();

    let (created, elapsed) = run_ops(n, concurrency, |i| {
        let (api, pp, cm) = (&api, &pp, configmap(&name(i), i));
        async move { api.create(pp, &cm).await.context("create ConfigMap") }
    })
    .await?;
    report(out, &format!("create, {label}"), &created, elapsed);

    let (got, elapsed) = run_ops(n, concurrency, |i| {
        let (api, name) = (&api, name(i));
        async move { api.get(&name).await.context("get ConfigMap") }
    })
    .await?;
    report(out, &format!("get, {label}"), &got, elapsed);

    let mut objects: Vec<Option<ConfigMap>> = vec![None; n];
    for (i, cm, _) in created {
        objects[i] = Some(cm);
    }
    let objects = Arc::new(objects);
    let (updated, elapsed) = run_ops(n, concurrency, |i| {
        let (api, pp, objects) = (&api, &pp, objects.clone());
        async move {
            let mut cm = objects[i].clone().context("created object missing")?;
            cm.data
                .get_or_insert_with(Default::default)
                .insert("index".into(), format!("{i}-updated"));
            let name = cm.metadata.name.clone().unwrap_or_default();
            api.replace(&name, pp, &cm)
                .await
                .context("update ConfigMap")
        }
    })
    .await?;
    report(out, &format!("update, {label}"), &updated, elapsed);
    Ok(())
}

fn report<T>(out: &mut Results, name: &str, results: &[(usize, T, Duration)], elapsed: Duration) {
    let lat: Vec<Duration> = results.iter().map(|r| r.2).collect();
    out.latency(name, &lat);
    out.push(
        format!("{name} throughput"),
        "ops/s",
        results.len() as f64 / elapsed.as_secs_f64(),
    );
}

/// Open-loop ConfigMap creates at `rate`/s for `secs` s. Each request is sent at its
/// scheduled time whether or not earlier ones have finished; latency counts from the
/// scheduled time, so client-side queueing shows too (no coordinated omission).
pub async fn open_loop(
    client: &Client,
    ns: &str,
    rate: u32,
    secs: u32,
    out: &mut Results,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let api = api.clone();
        tasks.spawn(async move {
            let cm = configmap(&format!("open-{i}"), i);
            let result = api.create(&PostParams::default(), &cm).await;
            (result.is_ok(), at.elapsed(), tokio::time::Instant::now())
        });
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0usize;
    let mut last = start;
    while let Some(done) = tasks.join_next().await {
        let (ok, latency, finished) = done.context("open-loop task panicked")?;
        if ok {
            lat.push(latency);
        } else {
            errors += 1;
        }
        last = last.max(finished);
    }
    let name = format!("open-loop create @ {rate}/s");
    out.latency(&name, &lat);
    out.push(
        format!("{name} achieved rate"),
        "ops/s",
        lat.len() as f64 / (last - start).as_secs_f64(),
    );
    out.push(format!("{name} errors"), "count", errors as f64);
    Ok(())
}

/// `watchers` watches on the ConfigMaps of `ns`, then `writes` sequential creates (one
/// every `gap`): latency from each create's response to its event at each watcher.
pub async fn watch_fanout(
    client: &Client,
    ns: &str,
    watchers: usize,
    writes: usize,
    gap: Duration,
    out: &mut Results,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .context("listing ConfigMaps for a resourceVersion")?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..watchers {
        let stream = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .with_context(|| format!("starting watcher {w}"))?;
        let (tx, failures) = (tx.clone(), failures.clone());
        tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(WatchEvent::Added(cm)) => {
                        let _ = tx.send((cm.metadata.name.unwrap_or_default(), now));
                    }
                    Ok(WatchEvent::Error(e)) => {
                        failures.lock().await.push(format!("watcher {w}: {e:?}"));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failures.lock().await.push(format!("watcher {w}: {e}"));
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let pp = PostParams::default();
    let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();

    // Every watcher must see a first object before the measured writes start.
    let sync = "watch-sync".to_string();
    api.create(&pp, &configmap(&sync, 0))
        .await
        .context("creating the sync ConfigMap")?;
    collect_until(&mut rx, &mut seen, &[sync], watchers, &failures).await?;

    let mut acks = Vec::with_capacity(writes);
    for i in 0..writes {
        let name = format!("watch-{i}");
        let sent = Instant::now();
        api.create(&pp, &configmap(&name, i))
            .await
            .context("create ConfigMap (watched)")?;
        acks.push((name, sent, Instant::now()));
        tokio::time::sleep(gap).await;
    }
    let names: Vec<String> = acks.iter().map(|(n, _, _)| n.clone()).collect();
    collect_until(&mut rx, &mut seen, &names, watchers, &failures).await?;
    tasks.abort_all();

    // An event often reaches a watcher before the writer has read its own response;
    // such deliveries count as 0 ms after the ack, and are counted.
    let mut after_ack = Vec::with_capacity(writes * watchers);
    let mut all_after_ack = Vec::with_capacity(writes);
    let mut all_after_send = Vec::with_capacity(writes);
    let mut round_trip = Vec::with_capacity(writes);
    let mut before_ack = 0usize;
    for (name, sent, ack) in &acks {
        let times = &seen[name];
        before_ack += times.iter().filter(|t| *t < ack).count();
        after_ack.extend(times.iter().map(|t| t.saturating_duration_since(*ack)));
        let last = times.iter().max().copied().unwrap_or(*ack);
        all_after_ack.push(last.saturating_duration_since(*ack));
        all_after_send.push(last.saturating_duration_since(*sent));
        round_trip.push(ack.saturating_duration_since(*sent));
    }
    let w = format!("watch fan-out, {watchers} watchers");
    out.latency(&format!("{w}: write round trip"), &round_trip);
    out.latency(&format!("{w}: ack to each watcher"), &after_ack);
    out.latency(&format!("{w}: ack to all watchers"), &all_after_ack);
    out.latency(&format!("{w}: write sent to all watchers"), &all_after_send);
    out.push(
        format!("{w}: deliveries before the ack"),
        "%",
        100.0 * before_ack as f64 / after_ack.len().max(1) as f64,
    );
    Ok(())
}

async fn collect_until(
    rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    seen: &mut HashMap<String, Vec<Instant>>,
    names: &[String],
    watchers: usize,
    failures: &Mutex<Vec<String>>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = names
            .iter()
            .all(|n| seen.get(n).is_some_and(|v| v.len() >= watchers));
        if done {
            return Ok(());
        }
        let failed = failures.lock().await;
        if !failed.is_empty() {
            bail!("watchers failed: {}", failed.join("; "));
        }
        drop(failed);
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => seen.entry(name).or_default().push(at),
            Ok(None) => bail!("all watchers ended before every event arrived"),
            Err(_) => {
                let missing = names
                    .iter()
                    .filter(|n| seen.get(*n).map_or(0, |v| v.len()) < watchers)
                    .count();
                bail!(
                    "{missing} of {} writes not seen by all {watchers} watchers within 60 s",
                    names.len()
                );
            }
        }
    }
}

/// A realistic Deployment-owned pod, about 1.5 KB as JSON once the server has defaulted it.
pub fn pod(name: &str, i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "web",
                "app.kubernetes.io/instance": format!("web-{}", i % 100),
                "pod-template-hash": "7c9f8d6b5d",
                "tier": "frontend"
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("web-{}-7c9f8d6b5d", i % 100),
                "uid": format!("6f1c2e4a-0b7d-4c1e-9a3f-{:012x}", i % 100),
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example.com/team/web:1.27.3",
                "args": ["--listen=:8080", "--metrics=:9090", "--log-level=info"],
                "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                ],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "LOG_FORMAT", "value": "json"},
                    {"name": "CACHE_SIZE_MB", "value": "64"}
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"}
                },
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": true}]
            }],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        }
    }))
    .expect("a valid Pod")
}

/// Creates pods `{prefix}-{0..n}` in `ns`, `concurrency` in flight; returns the
/// latencies and the wall time.
pub async fn create_pods(
    client: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    let (results, elapsed) = run_ops(n, concurrency, |i| {
        let (api, pp, pod) = (&api, &pp, pod(&format!("{prefix}-{i}"), i));
        async move { api.create(pp, &pod).await.map(|_| ()).context("create Pod") }
    })
    .await?;
    Ok((results.into_iter().map(|r| r.2).collect(), elapsed))
}

/// Lists every pod of `ns` `reps` times: raw (response body received, no decoding) and
/// typed (kube `Api::list`, decoded into `Pod`s, as a controller would).
pub async fn list_pods(
    client: &Client,
    ns: &str,
    expect: usize,
    reps: usize,
    typed_reps: usize,
    out: &mut Results,
) -> Result<()> {
    let mut raw = Vec::with_capacity(reps);
    let mut bytes = 0usize;
    for r in 0..reps {
        let request = http::Request::get(format!("/api/v1/namespaces/{ns}/pods"))
            .header("accept", "application/json")
            .body(Vec::new())?;
        let t = Instant::now();
        let body = client.request_text(request).await.context("list pods")?;
        raw.push(t.elapsed());
        bytes = body.len();
        if r == 0 {
            let v: serde_json::Value = serde_json::from_str(&body).context("decoding the list")?;
            let items = v["items"].as_array().map_or(0, |a| a.len());
            if items != expect {
                bail!("list of {ns} returned {items} pods, expected {expect}");
            }
        }
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut typed = Vec::with_capacity(typed_reps);
    for _ in 0..typed_reps {
        let t = Instant::now();
        let list = api
            .list(&ListParams::default())
            .await
            .context("list pods")?;
        typed.push(t.elapsed());
        if list.items.len() != expect {
            bail!("typed list returned {} pods", list.items.len());
        }
    }
    let name = format!("list {expect} pods");
    out.latency(&format!("{name}, raw body"), &raw);
    out.latency(&format!("{name}, typed (kube Api::list)"), &typed);
    out.push(format!("{name}, response size"), "MB", bytes as f64 / 1e6);
    out.push(
        "average pod size as served",
        "bytes",
        bytes as f64 / expect.max(1) as f64,
    );
    Ok(())
}
