//! The audit log, as upstream's API server writes it: with `--audit-policy-file` (an
//! `audit.k8s.io/v1` `Policy`) and `--audit-log-path` (a file, or `-` for stdout), every
//! authenticated request becomes JSON-lines `audit.k8s.io/v1` `Event`s, one per stage
//! (`RequestReceived`, then `ResponseComplete`; `ResponseStarted` first for watches and
//! other long-running requests), at the level the policy's first matching rule gives:
//! `None` (nothing), `Metadata` (who, what, when, the answer's code), `Request` (and the
//! request's body), `RequestResponse` (and the response's).

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::UserInfo;
use crate::handlers::ResourcePath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyFile {
    kind: String,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

/// What one request is, in the terms a policy rule matches.
#[derive(Debug, Default)]
struct Subject<'a> {
    user: Option<&'a UserInfo>,
    verb: String,
    path: String,
    resource: Option<ResourcePath>,
}

impl PolicyRule {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        let user_ok =
            self.users.is_empty() || subject.user.is_some_and(|u| self.users.contains(&u.name));
        let group_ok = self.user_groups.is_empty()
            || subject
                .user
                .is_some_and(|u| u.groups.iter().any(|g| self.user_groups.contains(g)));
        let verb_ok = self.verbs.is_empty() || self.verbs.contains(&subject.verb);
        if !(user_ok && group_ok && verb_ok) {
            return false;
        }
        match &subject.resource {
            Some(target) => {
                if !self.non_resource_urls.is_empty() {
                    return false;
                }
                let namespace = target.namespace.clone().unwrap_or_default();
                let namespace_ok = self.namespaces.is_empty()
                    || (!namespace.is_empty() && self.namespaces.contains(&namespace));
                let resource_ok = self.resources.is_empty()
                    || self.resources.iter().any(|g| resources_match(g, target));
                namespace_ok && resource_ok
            }
            None => {
                if !self.resources.is_empty() || !self.namespaces.is_empty() {
                    return false;
                }
                self.non_resource_urls.is_empty()
                    || self.non_resource_urls.iter().any(|url| {
                        *url == subject.path
                            || url
                                .strip_suffix('*')
                                .is_some_and(|prefix| subject.path.starts_with(prefix))
                    })
            }
        }
    }
}

fn resources_match(rule: &GroupResources, target: &ResourcePath) -> bool {
    if rule.group != target.group {
        return false;
    }
    let name_ok = rule.resource_names.is_empty()
        || target
            .name
            .as_ref()
            .is_some_and(|n| rule.resource_names.contains(n));
    let resource_ok = rule.resources.is_empty()
        || rule.resources.iter().any(|r| match &target.subresource {
            None => r == "*" || *r == target.resource,
            Some(sub) => {
                r == "*"
                    || *r == format!("{}/{sub}", target.resource)
                    || *r == format!("{}/*", target.resource)
                    || *r == format!("*/{sub}")
            }
        });
    name_ok && resource_ok
}

/// A parsed audit policy.
pub struct Policy {
    rules: Vec<PolicyRule>,
    omit_stages: Vec<String>,
}

impl Policy {
    pub fn parse(text: &str) -> anyhow::Result<Policy> {
        let file: PolicyFile = serde_yaml::from_str(text).context("not an audit Policy")?;
        if file.kind != "Policy" {
            bail!("kind is {:?}, not Policy", file.kind);
        }
        let stages = [
            "RequestReceived",
            "ResponseStarted",
            "ResponseComplete",
            "Panic",
        ];
        for stage in file
            .omit_stages
            .iter()
            .chain(file.rules.iter().flat_map(|r| &r.omit_stages))
        {
            if !stages.contains(&stage.as_str()) {
                bail!("unknown stage {stage:?}: use one of {}", stages.join(", "));
            }
        }
        Ok(Policy {
            rules: file.rules,
            omit_stages: file.omit_stages,
        })
    }

    /// The level and omitted stages for a request: the first matching rule's, else none.
    fn decide(&self, subject: &Subject<'_>) -> (Level, Vec<String>) {
        match self.rules.iter().find(|r| r.matches(subject)) {
            Some(rule) => {
                let mut omit = self.omit_stages.clone();
                omit.extend(rule.omit_stages.iter().cloned());
                (rule.level, omit)
            }
            None => (Level::None, Vec::new()),
        }
    }
}

