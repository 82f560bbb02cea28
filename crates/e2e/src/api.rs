//! One resource driven through the API's verbs with kube-rs, as upstream's API
//! conformance tests drive it with client-go: create, get, list (in a namespace and
//! across all), patch, replace, the `status` subresource, delete, delete a collection
//! and watch. Objects go in and out as JSON so one helper serves every kind.
//!
//! [`Resource::lifecycle`] is the walk most of those tests share; each test adds what is
//! particular to its kind.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use serde_json::{json, Value};

/// A resource of the API, in one namespace (or cluster-scoped).
pub struct Resource {
    client: kube::Client,
    api: Api<DynamicObject>,
    everywhere: Api<DynamicObject>,
    namespaced: bool,
    pub api_version: String,
    pub kind: String,
}

/// The API's answer to a refused request: `code`, `reason`, `message`.
pub type Refusal = kube::core::Status;

fn to_value(object: DynamicObject) -> Value {
    serde_json::to_value(object).expect("an object as JSON")
}

fn from_value(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("JSON as an object")
}

/// The names of `items`, sorted.
pub fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

impl Resource {
    /// `plural` of `api_version` (`v1`, `apps/v1`), in `namespace` if it is namespaced.
    pub fn new(
        client: &kube::Client,
        api_version: &str,
        kind: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Resource {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        Resource {
            client: client.clone(),
            api,
            everywhere: Api::all_with(client.clone(), &resource),
            namespaced: namespace.is_some(),
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    /// `object` with this resource's `apiVersion` and `kind` filled in.
    fn typed(&self, mut object: Value) -> Value {
        object["apiVersion"] = json!(self.api_version);
        object["kind"] = json!(self.kind);
        object
    }

    pub async fn try_create(&self, object: Value) -> Result<Value, Box<Refusal>> {
        self.api
            .create(&PostParams::default(), &from_value(self.typed(object)))
            .await
            .map(to_value)
            .map_err(refusal)
    }

    pub async fn create(&self, object: Value) -> Value {
        let what = format!("creating {} {}", self.kind, object["metadata"]["name"]);
        self.try_create(object)
            .await
            .unwrap_or_else(|e| fail(&what, e))
    }

    /// Creates `object` and expects a refusal, which it returns.
    pub async fn refused_create(&self, object: Value) -> Box<Refusal> {
        match self.try_create(object).await {
            Ok(created) => panic!("{} created, expected a refusal: {created}", self.kind),
            Err(e) => e,
        }
    }

    pub async fn try_get(&self, name: &str) -> Result<Value, Box<Refusal>> {
        self.api.get(name).await.map(to_value).map_err(refusal)
    }

    pub async fn get(&self, name: &str) -> Value {
        let what = format!("getting {} {name}", self.kind);
        self.try_get(name).await.unwrap_or_else(|e| fail(&what, e))
    }

    /// Whether `name` is gone (a `404` on get).
    pub async fn is_gone(&self, name: &str) -> bool {
        matches!(self.try_get(name).await, Err(e) if e.code == 404)
    }

    /// The objects `selector` picks here, and the list's `resourceVersion`.
    pub async fn list(&self, selector: &str) -> (Vec<Value>, String) {
        list(&self.api, selector).await
    }

    /// The objects `selector` picks in every namespace.
    pub async fn list_everywhere(&self, selector: &str) -> Vec<Value> {
        list(&self.everywhere, selector).await.0
    }

    pub async fn try_patch(&self, name: &str, patch: Patch<Value>) -> Result<Value, Box<Refusal>> {
        self.api
            .patch(name, &PatchParams::default(), &patch)
            .await
            .map(to_value)
            .map_err(refusal)
    }

    /// A JSON merge patch.
    pub async fn merge(&self, name: &str, patch: Value) -> Value {
        self.patch(name, Patch::Merge(patch)).await
    }

    pub async fn patch(&self, name: &str, patch: Patch<Value>) -> Value {
        let what = format!("patching {} {name}", self.kind);
        self.try_patch(name, patch)
            .await
            .unwrap_or_else(|e| fail(&what, e))
    }

    pub async fn try_replace(&self, object: Value) -> Result<Value, Box<Refusal>> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.api
            .replace(
                &name,
                &PostParams::default(),
                &from_value(self.typed(object)),
            )
            .await
            .map(to_value)
            .map_err(refusal)
    }

    pub async fn replace(&self, object: Value) -> Value {
        let what = format!("replacing {} {}", self.kind, object["metadata"]["name"]);
        self.try_replace(object)
            .await
            .unwrap_or_else(|e| fail(&what, e))
    }

    /// `GET …/status`.
    pub async fn get_status(&self, name: &str) -> Value {
        self.api
            .get_status(name)
            .await
            .map(to_value)
            .unwrap_or_else(|e| {
                fail(
                    &format!("reading {} {name}'s status", self.kind),
                    refusal(e),
                )
            })
    }

    /// A patch of the `status` subresource.
    pub async fn patch_status(&self, name: &str, patch: Patch<Value>) -> Value {
        self.api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
            .map(to_value)
            .unwrap_or_else(|e| {
                fail(
                    &format!("patching {} {name}'s status", self.kind),
                    refusal(e),
                )
            })
    }

    /// `PUT …/status` with `object`.
    pub async fn try_replace_status(&self, object: Value) -> Result<Value, Box<Refusal>> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let body = from_value(self.typed(object));
        self.api
            .replace_status(&name, &PostParams::default(), &body)
            .await
            .map(to_value)
            .map_err(refusal)
    }

    pub async fn replace_status(&self, object: Value) -> Value {
        let what = format!(
            "replacing {} {}'s status",
            self.kind, object["metadata"]["name"]
        );
        self.try_replace_status(object)
            .await
            .unwrap_or_else(|e| fail(&what, e))
    }

    pub async fn delete(&self, name: &str) {
        if let Err(e) = self.api.delete(name, &DeleteParams::default()).await {
            fail(&format!("deleting {} {name}", self.kind), refusal(e));
        }
    }

    /// One `DELETE` on the collection, picked by `selector`.
    pub async fn delete_collection(&self, selector: &str) {
        let picked = ListParams::default().labels(selector);
        if let Err(e) = self
            .api
            .delete_collection(&DeleteParams::default(), &picked)
            .await
        {
            fail(
                &format!("deleting a collection of {}", self.kind),
                refusal(e),
            );
        }
    }

    /// A watch of the objects `selector` picks, from `resource_version`.
    pub async fn watch(&self, selector: &str, resource_version: &str) -> Watch {
        let params = WatchParams::default().labels(selector).timeout(60);
        let stream = self
            .api
            .watch(&params, resource_version)
            .await
            .unwrap_or_else(|e| fail(&format!("watching {}", self.kind), refusal(e)));
        Watch {
            stream: stream.boxed(),
        }
    }

    /// Upstream's common walk through a resource's lifecycle: two objects made by `make`
    /// (given a name and labels) are created, read, listed by label (here and, for a
    /// namespaced resource, across namespaces), patched, replaced, deleted one by one and
    /// as a collection, while a watch from the list sees every step in order. `label`
    /// must be unique to the test, since cluster-scoped objects share the server.
    ///
    /// Returns the first object as it was created, for checks of the kind's own fields.
    pub async fn lifecycle(&self, label: &str, make: impl Fn(&str, Value) -> Value) -> Value {
        let selector = format!("e2e-lifecycle={label}");
        let (first, second) = (format!("{label}-one"), format!("{label}-two"));
        let (before, rv) = self.list(&selector).await;
        assert!(before.is_empty(), "{selector} already picks {before:?}");
        let mut watch = self.watch(&selector, &rv).await;

        let labels = json!({"e2e-lifecycle": label});
        let created = self.create(make(&first, labels.clone())).await;
        self.create(make(&second, labels)).await;
        assert_eq!(created["metadata"]["name"], first.as_str());
        assert!(created["metadata"]["uid"].is_string(), "{created}");
        let got = self.get(&first).await;
        assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(
            names(&self.list(&selector).await.0),
            [first.clone(), second.clone()]
        );
        if self.namespaced {
            assert_eq!(
                names(&self.list_everywhere(&selector).await),
                [first.clone(), second.clone()]
            );
        }

        let patched = self
            .merge(
                &first,
                json!({"metadata": {"annotations": {"e2e-patched": "true"}}}),
            )
            .await;
        assert_eq!(patched["metadata"]["annotations"]["e2e-patched"], "true");
        assert_eq!(
            self.get(&first).await["metadata"]["annotations"]["e2e-patched"],
            "true"
        );

        let mut current = self.get(&first).await;
        current["metadata"]["labels"]["e2e-updated"] = json!("true");
        let replaced = self.replace(current.clone()).await;
        assert_eq!(replaced["metadata"]["labels"]["e2e-updated"], "true");
        assert_ne!(
            replaced["metadata"]["resourceVersion"],
            current["metadata"]["resourceVersion"]
        );
        // The replaced version is stale now: writing it again conflicts.
        let stale = self.try_replace(current).await;
        assert!(
            matches!(&stale, Err(e) if e.code == 409),
            "a stale replace: {stale:?}"
        );

        self.delete(&first).await;
        assert!(self.is_gone(&first).await, "{first} still there");
        self.delete_collection(&selector).await;
        assert!(self.list(&selector).await.0.is_empty());
        assert!(self.is_gone(&second).await, "{second} still there");

        let seen = watch
            .next_events(6, |_, _| true, Duration::from_secs(20))
            .await;
        let seen: Vec<(String, String)> = seen
            .iter()
            .map(|(kind, object)| {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                (kind.clone(), name.to_string())
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("ADDED", &first),
            ("ADDED", &second),
            ("MODIFIED", &first),
            ("MODIFIED", &first),
            ("DELETED", &first),
            ("DELETED", &second),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n.clone()))
        .collect();
        assert_eq!(seen, expected, "the watch of {}", self.kind);
        created
    }
}

/// What upstream's generic resource test (`e2econformance.TestResource`) needs of a
/// kind: a valid object without status, a change to it, a status, and the same spec
/// change as the patches of each type send it.
pub struct Case {
    /// The object to create (name and labels are set by the walk).
    pub initial: Value,
    /// A change of the spec (or the labels, where the spec is fixed), made by a PUT.
    pub update: fn(&mut Value),
    /// A status to write through `status`, if the kind has that subresource.
    pub status: Option<Value>,
    /// The change a strategic merge, JSON merge and apply patch each make, as a fragment
    /// of the object; it must show in the result.
    pub patch: Value,
    /// The same as a JSON patch.
    pub json_patch: Value,
}

/// Whether every field `expected` has is in `actual` with the same value; lists match
/// item by item, extra fields and map entries are allowed (defaults, admission).
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|found| contains(found, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() >= e.len() && e.iter().zip(a).all(|(e, a)| contains(a, e))
        }
        _ => actual == expected,
    }
}

