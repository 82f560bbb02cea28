//! Static pods: pods the kubelet runs from manifest files in a directory
//! (`--pod-manifest-path`, upstream's `staticPodPath`), whatever the API
//! server says, each shown in the API as a *mirror pod*.
//!
//! - The file source ([`scan`], [`watch_dir`]) reads every `*.yaml`, `*.yml`
//!   and `*.json` file of the directory as one Pod, gives it upstream's
//!   identity ([`static_pod`]: `<name>-<node>`, a UID hashed from the pod, the
//!   node and the file, the `kubernetes.io/config.*` annotations) and sends the
//!   whole set to the pod manager on every change and every [`RESCAN`].
//! - The pod manager ([`crate::pods`]) runs them through the same workers as
//!   API pods, keyed by that UID; their status goes to the mirror pod of the
//!   same name.
//! - [`Mirrors`] keeps one mirror pod per static pod in the API: created when
//!   missing, deleted and created again when a user deleted it or its hash is
//!   not the static pod's, deleted once the static pod is gone. Deleting a
//!   mirror never stops the static pod.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::spec::{pod_name, pod_namespace};

/// Where a pod came from (`file` for static pods, `api` otherwise upstream).
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// The static pod's hash (its UID), as upstream writes it.
pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// When the kubelet first saw this version of the static pod.
pub const SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Marks a mirror pod; its value is the hash of the static pod it mirrors.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Only on the kubelet's in-memory copy of a static pod: the UID of its
/// mirror pod, so that the worker writes the status again to a new mirror.
pub const MIRROR_UID_ANNOTATION: &str = "kubelet.skiff.io/mirror-uid";

/// How often the directory is read again even without a visible change
/// (upstream's file source period).
pub const RESCAN: Duration = Duration::from_secs(20);
/// How often the directory's listing is compared for changes.
const POLL: Duration = Duration::from_secs(1);

/// Why a manifest file was skipped.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: kind {kind:?} is not a v1 Pod")]
    NotAPod { path: PathBuf, kind: String },
    #[error("{path}: the pod has no metadata.name")]
    NoName { path: PathBuf },
}

/// Whether the pod came from a manifest file.
pub fn is_static(pod: &Pod) -> bool {
    annotation(pod, SOURCE_ANNOTATION) == Some("file")
}

/// Whether the API pod is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, MIRROR_ANNOTATION).is_some()
}

pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The UID the runtime knows an API pod by: a mirror pod's is its static pod's (the
/// hash it carries), any other pod's its own.
pub fn runtime_uid(pod: &Pod) -> &str {
    annotation(pod, MIRROR_ANNOTATION)
        .or(pod.metadata.uid.as_deref())
        .unwrap_or("")
}

/// `namespace/name`, the key a static pod and its mirror share.
pub fn full_name(pod: &Pod) -> String {
    format!("{}/{}", pod_namespace(pod), pod_name(pod))
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml" | "json"))
}

/// Parses one manifest (YAML or JSON) into the Pod it describes.
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Pod, ManifestError> {
    let parse = |message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        message,
    };
    // JSON is YAML, so one parser reads both.
    let value: serde_json::Value =
        serde_yaml::from_slice(bytes).map_err(|e| parse(e.to_string()))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let version = value.get("apiVersion").and_then(|k| k.as_str());
    if kind != "Pod" || version.is_some_and(|v| v != "v1") {
        return Err(ManifestError::NotAPod {
            path: path.to_path_buf(),
            kind: kind.to_string(),
        });
    }
    let pod: Pod = serde_json::from_value(value).map_err(|e| parse(e.to_string()))?;
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(ManifestError::NoName {
            path: path.to_path_buf(),
        });
    }
    Ok(pod)
}

