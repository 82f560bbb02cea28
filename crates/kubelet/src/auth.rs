//! Who may use the kubelet's API, decided as upstream's kubelet decides in its webhook
//! modes: a client is who its certificate (of the cluster CA) names, or who the API
//! server says a bearer token belongs to (`TokenReview`); each request is then put to
//! the API server as a `SubjectAccessReview` of `nodes/<subresource>` on this node,
//! with upstream's fine-grained subresources (`pods`, `healthz`) tried before `proxy`.
//! Answers are kept as long as upstream's defaults keep them: tokens 2 minutes,
//! allowed requests 5 minutes, denied ones 30 seconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Past this many entries, expired ones are swept out on the next insert.
const SWEEP_ABOVE: usize = 1024;

/// An authenticated client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403, in upstream's words.
    Forbidden(String),
    /// 500: the API server could not be asked.
    Error(String),
}

/// Answers kept for a while.
struct Cache<V> {
    entries: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> Cache<V> {
    fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (value, until) = entries.get(key)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    fn put(&self, key: String, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > SWEEP_ABOVE {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
        }
        entries.insert(key, (value, Instant::now() + ttl));
    }
}

/// Upstream's attributes of a request to the kubelet: the verb its HTTP method stands
/// for, and the `nodes` subresources to try in turn (any one allowing is enough).
pub fn request_attributes(method: &http::Method, path: &str) -> (&'static str, Vec<&'static str>) {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::GET => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let mut subresources = Vec::new();
    if under("/pods") || under("/runningpods") {
        subresources.push("pods");
    } else if under("/healthz") {
        subresources.push("healthz");
    } else if under("/configz") {
        subresources.push("configz");
    }
    subresources.push(if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    });
    (verb, subresources)
}

/// The kubelet's authenticator and authorizer, asking the API server through `client`.
pub struct KubeletAuth {
    client: kube::Client,
    node_name: String,
    tokens: Cache<Option<User>>,
    decisions: Cache<bool>,
}

impl KubeletAuth {
    pub fn new(client: kube::Client, node_name: String) -> Self {
        KubeletAuth {
            client,
            node_name,
            tokens: Cache::new(),
            decisions: Cache::new(),
        }
    }

    /// Who a bearer token belongs to, if anyone; an error if the API server could not
    /// be asked.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<User>, String> {
        use sha2::Digest;
        let key = format!("{:x}", sha2::Sha256::digest(token.as_bytes()));
        if let Some(user) = self.tokens.get(&key) {
            return Ok(user);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("token review: {e}"))?;
        let status = answer.status.unwrap_or_default();
        let user = status
            .authenticated
            .unwrap_or(false)
            .then(|| status.user.unwrap_or_default())
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            });
        self.tokens.put(key, user.clone(), TOKEN_TTL);
        Ok(user)
    }

    /// Whether `user` may make this request.
    pub async fn authorize(
        &self,
        user: &User,
        method: &http::Method,
        path: &str,
    ) -> Result<(), Refusal> {
        let (verb, subresources) = request_attributes(method, path);
        for subresource in &subresources {
            if self.allowed(user, verb, subresource).await? {
                return Ok(());
            }
        }
        Err(Refusal::Forbidden(format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
            user.name,
            subresources.join(" ")
        )))
    }

    async fn allowed(&self, user: &User, verb: &str, subresource: &str) -> Result<bool, Refusal> {
        let key = format!("{user:?}\u{0}{verb}\u{0}{subresource}");
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.to_string()),
                    name: Some(self.node_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, user = %user.name, "subject access review failed");
                Refusal::Error(format!(
                    "Authorization error (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                    user.name
                ))
            })?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        self.decisions.put(key, allowed, ttl);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn requests_map_to_upstreams_node_subresources() {
        let attrs = |method: Method, path: &str| request_attributes(&method, path);
        assert_eq!(attrs(Method::GET, "/stats/summary"), ("get", vec!["stats"]));
        assert_eq!(attrs(Method::GET, "/metrics"), ("get", vec!["metrics"]));
        assert_eq!(
            attrs(Method::GET, "/metrics/resource"),
            ("get", vec!["metrics"])
        );
        assert_eq!(attrs(Method::GET, "/logs/syslog"), ("get", vec!["log"]));
        assert_eq!(attrs(Method::GET, "/pods"), ("get", vec!["pods", "proxy"]));
        assert_eq!(
            attrs(Method::GET, "/healthz"),
            ("get", vec!["healthz", "proxy"])
        );
        assert_eq!(
            attrs(Method::POST, "/exec/ns/p/c"),
            ("create", vec!["proxy"])
        );
        assert_eq!(
            attrs(Method::GET, "/containerLogs/ns/p/c"),
            ("get", vec!["proxy"])
        );
        // A prefix counts only as a whole path segment.
        assert_eq!(attrs(Method::GET, "/statsx"), ("get", vec!["proxy"]));
        assert_eq!(attrs(Method::HEAD, "/logs/"), ("", vec!["log"]));
    }

    #[test]
    fn cached_answers_expire() {
        let cache = Cache::new();
        cache.put("a".into(), true, Duration::from_secs(60));
        cache.put("b".into(), false, Duration::ZERO);
        assert_eq!(cache.get("a"), Some(true));
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("c"), None);
    }
}