impl Resource {
    /// A patch of any type, an apply with the test's field manager.
    async fn send_patch(&self, name: &str, patch: Patch<Value>, status: bool) -> Value {
        let params = match patch {
            Patch::Apply(_) => PatchParams::apply("e2e-conformance").force(),
            _ => PatchParams::default(),
        };
        let sent = if status {
            self.api.patch_status(name, &params, &patch).await
        } else {
            self.api.patch(name, &params, &patch).await
        };
        sent.map(to_value).unwrap_or_else(|e| {
            fail(
                &format!(
                    "{:?} patch of {} {name} (status: {status})",
                    patch, self.kind
                ),
                refusal(e),
            )
        })
    }

    /// Upstream's generic resource test: the object created, read, listed here and
    /// across namespaces, updated, its status updated, patched with each patch type
    /// (spec and status, each on a fresh copy), deleted, and deleted as a collection,
    /// while a watch sees it come and go. `label` makes cluster-scoped names unique.
    pub async fn crud(&self, label: &str, case: Case) {
        let name = format!("test-{label}");
        let selector = format!("e2e-crud={label}");
        let fresh = |name: &str| {
            let mut object = case.initial.clone();
            object["metadata"]["name"] = json!(name);
            object["metadata"]["labels"] = json!({"e2e-crud": label});
            object
        };
        let (_, rv) = self.list(&selector).await;
        let mut watch = self.watch(&selector, &rv).await;

        let created = self.create(fresh(&name)).await;
        assert!(contains(&created, &fresh(&name)), "created: {created}");
        assert_eq!(
            self.get(&name).await["metadata"]["uid"],
            created["metadata"]["uid"]
        );
        assert_eq!(names(&self.list(&selector).await.0), [name.as_str()]);
        if self.namespaced {
            assert_eq!(
                names(&self.list_everywhere(&selector).await),
                [name.as_str()]
            );
        }

        let mut changed = self.get(&name).await;
        (case.update)(&mut changed);
        let updated = self.replace(changed.clone()).await;
        changed["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"].clone();
        changed["metadata"]["managedFields"] = updated["metadata"]["managedFields"].clone();
        assert!(contains(&updated, &changed), "updated: {updated}");
        if let Some(status) = &case.status {
            let mut object = self.get(&name).await;
            object["status"] = status.clone();
            let written = self.replace_status(object).await;
            assert!(contains(&written["status"], status), "status: {written}");
            assert_eq!(
                written["spec"], updated["spec"],
                "a status write left the spec"
            );
        }

        self.patch_each_type(&name, &fresh(&name), &case.patch, &case.json_patch, false)
            .await;
        if let Some(status) = &case.status {
            let json_patch = json!([{"op": "add", "path": "/status", "value": status}]);
            let fragment = json!({"status": status});
            self.patch_each_type(&name, &fresh(&name), &fragment, &json_patch, true)
                .await;
        }

        self.delete(&name).await;
        assert!(self.is_gone(&name).await);
        for n in ["a", "b"] {
            self.create(fresh(&format!("{name}-{n}"))).await;
        }
        self.delete_collection(&selector).await;
        assert!(self.list(&selector).await.0.is_empty());

        let seen = watch
            .next_events(1, |kind, _| kind == "ADDED", Duration::from_secs(20))
            .await;
        assert_eq!(seen[0].1["metadata"]["name"], name.as_str());
    }