/// The hash that identifies a version of a static pod: the pod as read, the node and
/// the file (so the same manifest on two nodes, or in two files, makes two pods).
pub fn hash(pod: &Pod, path: &Path, node_name: &str) -> String {
    let mut hasher = Sha256::new();
    // k8s-openapi serializes fields in a fixed order and maps sorted: stable bytes.
    hasher.update(serde_json::to_vec(pod).unwrap_or_default());
    hasher.update(format!("host:{node_name}"));
    hasher.update(format!("file:{}", path.display()));
    // 32 hex digits, as upstream's (md5) hashes are long.
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Gives a pod read from `path` upstream's static-pod identity on node `node_name`,
/// and the few defaults the worker and a reader of the mirror rely on.
pub fn static_pod(mut pod: Pod, path: &Path, node_name: &str, seen: SystemTime) -> Pod {
    // The hash is the UID, one the file gives or one from the content (upstream's
    // rule: a file with a UID of its own is updated in place when it changes).
    let hash = match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => hash(&pod, path, node_name),
    };
    pod.metadata.uid = Some(hash.clone());
    let name = pod.metadata.name.take().unwrap_or_default();
    pod.metadata.name = Some(format!("{name}-{node_name}"));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let seen = jiff::Timestamp::try_from(seen).unwrap_or_else(|_| jiff::Timestamp::now());
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    annotations.insert(HASH_ANNOTATION.into(), hash);
    annotations.insert(SEEN_ANNOTATION.into(), seen.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.into());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    // Upstream tolerates every NoExecute taint, so node trouble never evicts them.
    let tolerate_all = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&tolerate_all) {
        tolerations.push(tolerate_all);
    }
    pod
}

/// The directory's static pods, by file. Files that cannot be read or parsed are
/// skipped (and logged once per change); a missing directory has none.
pub fn scan(dir: &Path, node_name: &str, cache: &mut Cache) -> Vec<Pod> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_manifest(p) && p.is_file())
            .collect(),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "reading the pod manifest directory failed");
            }
            Vec::new()
        }
    };
    paths.sort();
    let mut fresh = Cache::default();
    let mut pods = Vec::new();
    let mut names = std::collections::HashSet::new();
    for path in paths {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(source) => {
                tracing::warn!(error = %ManifestError::Read { path, source }, "skipping pod manifest");
                continue;
            }
        };
        // The same bytes keep the pod they gave, with its first `seen` time.
        let entry = match cache.0.remove(&path) {
            Some((old, parsed)) if old == bytes => (old, parsed),
            _ => {
                let parsed = match parse_manifest(&path, &bytes) {
                    Ok(pod) => Some(static_pod(pod, &path, node_name, SystemTime::now())),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping pod manifest");
                        None
                    }
                };
                (bytes, parsed)
            }
        };
        match &entry.1 {
            // Two files for one name would fight over one mirror: the first file (by
            // name) wins, as upstream keeps the first it saw.
            Some(pod) if !names.insert(full_name(pod)) => {
                tracing::warn!(file = %path.display(), pod = %full_name(pod), "skipping pod manifest: another file has a pod of this name");
            }
            Some(pod) => pods.push(pod.clone()),
            None => {}
        }
        fresh.0.insert(path, entry);
    }
    *cache = fresh;
    pods
}

/// What [`scan`] read last, by file: the bytes and the pod they made.
#[derive(Default)]
pub struct Cache(HashMap<PathBuf, (Vec<u8>, Option<Pod>)>);

