//! Shared test helpers: a server with the controllers running in-process, and a "node"
//! that marks pods Running and Ready (there is no kubelet yet).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use skiff_e2e::Server;

pub struct Cluster {
    pub server: Server,
    pub client: Client,
    _controllers: Option<tokio::task::JoinHandle<()>>,
}

pub async fn client_for(server: &Server) -> Client {
    server.client().await
}

/// A fresh server with every controller running.
pub async fn cluster() -> Cluster {
    cluster_with(skiff_controllers::ControllerManagerArgs::default()).await
}

/// A fresh server with every controller running, as `args` configure them.
pub async fn cluster_with(args: skiff_controllers::ControllerManagerArgs) -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("server");
    let client = client_for(&server).await;
    let controllers = {
        let client = client.clone();
        let args = skiff_controllers::ControllerManagerArgs {
            root_ca_file: Some(server.data_dir.path().join("tls/ca.crt")),
            ..args
        };
        tokio::spawn(async move {
            if let Err(e) = skiff_controllers::run(client, args).await {
                panic!("controllers failed: {e}");
            }
        })
    };
    Cluster {
        server,
        client,
        _controllers: Some(controllers),
    }
}

impl Cluster {
    /// A cluster whose controllers the test runs itself.
    pub fn attach(server: Server, client: Client) -> Cluster {
        Cluster {
            server,
            client,
            _controllers: None,
        }
    }

    /// kubectl, on a blocking thread.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let out = self.server.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl rollout status KIND/NAME`: waits (up to a minute) for the rollout.
    pub async fn rollout_status(&self, target: &str, ns: &str) {
        self.kubectl(&["rollout", "status", target, "-n", ns, "--timeout=60s"])
            .await;
    }

    pub async fn apply(&self, yaml: &str) {
        self.server.ok_with_input(&["apply", "-f", "-"], yaml);
    }

    /// The `scale` subresource of `plural/name` (`deployments/web`) of `apps/v1` in `ns`,
    /// as read through its raw path; returns the Scale and the path.
    pub async fn read_scale(&self, ns: &str, target: &str) -> (serde_json::Value, String) {
        let path = format!("/apis/apps/v1/namespaces/{ns}/{target}/scale");
        let scale =
            serde_json::from_str(&self.kubectl(&["get", "--raw", &path]).await).expect("a Scale");
        (scale, path)
    }

    /// Replaces the Scale read at `path` with one of `replicas` (`kubectl replace
    /// --raw`), unconditionally: the controller may write the status meanwhile.
    pub fn replace_scale(&self, path: &str, scale: &serde_json::Value, replicas: i32) {
        let mut replaced = scale.clone();
        replaced["spec"]["replicas"] = replicas.into();
        if let Some(meta) = replaced["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        self.server.ok_with_input(
            &["replace", "--raw", path, "-f", "-"],
            &replaced.to_string(),
        );
    }

    /// Sets `target`'s (`deployment/web`) replicas with a merge patch of its `scale`
    /// subresource.
    pub async fn patch_scale(&self, ns: &str, target: &str, replicas: i32) {
        let patch = format!("{{\"spec\": {{\"replicas\": {replicas}}}}}");
        self.kubectl(&[
            "patch",
            target,
            "-n",
            ns,
            "--subresource=scale",
            "--type=merge",
            "-p",
            &patch,
        ])
        .await;
    }

    /// `kubectl apply` of `yaml` into namespace `ns`.
    pub async fn apply_in(&self, ns: &str, yaml: &str) {
        self.server
            .ok_with_input(&["apply", "-n", ns, "-f", "-"], yaml);
    }

    pub fn namespace(&self, prefix: &str) -> String {
        self.server.namespace(prefix)
    }

    /// Plays the kubelet of a node: marks every new pod of `ns` Running and Ready.
    pub fn run_node(&self, ns: &str) -> tokio::task::JoinHandle<()> {
        self.play_kubelet(ns, |api, pod| async move {
            if pod.metadata.deletion_timestamp.is_none() && !is_ready(&pod) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let _ = mark_ready(&api, &name).await;
            }
        })
    }

    /// Plays a kubelet: `act` sees every pod of `ns` as it is added or changes.
    pub fn play_kubelet<F, Fut>(&self, ns: &str, act: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Api<Pod>, Pod) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        tokio::spawn(async move {
            let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event {
                    act(api.clone(), pod).await;
                }
            }
        })
    }
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn mark_ready(api: &Api<Pod>, name: &str) -> kube::Result<Pod> {
    let now = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The active (not being deleted) pods of a namespace.
pub async fn active_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Follows the pods of `ns` and records the fewest that were ready and not being deleted
/// at any point after the first count (every watch event is one point).
pub fn track_fewest_ready(cluster: &Cluster, ns: &str) -> Arc<Mutex<Option<usize>>> {
    let fewest = Arc::new(Mutex::new(None));
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let record = fewest.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut healthy: HashMap<String, bool> = HashMap::new();
        let mut synced = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    let ok = pod.metadata.deletion_timestamp.is_none() && is_ready(&pod);
                    healthy.insert(pod.metadata.name.clone().unwrap_or_default(), ok);
                }
                Ok(Event::Delete(pod)) => {
                    healthy.remove(&pod.metadata.name.clone().unwrap_or_default());
                }
                Ok(Event::InitDone) => synced = true,
                _ => continue,
            }
            if synced {
                let now = healthy.values().filter(|ok| **ok).count();
                let mut fewest = record.lock().unwrap();
                *fewest = Some(fewest.map_or(now, |f: usize| f.min(now)));
            }
        }
    });
    fewest
}