    /// Patches a fresh copy of `initial` (made anew for each) with each patch type:
    /// `fragment` as a strategic merge, JSON merge and apply patch, `json_patch` as a
    /// JSON patch; each result must contain `fragment`. `status`: through `status`.
    async fn patch_each_type(
        &self,
        name: &str,
        initial: &Value,
        fragment: &Value,
        json_patch: &Value,
        status: bool,
    ) {
        let patches = [
            ("strategic", Some(Patch::Strategic(fragment.clone()))),
            ("merge", Some(Patch::Merge(fragment.clone()))),
            ("apply", Some(Patch::Apply(self.applied(name, fragment)))),
            ("json", None),
        ];
        for (what, patch) in patches {
            self.delete(name).await;
            self.create(initial.clone()).await;
            let patched = match patch {
                Some(patch) => self.send_patch(name, patch, status).await,
                None => self.json_patch(name, json_patch, status).await,
            };
            assert!(
                contains(&patched, fragment),
                "{what} patch (status: {status}): {patched}"
            );
        }
    }

    /// A JSON patch (RFC 6902) of `name` or its status.
    async fn json_patch(&self, name: &str, patch: &Value, status: bool) -> Value {
        let path = format!(
            "{}/{name}{}",
            self.api.resource_url(),
            if status { "/status" } else { "" }
        );
        let content_type = [("Content-Type", "application/json-patch+json")];
        let (code, body) = raw(
            &self.client,
            "PATCH",
            &path,
            &content_type,
            Some(patch.to_string()),
        )
        .await;
        assert_eq!(code, 200, "JSON patch of {path}: {body}");
        body
    }