/// What tells a change in the directory without reading it: names, sizes, mtimes.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// The file source: sends the directory's static pods on start, whenever its
/// listing changes, and every [`RESCAN`]; runs until the receiver is gone.
pub async fn watch_dir(dir: PathBuf, node_name: String, tx: watch::Sender<Option<Arc<Vec<Pod>>>>) {
    let mut cache = Cache::default();
    let mut last_listing = None;
    let mut last_scan: Option<tokio::time::Instant> = None;
    loop {
        let now_listing = listing(&dir);
        let due = last_scan.is_none_or(|t| t.elapsed() >= RESCAN);
        if due || last_listing.as_ref() != Some(&now_listing) {
            let pods = scan(&dir, &node_name, &mut cache);
            let changed = tx.borrow().as_deref() != Some(&pods);
            if changed || last_scan.is_none() {
                tracing::info!(dir = %dir.display(), pods = pods.len(), "static pods read");
                if tx.send(Some(Arc::new(pods))).is_err() {
                    return;
                }
            }
            last_listing = Some(now_listing);
            last_scan = Some(tokio::time::Instant::now());
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The mirror pod of a static pod: its metadata and spec, the mirror annotation, and
/// the Node as owner (upstream's, so that the pod goes with its Node).
pub fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(MIRROR_UID_ANNOTATION);
    let hash = annotations
        .get(HASH_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    annotations.insert(MIRROR_ANNOTATION.into(), hash);
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.metadata.name.clone().unwrap_or_default(),
                uid: node.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: pod.spec.clone(),
        status: None,
    }
}

/// What to do with the mirror pod of a name.
#[derive(Debug, PartialEq, Eq)]
pub enum MirrorAction {
    /// Nothing: it mirrors the static pod's current version.
    Keep,
    /// None in the API yet.
    Create,
    /// Delete it (by UID): deleted by a user, stale, or its static pod is gone.
    Delete { uid: String },
}

/// Upstream's rule: a mirror pod stays while it carries the static pod's hash and no
/// one is deleting it; anything else is deleted (and created again if the static pod
/// still runs).
pub fn mirror_action(static_pod: Option<&Pod>, mirror: Option<&Pod>) -> MirrorAction {
    match (static_pod, mirror) {
        (None, None) => MirrorAction::Keep,
        (Some(_), None) => MirrorAction::Create,
        (s, Some(m)) => {
            let current = s.is_some_and(|s| {
                annotation(s, HASH_ANNOTATION).is_some()
                    && annotation(s, HASH_ANNOTATION) == annotation(m, MIRROR_ANNOTATION)
            });
            if current && m.metadata.deletion_timestamp.is_none() {
                MirrorAction::Keep
            } else {
                MirrorAction::Delete {
                    uid: m.metadata.uid.clone().unwrap_or_default(),
                }
            }
        }
    }
}

/// Keeps the API's mirror pods in line with the static pods.
pub struct Mirrors {
    client: kube::Client,
    node_name: String,
    /// The last error of each name whose mirror cannot be synced (e.g. refused by
    /// admission), so that a pass every 2 s logs it once, not every time.
    failing: HashMap<String, String>,
}

impl Mirrors {
    /// One pass of [`mirror_action`] over every name that has a static pod or a mirror.
    /// `statics` are the static pods that should have a mirror; `busy` the names whose
    /// old static pod is still stopping (their mirrors are left alone until it stopped).
    pub fn new(client: kube::Client, node_name: String) -> Mirrors {
        Mirrors {
            client,
            node_name,
            failing: HashMap::new(),
        }
    }

    pub async fn sync(
        &mut self,
        statics: &HashMap<String, Arc<Pod>>,
        mirrors: &HashMap<String, Pod>,
        busy: &std::collections::HashSet<String>,
    ) {
        let by_name: HashMap<String, &Pod> = statics
            .values()
            .map(|p| (full_name(p), p.as_ref()))
            .collect();
        let mut names: Vec<&String> = by_name.keys().chain(mirrors.keys()).collect();
        names.sort();
        names.dedup();
        self.failing.retain(|n, _| names.contains(&n));
        for name in names {
            let static_pod = by_name.get(name).copied();
            let mirror = mirrors.get(name);
            // The old version writes its last status to the old mirror; the new
            // version's mirror waits, as the new version itself does.
            if busy.contains(name) {
                continue;
            }
            let result = match mirror_action(static_pod, mirror) {
                MirrorAction::Keep => Ok(()),
                MirrorAction::Create => match static_pod {
                    Some(pod) => self.create(pod).await,
                    None => Ok(()),
                },
                MirrorAction::Delete { uid } => self.delete(name, uid).await,
            };
            match result {
                Ok(()) => {
                    self.failing.remove(name);
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.failing.get(name) != Some(&e) {
                        tracing::warn!(pod = %name, error = %e, "syncing mirror pod failed");
                        self.failing.insert(name.clone(), e);
                    }
                }
            }
        }
    }

    async fn create(&self, pod: &Pod) -> crate::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Some(node) = nodes.get_opt(&self.node_name).await? else {
            // Not registered yet: the next pass creates it.
            return Ok(());
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod_namespace(pod));
        match api
            .create(&PostParams::default(), &mirror_of(pod, &node))
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %full_name(pod), "mirror pod created");
                Ok(())
            }
            // The watch has not shown it yet.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, name: &str, uid: String) -> crate::Result<()> {
        let (ns, name) = name.split_once('/').unwrap_or(("default", name));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), "mirror pod deleted");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The static pod as a worker gets it: with its mirror's UID, so that a new mirror
