//! The availability loop, as upstream's APIService availability controller: each remote
//! APIService is checked when it changes, when its Service or EndpointSlices change, and
//! every [`RECHECK`]; the check resolves the Service to a ready endpoint and asks it for
//! the group version's resource list. The outcome is the `Available` condition (with
//! upstream's reasons) and, on success, the list the discovery documents show. Local
//! APIServices are kept in line with the catalogue on the same beat ([`super::local`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::{Aggregator, Remote, PREFIX};
use crate::registry::{Action, Registry};
use crate::services::EndpointError;
use crate::status::ApiResult;

/// How often every APIService is looked at again, changed or not.
const RECHECK: Duration = Duration::from_secs(10);
/// How long a discovery check may take (upstream's is 5 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The identity discovery checks are made as, as upstream's aggregator makes them.
const DISCOVERY_USER: &str = "system:kube-aggregator";

/// An `Available` condition to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn available(reason: &'static str, message: &str) -> Self {
        Condition {
            status: "True",
            reason,
            message: message.to_string(),
        }
    }

    fn unavailable(reason: &'static str, message: String) -> Self {
        Condition {
            status: "False",
            reason,
            message,
        }
    }
}

/// Writes an APIService's `Available` condition unless it already says the same.
pub async fn write_condition(
    registry: &Registry,
    name: &str,
    condition: &Condition,
) -> ApiResult<()> {
    let resource = registry
        .catalogue
        .get(super::GROUP, "v1", "apiservices")
        .ok_or_else(|| crate::status::ApiError::internal("APIServices are not served"))?;
    registry
        .guaranteed_update(&resource, None, name, false, |mut current| {
            let field =
                |c: &Value, name: &str| c.get(name).and_then(Value::as_str).map(str::to_string);
            let unchanged = crate::object::condition(&current, "Available").is_some_and(|c| {
                field(c, "status").as_deref() == Some(condition.status)
                    && field(c, "reason").as_deref() == Some(condition.reason)
                    && field(c, "message") == Some(condition.message.clone())
            });
            if unchanged {
                return Ok(Action::Keep);
            }
            crate::object::set_condition(
                &mut current,
                "Available",
                condition.status,
                condition.reason,
                &condition.message,
            );
            Ok(Action::Replace(current))
        })
        .await
        .map(|_| ())
}

/// Starts the loop in the background.
pub fn start(aggregator: Arc<Aggregator>) {
    tokio::spawn(run(aggregator));
}

