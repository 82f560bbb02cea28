//! Field management: `metadata.managedFields` on every object, and server-side apply.
//!
//! Every create, update and patch records which manager set which fields
//! ([`record_update`]); an apply ([`apply`]) merges a configuration into the object,
//! removes what the applier set before and no longer sets (unless another manager owns
//! it), and refuses to change fields other managers own unless forced. The behaviour is
//! upstream's (k8s.io/apiserver's fieldmanager over sigs.k8s.io/structured-merge-diff):
//!
//! - An update's manager gains the fields it added or changed and every other manager
//!   loses them; removed fields leave every set; a manager left with nothing is dropped.
//! - Entries are identified by manager, operation, subresource and (for updates) API
//!   version; an update that changes nothing leaves the entries (and times) alone.
//! - `managedFields` a client sends on an update replace the stored ones if they decode;
//!   `[]` or `[{}]` resets them; invalid ones, or any sent to a subresource, are ignored.
//! - `kubectl apply --server-side` (manager `kubectl`) on an object client-side applied
//!   before takes over the fields the last-applied annotation still describes, and keeps
//!   that annotation in step with the applied configuration.
//! - Identity fields (`apiVersion`, `kind`, `metadata.name`, `uid`, …) are never owned,
//!   and a write through the main resource does not own `status` (nor one through
//!   `status` the `spec`), as upstream's strategies reset those.

mod fieldpath;
mod typed;

use serde_json::{json, Map, Value};

pub use fieldpath::{path_string, PathElement, Set};
pub use typed::{compare, field_set, merge};

use crate::object;
use crate::schema::Structure;
use crate::status::ApiError;

/// Upstream's limit on a manager's name.
const MAX_MANAGER_LENGTH: usize = 128;
/// How many update entries an object keeps, and the entry older ones are merged into.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";
/// Who owns the fields of an object without managed fields when it is first applied to.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Who writes, for the `managedFields` entry the write records.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    /// `status`, `scale`, … when the write came through a subresource.
    pub subresource: Option<&'a str>,
    /// The version the request addressed (`apps/v1`).
    pub api_version: &'a str,
    /// The list and map semantics of the object's fields.
    pub structure: Structure<'a>,
}

/// The manager of a request: its `fieldManager`, else what precedes the first `/` of its
/// User-Agent (printable characters, at most 128 bytes), as upstream derives it.
pub fn manager_name(field_manager: Option<&str>, user_agent: &str) -> String {
    if let Some(manager) = field_manager.filter(|m| !m.is_empty()) {
        return manager.to_string();
    }
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// What is wrong with a request's `fieldManager` (upstream's `ValidateFieldManager`): too
/// long, or holding characters that do not print.
pub fn check_manager(manager: &str) -> Vec<crate::status::Cause> {
    let mut causes = Vec::new();
    if manager.len() > MAX_MANAGER_LENGTH {
        causes.push(crate::status::Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {MAX_MANAGER_LENGTH} bytes"),
            field: "fieldManager".into(),
        });
    }
    for (i, c) in manager.char_indices().filter(|(_, c)| c.is_control()) {
        causes.push(crate::status::Cause::invalid(
            "fieldManager",
            manager,
            &format!("invalid character U+{:04X} (at position {i})", c as u32),
        ));
    }
    causes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: Set,
}

impl Entry {
    /// Whether this entry is the one `writer` records with `operation` (appliers are one
    /// entry whatever version they apply).
    fn is(&self, writer: &Writer, operation: Operation) -> bool {
        self.manager == writer.manager
            && self.operation == operation
            && self.subresource == writer.subresource.unwrap_or("")
            && (operation == Operation::Apply || self.api_version == writer.api_version)
    }

    /// How conflict messages name the manager.
    fn describe(&self) -> String {
        let mut text = crate::status::quote(&self.manager);
        if !self.subresource.is_empty() {
            text.push_str(&format!(
                " with subresource {}",
                crate::status::quote(&self.subresource)
            ));
        }
        if self.operation == Operation::Update {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }

    /// The entry's time in whole seconds (none counts as the epoch), for ordering.
    fn seconds(&self) -> i64 {
        self.time
            .as_deref()
            .and_then(object::parse_time)
            .map(|t| t.as_second())
            .unwrap_or(0)
    }

    fn encode(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation.as_str()));
        entry.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            entry.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(entry)
    }

    fn decode(value: &Value) -> Result<Entry, String> {
        let text = |field: &str| value.get(field).and_then(Value::as_str).unwrap_or("");
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        if text("apiVersion").is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match text("fieldsType") {
            "FieldsV1" => {}
            "" => return Err("missing fieldsType in managed fields entry".into()),
            other => return Err(format!("invalid fieldsType {other:?}")),
        }
        let set = match value.get("fieldsV1") {
            Some(fields) => Set::from_fields_v1(fields)?,
            None => Set::new(),
        };
        Ok(Entry {
            manager: text("manager").to_string(),
            operation,
            api_version: text("apiVersion").to_string(),
            time: value
                .get("time")
                .and_then(Value::as_str)
                .map(str::to_string),
            subresource: text("subresource").to_string(),
            set,
        })
    }
}