/// (one a user deleted, created again) gets the status written again, and with the
/// status of a mirror of this very version, which a restarted kubelet goes on from (as
/// it does from an API pod's).
pub fn for_worker(pod: &Pod, mirror: Option<&Pod>) -> Pod {
    let mut pod = pod.clone();
    let Some(mirror) = mirror else {
        return pod;
    };
    if let Some(uid) = mirror.metadata.uid.clone() {
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(MIRROR_UID_ANNOTATION.into(), uid);
    }
    if mirror_action(Some(&pod), Some(mirror)) == MirrorAction::Keep {
        pod.status = mirror.status.clone();
    }
    pod
}

/// Marks a static pod whose file is gone for termination, as an API deletion would.
pub fn removed(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    let grace = crate::worker::grace_period(&pod);
    pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    pod.metadata.deletion_grace_period_seconds = Some(grace);
    pod
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NODE: &str = "node-a";
    const YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    fn read(path: &str, text: &str) -> Pod {
        let path = Path::new(path);
        static_pod(
            parse_manifest(path, text.as_bytes()).unwrap(),
            path,
            NODE,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn parses_yaml_and_json_and_refuses_the_rest() {
        let pod = parse_manifest(Path::new("a.yaml"), YAML.as_bytes()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web"));
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
        let pod = parse_manifest(Path::new("a.json"), json.as_bytes()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("j"));
        let e = parse_manifest(Path::new("x.yaml"), b"kind: Pod\nmetadata: [").unwrap_err();
        assert!(e.to_string().starts_with("parsing x.yaml"), "{e}");
        let e = parse_manifest(
            Path::new("s.yaml"),
            b"apiVersion: v1\nkind: Service\nmetadata: {name: s}",
        )
        .unwrap_err();
        assert!(matches!(e, ManifestError::NotAPod { .. }), "{e}");
        let e = parse_manifest(
            Path::new("n.yaml"),
            b"apiVersion: v1\nkind: Pod\nspec: {containers: []}",
        )
        .unwrap_err();
        assert!(matches!(e, ManifestError::NoName { .. }), "{e}");
    }

    #[test]
    fn static_pods_get_upstreams_identity() {
        let pod = read("/etc/m/web.yaml", YAML);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(annotation(&pod, HASH_ANNOTATION), Some(uid.as_str()));
        assert_eq!(annotation(&pod, SOURCE_ANNOTATION), Some("file"));
        assert_eq!(
            annotation(&pod, SEEN_ANNOTATION),
            Some("1970-01-01T00:00:00Z")
        );
        assert!(is_static(&pod));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        let t = &spec.tolerations.as_ref().unwrap()[0];
        assert_eq!(
            (t.operator.as_deref(), t.effect.as_deref()),
            (Some("Exists"), Some("NoExecute"))
        );
        // A namespace and restart policy of the file's own are kept.
        let other = read(
            "/etc/m/web.yaml",
            &YAML
                .replace("name: web\n", "name: web\n  namespace: kube-system\n")
                .replace("spec:\n", "spec:\n  restartPolicy: Never\n"),
        );
        assert_eq!(other.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(other.spec.unwrap().restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn uids_are_stable_and_follow_content_node_and_file() {
        let a = read("/etc/m/web.yaml", YAML).metadata.uid;
        // Same content, same file, same node: the same pod, whenever it is read.
        assert_eq!(a, read("/etc/m/web.yaml", YAML).metadata.uid);
        // Formatting alone does not change the pod.
        let reformatted = YAML.replace("labels: {app: web}", "labels:\n    app: web");
        assert_eq!(a, read("/etc/m/web.yaml", &reformatted).metadata.uid);
        assert_ne!(
            a,
            read("/etc/m/web.yaml", &YAML.replace("busybox", "nginx"))
                .metadata
                .uid
        );
        assert_ne!(a, read("/etc/m/other.yaml", YAML).metadata.uid);
        let path = Path::new("/etc/m/web.yaml");
        let pod = parse_manifest(path, YAML.as_bytes()).unwrap();
        assert_ne!(hash(&pod, path, "node-a"), hash(&pod, path, "node-b"));
        // A UID of the file's own is kept, and is the hash.
        let own = read(
            "/etc/m/web.yaml",
            &YAML.replace("name: web\n", "name: web\n  uid: fixed\n"),
        );
        assert_eq!(own.metadata.uid.as_deref(), Some("fixed"));
        assert_eq!(annotation(&own, HASH_ANNOTATION), Some("fixed"));
    }

    #[test]
    fn scan_reads_manifests_skips_bad_ones_and_forgets_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), YAML).unwrap();
        std::fs::write(dir.path().join("db.yml"), YAML.replace("web", "db")).unwrap();
        std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
        std::fs::write(dir.path().join("notes.txt"), YAML.replace("web", "txt")).unwrap();
        std::fs::write(
            dir.path().join(".hidden.yaml"),
            YAML.replace("web", "hidden"),
        )
        .unwrap();
        // The same pod name again, in a later file: skipped.
        let again = YAML.replace("busybox", "nginx");
        std::fs::write(dir.path().join("zz-web-again.yaml"), again).unwrap();
        let mut cache = Cache::default();
        let names = |pods: &[Pod]| -> Vec<String> {
            pods.iter().map(|p| pod_name(p).to_string()).collect()
        };
        let pods = scan(dir.path(), NODE, &mut cache);
        assert_eq!(names(&pods), ["db-node-a", "web-node-a"]);
        let image = |p: &Pod| p.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(
            image(&pods[1]).as_deref(),
            Some("busybox"),
            "web.yaml's, the first"
        );
        // Unchanged files give the very same pods (their `seen` time included).
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(scan(dir.path(), NODE, &mut cache), pods);
        std::fs::remove_file(dir.path().join("db.yml")).unwrap();
        let after = scan(dir.path(), NODE, &mut cache);
        assert_eq!(names(&after), ["web-node-a"]);
        assert_eq!(after[0], pods[1]);
        assert!(scan(&dir.path().join("missing"), NODE, &mut cache).is_empty());
    }

    #[test]
    fn mirrors_carry_the_hash_and_their_node_and_follow_upstreams_rule() {
        let pod = read("/etc/m/web.yaml", YAML);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(NODE.into()),
                uid: Some("node-uid".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mirror = mirror_of(&for_worker(&pod, None), &node);
        assert_eq!(mirror.metadata.name, pod.metadata.name);
        assert_eq!(mirror.spec, pod.spec);
        assert_eq!(mirror.metadata.labels, pod.metadata.labels);
        assert_eq!(
            annotation(&mirror, MIRROR_ANNOTATION),
            annotation(&pod, HASH_ANNOTATION)
        );
        let mut api_copy = mirror.clone();
        api_copy.metadata.uid = Some("mirror-uid".into());
        assert_eq!(runtime_uid(&api_copy), pod.metadata.uid.as_deref().unwrap());
        assert_eq!(runtime_uid(&pod), pod.metadata.uid.as_deref().unwrap());
        let owner = &mirror.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", NODE, "node-uid")
        );
        assert_eq!(owner.controller, Some(true));

        let mut in_api = mirror.clone();
        in_api.metadata.uid = Some("m1".into());
        assert_eq!(mirror_action(Some(&pod), None), MirrorAction::Create);
        assert_eq!(mirror_action(Some(&pod), Some(&in_api)), MirrorAction::Keep);
        let delete = MirrorAction::Delete { uid: "m1".into() };
        assert_eq!(mirror_action(None, Some(&in_api)), delete);
        let newer = read("/etc/m/web.yaml", &YAML.replace("busybox", "nginx"));
        assert_eq!(mirror_action(Some(&newer), Some(&in_api)), delete);
        in_api.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(mirror_action(Some(&pod), Some(&in_api)), delete);

        // The worker's copy names the mirror; the mirror never carries that.
        let seen = for_worker(&pod, Some(&mirror_with_uid()));
        assert_eq!(annotation(&seen, MIRROR_UID_ANNOTATION), Some("m9"));
        // A stale mirror's status is not this version's.
        assert_eq!(seen.status, None);
        let mut current = mirror_with_uid();
        current.metadata.annotations = mirror.metadata.annotations.clone();
        let resumed = for_worker(&pod, Some(&current));
        assert_eq!(resumed.status, current.status);
        assert_eq!(
            annotation(&mirror_of(&seen, &node), MIRROR_UID_ANNOTATION),
            None
        );
        let gone = removed(&pod);
        assert!(gone.metadata.deletion_timestamp.is_some());
        assert_eq!(gone.metadata.deletion_grace_period_seconds, Some(30));
    }

    fn mirror_with_uid() -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("m9".into());
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        p
    }
}