async fn run(aggregator: Arc<Aggregator>) {
    let registry = aggregator.registry.clone();
    let mut live = registry.cache.subscribe_with_state(PREFIX).1.live;
    let mut tick = tokio::time::interval(RECHECK);
    loop {
        let work = tokio::select! {
            event = live.recv() => match event {
                Ok(event) => work_for(&aggregator, &event),
                Err(RecvError::Lagged(_)) => Work::everything(),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => Work::everything(),
        };
        if work.local {
            if let Err(e) = super::local::reconcile(&registry).await {
                tracing::warn!(error = %e, "keeping the local APIServices");
            }
        }
        let remotes = work.remotes.unwrap_or_else(|| aggregator.remotes());
        for remote in remotes {
            let (condition, resources) = check(&aggregator, &remote).await;
            aggregator.set_discovered(&remote.name, resources);
            if let Err(e) = write_condition(&registry, &remote.name, &condition).await {
                if e.code != 404 {
                    tracing::warn!(api_service = %remote.name, error = %e.message, "writing APIService availability");
                }
            }
        }
    }
}

/// What one change calls for.
struct Work {
    /// The remotes to check (`None`: every one).
    remotes: Option<Vec<Remote>>,
    /// Whether the local APIServices may need work.
    local: bool,
}

impl Work {
    fn everything() -> Self {
        Work {
            remotes: None,
            local: true,
        }
    }

    fn remotes(remotes: Vec<Remote>) -> Self {
        Work {
            remotes: Some(remotes),
            local: false,
        }
    }
}

/// The work a store change calls for: an APIService checked again; a definition's
/// change reflected in the local APIServices; the remotes whose Service lives in the
/// namespace of a changed Service or EndpointSlice checked again.
fn work_for(aggregator: &Aggregator, event: &crate::cache::CacheEvent) -> Work {
    let key = &*event.object.key;
    if let Some(name) = key.strip_prefix(PREFIX) {
        let remote = event
            .object
            .value()
            .ok()
            .and_then(|o| Remote::from_api_service(&o));
        if remote.is_none() || event.kind == crate::cache::EventType::Deleted {
            aggregator.set_discovered(name, None);
            return Work::remotes(Vec::new());
        }
        return Work::remotes(remote.into_iter().collect());
    }
    if key.starts_with("/registry/apiextensions.k8s.io/customresourcedefinitions/") {
        return Work {
            remotes: Some(Vec::new()),
            local: true,
        };
    }
    let namespace = ["/registry/services/specs/", "/registry/endpointslices/"]
        .iter()
        .find_map(|prefix| key.strip_prefix(prefix))
        .and_then(|rest| rest.split('/').next());
    let Some(namespace) = namespace else {
        return Work::remotes(Vec::new());
    };
    Work::remotes(
        aggregator
            .remotes()
            .into_iter()
            .filter(|r| r.namespace == namespace)
            .collect(),
    )
}

/// Checks one remote APIService: its condition, and its resource list when it answered.
async fn check(aggregator: &Aggregator, remote: &Remote) -> (Condition, Option<Value>) {
    let registry = &aggregator.registry;
    let (name, namespace) = (&remote.service, &remote.namespace);
    let address =
        match crate::services::resolve_endpoint(registry, namespace, name, remote.port) {
            Ok(address) => address,
            Err(EndpointError::ServiceNotFound { .. }) => {
                return (
                    Condition::unavailable(
                        "ServiceNotFound",
                        format!("service/{name} in {namespace:?} is not present"),
                    ),
                    None,
                )
            }
            Err(EndpointError::NoSuchPort { port, .. }) => {
                return (
                    Condition::unavailable(
                        "ServicePortError",
                        format!("service/{name} in {namespace:?} is not listening on port {port}"),
                    ),
                    None,
                )
            }
            Err(EndpointError::NoEndpoints { port_name, .. }) => {
                return (
                    Condition::unavailable(
                        "MissingEndpoints",
                        format!("endpoints for service/{name} in {namespace:?} have no addresses with port name {port_name:?}"),
                    ),
                    None,
                )
            }
        };
    let path = format!("/apis/{}/{}", remote.group, remote.version);
    let url = format!("https://{address}{path}");
    match tokio::time::timeout(
        CHECK_TIMEOUT,
        discover(aggregator, remote, &address, &path),
    )
    .await
    {
        Ok(Ok(list)) => (
            Condition::available("Passed", "all checks passed"),
            Some(list),
        ),
        Ok(Err(e)) => (
            Condition::unavailable(
                "FailedDiscoveryCheck",
                format!("failing or missing response from {url}: {e}"),
            ),
            None,
        ),
        Err(_) => (
            Condition::unavailable(
                "FailedDiscoveryCheck",
                format!("failing or missing response from {url}: Get \"{url}\": context deadline exceeded"),
            ),
            None,
        ),
    }
}

/// `GET /apis/<group>/<version>` on the remote server, as the aggregator.
async fn discover(
    aggregator: &Aggregator,
    remote: &Remote,
    address: &str,
    path: &str,
) -> Result<Value, String> {
    use super::authentication::{GROUP_HEADER, USER_HEADER};
    let config = crate::service_client::tls_config(&remote.trust(&aggregator.client_certificate))?;
    let (mut sender, _connection) = crate::service_client::connect(address, &remote.host(), config)
        .await
        .map_err(|e| format!("Get \"https://{address}{path}\": {e}"))?;
    let request = http::Request::get(path)
        .header(http::header::HOST, remote.host())
        .header(http::header::ACCEPT, "application/json")
        .header(USER_HEADER, DISCOVERY_USER)
        .header(GROUP_HEADER, "system:masters")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, body) = crate::service_client::exchange(&mut sender, request).await?;
    if !status.is_success() {
        return Err(format!(
            "bad status from https://{address}{path}: {}",
            status.as_u16()
        ));
    }
    let list: Value =
        serde_json::from_slice(&body).map_err(|e| format!("not an APIResourceList: {e}"))?;
    if list.get("resources").and_then(Value::as_array).is_none() {
        return Err("not an APIResourceList: no resources".into());
    }
    Ok(list)
}