    /// Waits (20 s at most) until the object `name` (a CRD) has an `Established`
    /// condition that is `True`.
    pub async fn wait_established(&self, name: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let object = self.get(name).await;
            let established = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} not established"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `fragment` as a complete apply configuration of `name`.
    fn applied(&self, name: &str, fragment: &Value) -> Value {
        let mut applied = self.typed(fragment.clone());
        applied["metadata"]["name"] = json!(name);
        applied
    }
}

/// An open watch.
pub struct Watch {
    stream: futures::stream::BoxStream<'static, kube::Result<WatchEvent<DynamicObject>>>,
}

impl Watch {
    /// The next `count` events (type, object) that `wanted` keeps, within `within`.
    pub async fn next_events(
        &mut self,
        count: usize,
        wanted: impl Fn(&str, &Value) -> bool,
        within: Duration,
    ) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        let collect = async {
            while seen.len() < count {
                let event = match self.stream.try_next().await {
                    Ok(Some(event)) => event,
                    Ok(None) => panic!("the watch ended after {seen:?}"),
                    Err(e) => panic!("the watch failed after {seen:?}: {e}"),
                };
                let (kind, object) = match event {
                    WatchEvent::Added(o) => ("ADDED", to_value(o)),
                    WatchEvent::Modified(o) => ("MODIFIED", to_value(o)),
                    WatchEvent::Deleted(o) => ("DELETED", to_value(o)),
                    WatchEvent::Bookmark(_) => continue,
                    WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
                };
                if wanted(kind, &object) {
                    seen.push((kind.to_string(), object));
                }
            }
        };
        if tokio::time::timeout(within, collect).await.is_err() {
            panic!("timed out waiting for {count} watch events; saw {seen:?}");
        }
        seen
    }
}