/// The policy and where the events go.
pub struct AuditLog {
    policy: Policy,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    /// `--audit-policy-file` and `--audit-log-path` (`-` for stdout).
    pub fn open(policy_file: &std::path::Path, log_path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(policy_file)
            .with_context(|| format!("reading {}", policy_file.display()))?;
        let policy =
            Policy::parse(&text).with_context(|| format!("in {}", policy_file.display()))?;
        let sink: Box<dyn Write + Send> = if log_path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log_path)
                    .with_context(|| format!("opening the audit log {}", log_path.display()))?,
            )
        };
        Ok(AuditLog {
            policy,
            sink: Mutex::new(sink),
        })
    }

    fn write(&self, event: &Value) {
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let mut line = event.to_string();
        line.push('\n');
        if let Err(error) = sink.write_all(line.as_bytes()).and_then(|()| sink.flush()) {
            tracing::warn!(%error, "writing the audit log");
        }
    }
}

tokio::task_local! {
    /// The authorization decision of the current request, for its audit annotations.
    static DECISION: Arc<Mutex<Option<(bool, String)>>>;
}

/// Records the authorizer's decision for the current request's audit events.
pub fn note_decision(allowed: bool, reason: &str) {
    let _ = DECISION.try_with(|decision| {
        if let Ok(mut decision) = decision.lock() {
            decision.get_or_insert((allowed, reason.to_string()));
        }
    });
}

fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Whether the query sets `name` to true.
fn query_flag(request: &Request, name: &str) -> bool {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair == format!("{name}=true") || pair == format!("{name}=1"))
}

/// Requests that stream until the client leaves: their events are `ResponseStarted` when
/// the answer begins and `ResponseComplete` when it ends.
fn is_long_running(request: &Request, target: Option<&ResourcePath>) -> bool {
    query_flag(request, "watch")
        || query_flag(request, "follow")
        || target.is_some_and(|t| {
            t.legacy_watch
                || matches!(
                    t.subresource.as_deref(),
                    Some("exec" | "attach" | "portforward" | "proxy")
                )
        })
}

/// Middleware: audits each authenticated request as the policy says.
pub async fn record(
    State(log): State<Option<Arc<AuditLog>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(log) = log else {
        return next.run(request).await;
    };
    let user = request.extensions().get::<UserInfo>().cloned();
    let path = request.uri().path().to_string();
    let target = ResourcePath::parse(&path);
    let long_running = is_long_running(&request, target.as_ref());
    let verb = match &target {
        Some(t) => {
            let watching = t.legacy_watch || query_flag(&request, "watch");
            crate::handlers::verb_of(request.method(), t, watching).to_string()
        }
        None => request.method().as_str().to_lowercase(),
    };
    let subject = Subject {
        user: user.as_ref(),
        verb: verb.clone(),
        path: path.clone(),
        resource: target.clone(),
    };
    let (level, omit) = log.policy.decide(&subject);
    if level == Level::None {
        return next.run(request).await;
    }
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": format!("{level:?}"),
        "auditID": uuid::Uuid::new_v4().to_string(),
        "requestURI": request.uri().to_string(),
        "verb": verb,
        "requestReceivedTimestamp": timestamp(),
    });
    if let Some(user) = &user {
        event["user"] = json!({"username": user.name, "groups": user.groups});
        if !user.uid.is_empty() {
            event["user"]["uid"] = json!(user.uid);
        }
    }
    let headers = request.headers();
    if let Some(impersonated) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    {
        let groups: Vec<&str> = headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        event["impersonatedUser"] = json!({"username": impersonated, "groups": groups});
    }
    if let Some(agent) = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        event["userAgent"] = json!(agent);
    }
    if let Some(peer) = request
        .extensions()
        .get::<crate::auth::PeerAddress>()
        .map(|p| p.0.ip().to_string())
    {
        event["sourceIPs"] = json!([peer]);
    }
    if let Some(target) = &target {
        let mut reference = Map::new();
        reference.insert("resource".into(), json!(target.resource));
        if let Some(ns) = &target.namespace {
            reference.insert("namespace".into(), json!(ns));
        }
        if let Some(name) = &target.name {
            reference.insert("name".into(), json!(name));
        }
        if !target.group.is_empty() {
            reference.insert("apiGroup".into(), json!(target.group));
        }
        reference.insert("apiVersion".into(), json!(target.version));
        if let Some(sub) = &target.subresource {
            reference.insert("subresource".into(), json!(sub));
        }
        event["objectRef"] = Value::Object(reference);
    }
    // Request bodies are kept from the Request level on.
    let request = if level >= Level::Request && has_body(request.method()) {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, crate::server::MAX_BODY_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return crate::status::ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    "the request is too large",
                )
                .into_response()
            }
        };
        if let Some(object) = body_object(&parts.headers, &bytes) {
            event["requestObject"] = object;
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let emit = |event: &Value, stage: &str| {
        if !omit.iter().any(|s| s == stage) {
            let mut event = event.clone();
            event["stage"] = json!(stage);
            event["stageTimestamp"] = json!(timestamp());
            log.write(&event);
        }
    };
    emit(&event, "RequestReceived");
    let decision = Arc::new(Mutex::new(None));
    let response = DECISION.scope(decision.clone(), next.run(request)).await;
    if let Ok(Some((allowed, reason))) = decision.lock().map(|d| d.clone()) {
        let mut annotations = json!({
            "authorization.k8s.io/decision": if allowed { "allow" } else { "forbid" },
        });
        if !reason.is_empty() {
            annotations["authorization.k8s.io/reason"] = json!(reason);
        }
        event["annotations"] = annotations;
    }
    event["responseStatus"] = json!({"metadata": {}, "code": response.status().as_u16()});
    if long_running && response.status().is_success() {
        emit(&event, "ResponseStarted");
        // The stream ends when the client goes or the server stops it: then it is complete.
        let completion = Completion {
            log: log.clone(),
            event: Some(event),
            omitted: omit.iter().any(|s| s == "ResponseComplete"),
        };
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _ = &completion;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    if level >= Level::RequestResponse {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        if let Some(object) = body_object(&parts.headers, &bytes) {
            event["responseObject"] = object;
        }
        emit(&event, "ResponseComplete");
        return Response::from_parts(parts, Body::from(bytes));
    }
    emit(&event, "ResponseComplete");
    response
}

fn has_body(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    )
}