/// An object's managers, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
struct Managers(Vec<Entry>);

impl Managers {
    fn decode(list: Option<&Value>) -> Result<Managers, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for value in list.and_then(Value::as_array).into_iter().flatten() {
            let entry = Entry::decode(value)?;
            // A later entry with the same identity wins, as upstream's map of managers.
            entries.retain(|e| {
                !(e.manager == entry.manager
                    && e.operation == entry.operation
                    && e.subresource == entry.subresource
                    && (e.operation == Operation::Apply || e.api_version == entry.api_version))
            });
            entries.push(entry);
        }
        Ok(Managers(entries))
    }

    fn of(object: &Value) -> Managers {
        Managers::decode(object::metadata(object).and_then(|m| m.get("managedFields")))
            .unwrap_or_default()
    }

    /// Writes the entries into the object in upstream's order (operation, time, manager,
    /// version, subresource), or removes `managedFields` when there are none.
    fn write_into(mut self, object: &mut Value) {
        self.0.retain(|e| !e.set.is_empty());
        self.cap_updaters();
        let key = |e: &Entry| {
            (
                e.operation,
                e.seconds(),
                e.manager.clone(),
                e.api_version.clone(),
                e.subresource.clone(),
            )
        };
        self.0.sort_by_key(key);
        let metadata = object::metadata_mut(object);
        if self.0.is_empty() {
            metadata.shift_remove("managedFields");
        } else {
            let list: Vec<Value> = self.0.iter().map(Entry::encode).collect();
            metadata.insert("managedFields".into(), Value::Array(list));
        }
    }

    /// Keeps at most ten update entries, as upstream does: the oldest are merged, per API
    /// version, into one `ancient-changes` entry.
    fn cap_updaters(&mut self) {
        let mut updaters: Vec<usize> = (0..self.0.len())
            .filter(|&i| self.0[i].operation == Operation::Update)
            .collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort_by_key(|&i| {
            let e = &self.0[i];
            (
                e.seconds(),
                e.manager.clone(),
                e.api_version.clone(),
                e.subresource.clone(),
            )
        });
        let mut remaining = updaters.len();
        let mut first_of_version: Vec<(String, usize)> = Vec::new();
        let mut merged = vec![false; self.0.len()];
        for i in updaters {
            if remaining <= MAX_UPDATE_MANAGERS {
                break;
            }
            let version = self.0[i].api_version.clone();
            let Some(&(_, first)) = first_of_version.iter().find(|(v, _)| *v == version) else {
                first_of_version.push((version, i));
                continue;
            };
            let bucket = (0..self.0.len()).find(|&b| {
                let e = &self.0[b];
                !merged[b]
                    && e.manager == ANCIENT_CHANGES
                    && e.operation == Operation::Update
                    && e.api_version == version
                    && e.subresource.is_empty()
            });
            let bucket = bucket.unwrap_or_else(|| {
                self.0[first].manager = ANCIENT_CHANGES.to_string();
                self.0[first].subresource.clear();
                first
            });
            if bucket == i {
                continue;
            }
            let (set, time) = (self.0[i].set.clone(), self.0[i].time.clone());
            self.0[bucket].set = self.0[bucket].set.union(&set);
            self.0[bucket].time = time;
            merged[i] = true;
            remaining -= 1;
        }
        let mut index = 0;
        self.0.retain(|_| {
            index += 1;
            !merged[index - 1]
        });
    }

    fn position(&self, writer: &Writer, operation: Operation) -> Option<usize> {
        self.0.iter().position(|e| e.is(writer, operation))
    }
}