async fn list(api: &Api<DynamicObject>, selector: &str) -> (Vec<Value>, String) {
    let params = ListParams::default().labels(selector);
    let list = api
        .list(&params)
        .await
        .unwrap_or_else(|e| fail("listing", refusal(e)));
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    (list.items.into_iter().map(to_value).collect(), rv)
}

fn refusal(error: kube::Error) -> Box<Refusal> {
    match error {
        kube::Error::Api(status) => status,
        other => panic!("the request failed without an API status: {other}"),
    }
}

fn fail(what: &str, refusal: Box<Refusal>) -> ! {
    panic!(
        "{what}: {} {} {}",
        refusal.code, refusal.reason, refusal.message
    )
}

/// A request outside the typed verbs (an `Accept` header of the test's choice, a
/// subresource kube-rs has no method for, a YAML body): the status code and the body
/// as JSON (`Null` if it is not JSON). A body is JSON unless `headers` say otherwise.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Value) {
    let (status, body) =
        raw_bytes(client, method, path, headers, body.map(String::into_bytes)).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// [`raw`] with a body of any bytes (protobuf), and the answer's bytes as they came.
pub async fn raw_bytes(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Vec<u8>) {
    let (status, _, body) = exchange(client, method, path, headers, body).await;
    (status, body)
}

/// [`raw`], with the texts of the answer's `Warning` headers (`299 - "text"`).
pub async fn raw_with_warnings(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Vec<String>, Value) {
    let (status, warnings, body) =
        exchange(client, method, path, headers, body.map(String::into_bytes)).await;
    (
        status,
        warnings,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn exchange(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Vec<String>, Vec<u8>) {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("Content-Type", "application/json");
    }
    let bytes = body.unwrap_or_default();
    let request = request
        .body(kube::client::Body::from(bytes))
        .expect("a request");
    let response = client
        .send(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| {
            let text = value.trim_start_matches("299 - ");
            let quoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
            quoted.unwrap_or(text).replace("\\\"", "\"")
        })
        .collect();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}'s body: {e}"));
    (status, warnings, body.to_vec())
}