/// A body as it goes into an event: the object, whether it came as JSON, YAML or
/// protobuf, or a patch (JSON, merge, strategic, or an apply configuration).
fn body_object(headers: &http::HeaderMap, bytes: &[u8]) -> Option<Value> {
    if let Ok(object) = crate::encoding::decode_body(headers, bytes) {
        return Some(object);
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("yaml") {
        serde_yaml::from_slice(bytes).ok()
    } else {
        serde_json::from_slice(bytes).ok()
    }
}

/// Writes a long-running request's `ResponseComplete` event when its stream is dropped.
struct Completion {
    log: Arc<AuditLog>,
    event: Option<Value>,
    omitted: bool,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let (Some(mut event), false) = (self.event.take(), self.omitted) {
            event["stage"] = json!("ResponseComplete");
            event["stageTimestamp"] = json!(timestamp());
            self.log.write(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn level_of(policy: &Policy, user: &UserInfo, verb: &str, path: &str) -> Level {
        let subject = Subject {
            user: Some(user),
            verb: verb.into(),
            path: path.into(),
            resource: ResourcePath::parse(path),
        };
        policy.decide(&subject).0
    }

    #[test]
    fn the_first_matching_rule_sets_the_level() {
        let policy = Policy::parse(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch", "list"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets", "pods/log"]
- level: Request
  namespaces: ["audited"]
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: Metadata
"#,
        )
        .expect("policy");
        let alice = user("alice", &["devs"]);
        let proxy = user("system:kube-proxy", &[]);
        assert_eq!(
            level_of(&policy, &proxy, "list", "/api/v1/services"),
            Level::None
        );
        assert_eq!(
            level_of(&policy, &proxy, "get", "/api/v1/namespaces/a/services/s"),
            Level::Metadata
        );
        assert_eq!(
            level_of(
                &policy,
                &alice,
                "get",
                "/api/v1/namespaces/audited/secrets/s"
            ),
            Level::Metadata
        );
        assert_eq!(
            level_of(&policy, &alice, "get", "/api/v1/namespaces/x/pods/p/log"),
            Level::Metadata
        );
        assert_eq!(
            level_of(
                &policy,
                &alice,
                "create",
                "/apis/apps/v1/namespaces/audited/deployments"
            ),
            Level::Request
        );
        assert_eq!(
            level_of(&policy, &alice, "get", "/healthz/ping"),
            Level::None
        );
        assert_eq!(level_of(&policy, &alice, "get", "/apis"), Level::Metadata);
        assert_eq!(
            policy.decide(&Subject::default()).1,
            vec!["RequestReceived".to_string()]
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::parse("kind: Policy\nrules:\n- level: Loud\n").is_err());
        assert!(Policy::parse("kind: Policy\nomitStages: [Never]\n").is_err());
        assert!(Policy::parse("kind: Other\n").is_err());
    }
}