/// `[]` and `[{}]` ask for the managed fields to be reset.
fn is_reset(list: Option<&Value>) -> bool {
    match list.and_then(Value::as_array).map(Vec::as_slice) {
        Some([]) => true,
        Some([only]) => only.as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

/// Paths nobody owns: the object's identity and what the server sets.
fn strip(set: &mut Set) {
    let field = |name: &str| PathElement::Field(name.to_string());
    let meta = |name: &str| vec![field("metadata"), field(name)];
    let paths: Vec<Vec<PathElement>> = vec![
        vec![field("apiVersion")],
        vec![field("kind")],
        vec![field("metadata")],
        meta("name"),
        meta("namespace"),
        meta("creationTimestamp"),
        meta("selfLink"),
        meta("uid"),
        meta("clusterName"),
        meta("generation"),
        meta("managedFields"),
        meta("resourceVersion"),
    ];
    let refs: Vec<&[PathElement]> = paths.iter().map(Vec::as_slice).collect();
    set.remove_members(&refs);
}

/// The top-level field a write through `subresource` may not own (its strategy resets
/// it): `status` through the main resource of a kind with a status endpoint, `spec`
/// through `status`.
pub fn reset_field(has_status: bool, subresource: Option<&str>) -> Option<&'static str> {
    match subresource {
        None if has_status => Some("status"),
        Some("status") => Some("spec"),
        _ => None,
    }
}

fn without_reset(mut set: Set, reset: Option<&str>) -> Set {
    if let Some(field) = reset {
        set.remove_subtree(&PathElement::Field(field.to_string()));
    }
    set
}

/// The object as field management compares it: no `managedFields`, no `resourceVersion`.
fn view(object: &Value) -> Value {
    // Copied without the skipped fields rather than copied whole and then pruned:
    // `managedFields` is often the largest part of the object.
    let without_skipped = |metadata: &Value| match metadata {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "managedFields" | "resourceVersion"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    match object {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if k == "metadata" {
                        without_skipped(v)
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Records a create (`live` is `None`) or an update by `writer` in `new`'s
/// `managedFields`: the writer's entry gains the fields it added or changed, the others
/// lose them, removed fields leave every entry.
pub fn record_update(live: Option<&Value>, new: &mut Value, writer: &Writer, reset: Option<&str>) {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let sent = object::metadata(new).and_then(|m| m.get("managedFields"));
    let mut managers = if writer.subresource.is_some() {
        Managers::of(live)
    } else if is_reset(sent) {
        Managers::default()
    } else {
        match Managers::decode(sent) {
            Ok(managers) if !managers.0.is_empty() => managers,
            _ => Managers::of(live),
        }
    };
    let before = typed::with_zero_structs(view(live));
    let after = typed::with_zero_structs(view(new));
    let comparison = typed::compare(&before, &after, writer.structure);
    let changed = comparison.changed();
    for entry in &mut managers.0 {
        entry.set = entry
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    let mut owned = without_reset(changed, reset);
    strip(&mut owned);
    if !owned.is_empty() {
        let now = object::now_rfc3339();
        match managers.position(writer, Operation::Update) {
            Some(i) => {
                let entry = &mut managers.0[i];
                entry.set = entry.set.union(&owned);
                entry.time = Some(now);
            }
            None => managers.0.push(Entry {
                manager: writer.manager.to_string(),
                operation: Operation::Update,
                api_version: writer.api_version.to_string(),
                time: Some(now),
                subresource: writer.subresource.unwrap_or("").to_string(),
                set: owned,
            }),
        }
    }
    managers.write_into(new);
}

/// Server-side apply of `config` by `writer` to `live` (`None`: the object does not exist
/// yet). Returns the new object, its `managedFields` written, or upstream's `409` when the
/// apply would change fields other managers own and `force` is not set.
pub fn apply(
    live: Option<&Value>,
    mut config: Value,
    writer: &Writer,
    force: bool,
    reset: Option<&str>,
) -> Result<Value, ApiError> {
    if object::metadata(&config).is_some_and(|m| m.get("managedFields").is_some()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    if let (Some(field), Some(fields)) = (reset, config.as_object_mut()) {
        fields.shift_remove(field);
    }
    let empty = json!({});
    let existing = live.is_some();
    let live = live.unwrap_or(&empty);
    let mut managers = Managers::of(live);
    if existing && managers.0.is_empty() {
        // An object nobody is recorded as managing: upstream gives what it holds to a
        // `before-first-apply` manager first, so the apply sees those fields as owned.
        let mut owned = live.clone();
        let before = Writer {
            manager: BEFORE_FIRST_APPLY,
            subresource: None,
            ..*writer
        };
        record_update(None, &mut owned, &before, reset);
        managers = Managers::of(&owned);
    }
    let live_view = view(live);
    let s = writer.structure;
    let merged = typed::merge(&live_view, &config, s);
    let config_set = without_reset(typed::field_set(&config, s), reset);
    let applier = match managers.position(writer, Operation::Apply) {
        Some(i) => i,
        None => {
            managers.0.push(Entry {
                manager: writer.manager.to_string(),
                operation: Operation::Apply,
                api_version: String::new(),
                time: None,
                subresource: writer.subresource.unwrap_or("").to_string(),
                set: Set::new(),
            });
            managers.0.len() - 1
        }
    };
    let last = std::mem::replace(&mut managers.0[applier].set, config_set);
    managers.0[applier].api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(writer.api_version)
        .to_string();

    // Prune: what the applier set before and nobody (the applier's new configuration
    // included) owns now goes.
    let mut result = merged;
    if !last.is_empty() {
        let owned = managers
            .0
            .iter()
            .fold(Set::new(), |all, e| all.union(&e.set))
            .with_named_fields(s, &mut Vec::new());
        let remove = last
            .with_named_fields(s, &mut Vec::new())
            .difference(&owned);
        typed::remove_items(&mut result, &remove, s);
    }

    let comparison = typed::compare(
        &typed::with_zero_structs(live_view.clone()),
        &typed::with_zero_structs(result.clone()),
        s,
    );
    let changed = comparison.changed();
    let mut conflicts: Vec<(String, Vec<fieldpath::Path>)> = Vec::new();
    for (i, entry) in managers.0.iter().enumerate() {
        if i == applier {
            continue;
        }
        let taken = entry.set.intersection(&changed);
        if !taken.is_empty() {
            conflicts.push((entry.describe(), taken.paths()));
        }
    }
    if !force && !conflicts.is_empty() {
        // kubectl's move from client-side to server-side apply: conflicts on fields the
        // last client-side apply set, still as it set them, are taken over.
        let allowed = (writer.manager == KUBECTL)
            .then(|| fields_of_last_applied(&live_view, s))
            .flatten()
            .unwrap_or_default();
        conflicts.retain_mut(|(_, paths)| {
            paths.retain(|p| !allowed.has(p));
            !paths.is_empty()
        });
        if !conflicts.is_empty() {
            return Err(conflict_error(&conflicts));
        }
    }
    for (i, entry) in managers.0.iter_mut().enumerate() {
        if i != applier {
            entry.set = entry
                .set
                .difference(&changed)
                .difference(&comparison.removed);
        }
        strip(&mut entry.set);
    }
    if writer.manager == KUBECTL {
        sync_last_applied(&mut result, &config);
    }
    if result != live_view {
        managers.0[applier].time = Some(object::now_rfc3339());
    }
    managers.write_into(&mut result);
    Ok(result)
}

/// The manager `kubectl apply --server-side` uses, for which upstream keeps client-side
/// apply's annotation in step.
const KUBECTL: &str = "kubectl";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn last_applied(object: &Value) -> Option<&str> {
    object::metadata(object)?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()
        .filter(|text| !text.is_empty())
}

/// The fields the last client-side apply set that still hold the values it set.
fn fields_of_last_applied(live: &Value, s: Structure) -> Option<Set> {
    let applied: Value = serde_json::from_str(last_applied(live)?).ok()?;
    let comparison = typed::compare(&applied, live, s);
    Some(
        typed::field_set(&applied, s)
            .difference(&comparison.modified)
            .difference(&comparison.added)
            .difference(&comparison.removed),
    )
}

/// An object client-side applied before keeps its annotation in step with what is now
/// applied server-side, so a later client-side apply computes from it.
fn sync_last_applied(object: &mut Value, config: &Value) {
    if last_applied(object).is_none() {
        return;
    }
    let mut applied = config.clone();
    if let Some(annotations) = applied
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(LAST_APPLIED);
    }
    // Upstream encodes the configuration as Go encodes a map: keys sorted, newline last.
    let text = format!("{}\n", sorted_keys(&applied));
    let annotations = object::metadata_mut(object)
        .entry("annotations")
        .or_insert_with(|| json!({}));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(LAST_APPLIED.into(), Value::String(text));
    }
}

fn sorted_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted_keys(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

/// Upstream's `409` for an apply that conflicts: one cause per conflicting field.
fn conflict_error(conflicts: &[(String, Vec<fieldpath::Path>)]) -> ApiError {
    let total: usize = conflicts.iter().map(|(_, paths)| paths.len()).sum();
    let mut causes = Vec::new();
    for (manager, paths) in conflicts {
        for path in paths {
            causes.push(json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {manager}"),
                "field": path_string(path),
            }));
        }
    }
    let message = if total == 1 {
        let (manager, paths) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            path_string(&paths[0])
        )
    } else {
        let mut sorted: Vec<&(String, Vec<fieldpath::Path>)> = conflicts.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut lines = Vec::new();
        for (manager, paths) in sorted {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.iter().map(|p| format!("- {}", path_string(p))));
        }
        format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests;
