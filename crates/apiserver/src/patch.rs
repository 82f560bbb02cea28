//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7396) and strategic merge patch.
//!
//! Strategic merge patch follows upstream's semantics (what `kubectl apply`, `edit`,
//! `patch`, `label` and `annotate` send): maps merge, `null` deletes, lists of objects merge
//! by their merge key where the field has one, sets of scalars (`metadata.finalizers`) take
//! the patch's items in, other lists are replaced; merged lists end in upstream's order; and
//! the `$patch`, `$retainKeys`, `$deleteFromPrimitiveList` and `$setElementOrder` directives
//! are honoured. Which lists merge, and by which key, comes from [`crate::schema`].

use serde_json::{Map, Value};

use crate::schema::Structure;
use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies `patch` to `original`, an object of the kind `structure` describes, returning
/// the patched object.
pub fn apply(
    patch_type: PatchType,
    original: &Value,
    patch: &[u8],
    structure: Structure,
) -> ApiResult<Value> {
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut target = original.clone();
            json_patch::patch(&mut target, &operations).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(target)
        }
        PatchType::Merge => {
            let patch = parse_object(patch)?;
            let mut target = original.clone();
            json_patch::merge(&mut target, &patch);
            Ok(target)
        }
        PatchType::StrategicMerge => {
            let patch = parse_object(patch)?;
            strategic_merge(original, &patch, structure)
        }
        // The merge alone, for previews: the registry applies through
        // `crate::managedfields::apply`, which also prunes and checks ownership.
        PatchType::Apply => Ok(crate::managedfields::merge(
            original,
            &parse_apply(patch)?,
            structure,
        )),
    }
}

/// An apply patch's body: the configuration, in YAML or JSON.
pub fn parse_apply(patch: &[u8]) -> ApiResult<Value> {
    // Duplicate keys are refused, as upstream's YAML decoder refuses them; a JSON value
    // would silently keep the last.
    if let Err(e) = serde_yaml::from_slice::<serde_yaml::Value>(patch) {
        let text = String::from_utf8_lossy(patch);
        if let Some(message) = duplicate_key(&text, &e) {
            return Err(ApiError::bad_request(message));
        }
    }
    let value = serde_yaml::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    require_object(
        value,
        "error decoding YAML: the applied configuration must be an object",
    )
}

/// go-yaml's words for a duplicate key, which name the line of its second occurrence:
/// serde_yaml names the key and where its mapping starts, so the mapping's lines at that
/// indentation are searched for the key (a block mapping; a flow mapping is named by its
/// start). `None` for other errors.
fn duplicate_key(text: &str, error: &serde_yaml::Error) -> Option<String> {
    let message = error.to_string();
    let key = message
        .split_once("duplicate entry with key \"")?
        .1
        .split_once('"')?
        .0
        .to_string();
    let location = error.location()?;
    let indent = location.column().saturating_sub(1);
    let at_key = |line: &str| {
        line.len() > indent
            && line[..indent].trim().is_empty()
            && [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|k| line[indent..].starts_with(k.as_str()))
    };
    let line = text
        .lines()
        .enumerate()
        .skip(location.line().saturating_sub(1))
        .filter(|(_, line)| at_key(line))
        .nth(1)
        .map_or(location.line(), |(index, _)| index + 1);
    Some(format!(
        "error converting YAML to JSON: yaml: unmarshal errors:\n  line {line}: key {} already set in map",
        crate::status::quote(&key)
    ))
}

fn parse_object(patch: &[u8]) -> ApiResult<Value> {
    let value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    require_object(
        value,
        "error decoding patch: the patch must be a JSON object",
    )
}

fn require_object(value: Value, message: &str) -> ApiResult<Value> {
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(ApiError::bad_request(message)),
    }
}

// Strategic merge patch, as upstream's apiserver applies it (`StrategicMergeMapPatch`).
//
// A patch is an object merged field by field into the current one. Alongside the fields it
// may carry directives, keys that start with `$`:
//
// - `$patch: replace` in an object: the object replaces the current one; `$patch: delete`:
//   the object becomes empty. In a list item: `replace` makes the list's other items the
//   whole list, `delete` removes the current items with the item's merge key.
// - `$retainKeys: [...]`: the current object keeps only the named fields (a union switching
//   member, such as a Deployment's strategy switching to `Recreate`).
// - `$deleteFromPrimitiveList/<field>: [...]`: the values leave the list of scalars.
// - `$setElementOrder/<field>: [...]`: the order the list's items end in (client-side
//   `kubectl apply` sends the order of the applied file).
//
// Errors are reported with upstream's words and codes: malformed directives are 400s, the
// rest (a missing merge key, an unknown directive) is what upstream's merge code returns as
// a plain error, which its apiserver serves as a 500 without a reason.

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Where a merge is: the field names from the root (list items add nothing), and the
/// structure that says how the lists there merge.
struct FieldPath<'a> {
    structure: Structure<'a>,
    names: Vec<&'a str>,
}

impl<'a> FieldPath<'a> {
    fn push(&mut self, name: &'a str) {
        self.names.push(name);
    }

    fn pop(&mut self) {
        self.names.pop();
    }

    fn merges_items(&self) -> bool {
        self.structure.merges_items(&self.names)
    }

    fn merge_key(&self) -> Option<&'a str> {
        self.structure.merge_key(&self.names)
    }
}

/// Merges `patch` into `original`; both are objects from the root (the object as stored).
fn strategic_merge(original: &Value, patch: &Value, structure: Structure) -> ApiResult<Value> {
    match (original.as_object(), patch.as_object()) {
        (Some(original), Some(patch)) => {
            let mut path = FieldPath {
                structure,
                names: Vec::new(),
            };
            merge_map(original, patch, &mut path).map(Value::Object)
        }
        _ => Ok(strip_directives(patch)),
    }
}

/// Merges the object `patch` into `original`, the object at `path` (field names from the
/// root; list items add nothing).
fn merge_map<'a>(
    original: &Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut FieldPath<'a>,
) -> ApiResult<Map<String, Value>> {
    if let Some(directive) = patch.get(PATCH_DIRECTIVE) {
        return map_directive(directive, patch);
    }
    let mut result = original.clone();
    apply_retain_keys(&mut result, patch)?;
    // Lists named by `$setElementOrder` are merged and ordered first, and skipped below.
    let ordered = apply_element_orders(&mut result, patch, path)?;
    for (key, value) in patch {
        if key.starts_with(SET_ELEMENT_ORDER)
            || key == RETAIN_KEYS
            || ordered.contains(&key.as_str())
        {
            continue;
        }
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or_else(|| ApiError::bad_request(BAD_PRIMITIVE_LIST))?;
            delete_from_primitive_list(&mut result, field, value, path)?;
            continue;
        }
        // An unknown directive is no field of any type: upstream's decoding drops it.
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            result.shift_remove(key);
            continue;
        }
        path.push(key);
        let merged = merge_value(result.get(key), value, path);
        path.pop();
        match merged? {
            Some(merged) => {
                result.insert(key.clone(), merged);
            }
            None => {
                result.shift_remove(key);
            }
        }
    }
    Ok(result)
}

/// The value a field takes when the patch sets it to `patch` (not `null`) and it is
/// `current` now: objects merge, lists merge by their field's strategy, anything else is
/// replaced. `None` drops the field (a new value that is itself a directive).
fn merge_value<'a>(
    current: Option<&Value>,
    patch: &'a Value,
    path: &mut FieldPath<'a>,
) -> ApiResult<Option<Value>> {
    match (current, patch) {
        (Some(Value::Object(current)), Value::Object(patch)) => {
            merge_map(current, patch, path).map(|m| Some(Value::Object(m)))
        }
        (Some(Value::Array(current)), Value::Array(patch)) => {
            merge_list(current, patch, path, false).map(|l| Some(Value::Array(l)))
        }
        // A new field, or one whose type the patch changes: the patch's value as it is.
        _ => Ok(without_directives(patch)),
    }
}

/// `$patch` in an object: `replace` makes the patch (less the directive) the whole object,
/// `delete` empties it (upstream leaves an empty object, not an absent field).
fn map_directive(directive: &Value, patch: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
    match directive.as_str() {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.shift_remove(PATCH_DIRECTIVE);
            match strip_directives(&Value::Object(replaced)) {
                Value::Object(map) => Ok(map),
                _ => Ok(Map::new()),
            }
        }
        Some("delete") => Ok(Map::new()),
        _ => Err(merge_error(format!(
            "unknown patch type: {} in map: {}",
            go_format(directive),
            go_format_map(patch)
        ))),
    }
}

const BAD_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const BAD_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const BAD_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";

/// `$retainKeys`: the fields of `result` it does not name are cleared. Every field the patch
/// sets must be named (a field it deletes with `null` need not be).
fn apply_retain_keys(result: &mut Map<String, Value>, patch: &Map<String, Value>) -> ApiResult<()> {
    let Some(retain) = patch.get(RETAIN_KEYS) else {
        return Ok(());
    };
    let retain = retain
        .as_array()
        .ok_or_else(|| ApiError::bad_request(BAD_RETAIN_KEYS))?;
    let retained = |key: &str| retain.iter().any(|k| k.as_str() == Some(key));
    let unnamed = patch.iter().any(|(key, value)| {
        key != RETAIN_KEYS
            && !value.is_null()
            && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !key.starts_with(SET_ELEMENT_ORDER)
            && !retained(key)
    });
    if unnamed {
        return Err(ApiError::bad_request(BAD_RETAIN_KEYS));
    }
    result.retain(|key, _| retained(key));
    Ok(())
}

/// The field a `<prefix>/<field>` directive names.
fn directive_field<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?.strip_prefix('/')
}

/// `$deleteFromPrimitiveList/<field>`: `values` leave the list at `field`, whatever the
/// field's strategy. A list that is absent stays absent.
fn delete_from_primitive_list<'a>(
    result: &mut Map<String, Value>,
    field: &'a str,
    values: &'a Value,
    path: &mut FieldPath<'a>,
) -> ApiResult<()> {
    if values.is_null() {
        result.shift_remove(field);
        return Ok(());
    }
    let (Some(Value::Array(current)), Value::Array(values)) = (result.get(field), values) else {
        return Ok(());
    };
    path.push(field);
    let remaining = merge_list(current, values, path, true);
    path.pop();
    result.insert(field.to_string(), Value::Array(remaining?));
    Ok(())
}

/// Merges the list `patch` into `current`, the list at `path`. Lists with a merge strategy
/// merge item by item (and `delete_list`, a `$deleteFromPrimitiveList`, always does); the
/// others are replaced.
fn merge_list<'a>(
    current: &[Value],
    patch: &'a [Value],
    path: &mut FieldPath<'a>,
    delete_list: bool,
) -> ApiResult<Vec<Value>> {
    if !(path.merges_items() || delete_list) {
        return Ok(patch.iter().map(strip_directives).collect());
    }
    if current.is_empty() && patch.is_empty() {
        return Ok(Vec::new());
    }
    if element_kind(&[current, patch])? == ElementKind::Scalar {
        return merge_scalars(current, patch, delete_list);
    }
    let key = path.merge_key().ok_or_else(|| {
        merge_error(format!(
            "cannot merge lists without merge key for {}",
            path.names.join(".")
        ))
    })?;
    let (base, items) = apply_item_directives(current, patch, key)?;
    let mut merged = base.clone();
    for item in &items {
        let id = item.get(key).ok_or_else(|| no_merge_key(item, key))?;
        let (Value::Object(item_map), Some(i)) =
            (item, merged.iter().position(|m| m.get(key) == Some(id)))
        else {
            merged.extend(without_directives(item));
            continue;
        };
        let Some(existing) = merged[i].as_object() else {
            return Err(bad_arg_type("map[string]interface {}", &merged[i]));
        };
        merged[i] = Value::Object(merge_map(existing, item_map, path)?);
    }
    let items: Vec<Value> = items.into_iter().cloned().collect();
    let (in_patch, server_only) = partition(merged, &items, Some(key))?;
    normalize_element_order(in_patch, server_only, &items, &base, Some(key))
}

/// A list of scalars with a merge strategy: `$deleteFromPrimitiveList` values leave it (in
/// place), a patch's values join it (each once), in upstream's order.
fn merge_scalars(current: &[Value], patch: &[Value], delete_list: bool) -> ApiResult<Vec<Value>> {
    if delete_list {
        return Ok(current
            .iter()
            .filter(|item| !patch.contains(item))
            .cloned()
            .collect());
    }
    let mut merged: Vec<Value> = Vec::with_capacity(current.len() + patch.len());
    for item in current.iter().chain(patch) {
        if !merged.contains(item) {
            merged.push(item.clone());
        }
    }
    let (in_patch, server_only) = partition(merged, patch, None)?;
    normalize_element_order(in_patch, server_only, patch, current, None)
}

/// The `$patch` items of a patch list merged by `key`: `delete` removes the current items
/// with its key, `replace` makes the patch's other items the whole list. Returns the list to
/// merge into and the patch's items to merge (none after a `replace`).
fn apply_item_directives<'a>(
    current: &[Value],
    patch: &'a [Value],
    key: &str,
) -> ApiResult<(Vec<Value>, Vec<&'a Value>)> {
    let mut base = current.to_vec();
    let mut items = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(PATCH_DIRECTIVE) else {
            items.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let id = item.get(key).ok_or_else(|| no_merge_key(item, key))?;
                base.retain(|b| b.get(key) != Some(id));
            }
            // The other items are still looked through for directives to refuse.
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(merge_error(
                    "merging lists cannot yet be specified in the patch",
                ))
            }
            _ => {
                let map = item.as_object().cloned().unwrap_or_default();
                return Err(merge_error(format!(
                    "unknown patch type: {} in map: {}",
                    go_format(directive),
                    go_format_map(&map)
                )));
            }
        }
    }
    if replace {
        let replacement = items.into_iter().map(strip_directives).collect();
        return Ok((replacement, Vec::new()));
    }
    Ok((base, items))
}

/// `$setElementOrder/<field>` directives: each named list is merged with the patch's list of
/// the same field (if any), then ordered as the directive says (see
/// [`normalize_element_order`]). Returns the fields done, which the caller skips.
fn apply_element_orders<'a>(
    result: &mut Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut FieldPath<'a>,
) -> ApiResult<Vec<&'a str>> {
    let mut done = Vec::new();
    for (directive, order) in patch {
        if !directive.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        let order = order
            .as_array()
            .ok_or_else(|| bad_arg_type("[]interface {}", order))?;
        let field = directive_field(directive, SET_ELEMENT_ORDER)
            .ok_or_else(|| ApiError::bad_request(BAD_SET_ELEMENT_ORDER))?;
        let current = match result.get(field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        if current.is_none() && patch_list.is_none() {
            continue;
        }
        path.push(field);
        let key = path.merge_key();
        let merged = merge_listed(current.as_deref(), patch_list, order, key, path);
        path.pop();
        let (in_order, server_only) = partition(merged?, order, key)?;
        let current = current.unwrap_or_default();
        let ordered = normalize_element_order(in_order, server_only, order, &current, key)?;
        result.insert(field.to_string(), Value::Array(ordered));
        done.push(field);
    }
    Ok(done)
}

/// The list a `$setElementOrder` names, before ordering: the current one merged with the
/// patch's (which must follow the directive's order), or whichever of the two there is.
fn merge_listed<'a>(
    current: Option<&[Value]>,
    patch: Option<&'a Vec<Value>>,
    order: &[Value],
    key: Option<&str>,
    path: &mut FieldPath<'a>,
) -> ApiResult<Vec<Value>> {
    let Some(patch) = patch else {
        return Ok(current.map(<[Value]>::to_vec).unwrap_or_default());
    };
    check_order(patch, order, key)?;
    match current {
        Some(current) => merge_list(current, patch, path, false),
        // The list is new: the patch's, less its directives.
        None => Ok(patch.iter().filter_map(without_directives).collect()),
    }
}

/// A `$setElementOrder` list must hold the patch list's items (bar its `$patch` items) in the
/// same relative order.
fn check_order(patch: &[Value], order: &[Value], key: Option<&str>) -> ApiResult<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch.len());
    for item in patch {
        if key.is_some() && !item.is_object() {
            return Err(bad_arg_type("map[string]interface {}", item));
        }
        if key.is_none() || item.get(PATCH_DIRECTIVE).and_then(Value::as_str) != Some("delete") {
            items.push(item);
        }
    }
    let (mut at_item, mut at_order) = (0, 0);
    while at_item < items.len() && at_order < order.len() {
        if items[at_item].get(PATCH_DIRECTIVE).is_some() {
            at_item += 1;
            continue;
        }
        if same_item(items[at_item], &order[at_order], key)? {
            at_item += 1;
        }
        at_order += 1;
    }
    if at_item < items.len() {
        return Err(merge_error(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go_format_list(patch),
            go_format_list(order)
        )));
    }
    Ok(())
}

/// Whether two items are the same one: by their merge key, or by value for scalars.
fn same_item(a: &Value, b: &Value, key: Option<&str>) -> ApiResult<bool> {
    let Some(key) = key else {
        return Ok(a == b);
    };
    let id = |item: &Value| -> ApiResult<Value> {
        if !item.is_object() {
            return Err(bad_arg_type("map[string]interface {}", item));
        }
        item.get(key)
            .cloned()
            .ok_or_else(|| no_merge_key(item, key))
    };
    Ok(id(a)? == id(b)?)
}

/// What identifies an item: its merge key's value, or the item itself for scalars.
fn identity<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => item.get(key),
        None => Some(item),
    }
}

/// Where the item identified like `item` first is in `list`.
fn position_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(item, key);
    list.iter().position(|other| identity(other, key) == id)
}

/// Splits `merged` into the items `by` names and the others (server-only items), each in
/// `merged`'s order. Every item of a list merged by key must have the key.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let mut named = Vec::new();
    let mut others = Vec::new();
    for item in merged {
        if let Some(key) = key {
            if !item.is_object() {
                return Err(bad_arg_type("map[string]interface {}", &item));
            }
            if item.get(key).is_none() {
                return Err(no_merge_key(&item, key));
            }
        }
        if position_in(by, &item, key).is_some() {
            named.push(item);
        } else {
            others.push(item);
        }
    }
    Ok((named, others))
}

/// Upstream's order for a merged list. The items the patch names are put in the patch's
/// order (`patch_order`: the patch list, or a `$setElementOrder` list), the server-only items
/// in the order they had (`server_order`: the current list); then the server-only items are
/// slotted in among the patch's: walking both, a server-only item comes first only while it
/// stood before the patch's next item in the current list. So a server-only item stays after
/// the items it followed, and items new to the list come as early as the patch puts them.
fn normalize_element_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> ApiResult<Vec<Value>> {
    if let Some(key) = key {
        let lists = [&in_patch[..], &server_only, patch_order, server_order];
        if let Some(item) = lists
            .iter()
            .flat_map(|list| list.iter())
            .find(|item| item.get(key).is_none())
        {
            return Err(no_merge_key(item, key));
        }
    }
    // Stable: duplicates keep their relative order.
    in_patch.sort_by_key(|item| position_in(patch_order, item, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| position_in(server_order, item, key).unwrap_or(usize::MAX));
    let mut ordered = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut server_only = server_only.into_iter().peekable();
    for item in in_patch {
        let item_at = position_in(server_order, &item, key);
        while let Some(next) = server_only.peek() {
            let before = matches!(
                (position_in(server_order, next, key), item_at),
                (Some(next_at), Some(item_at)) if next_at < item_at
            );
            if !before {
                break;
            }
            ordered.extend(server_only.next());
        }
        ordered.push(item);
    }
    ordered.extend(server_only);
    Ok(ordered)
}

#[derive(Debug, PartialEq, Eq)]
enum ElementKind {
    Object,
    Scalar,
}

/// Whether the items of the lists are objects or scalars: all must be of one type, and none
/// a list.
fn element_kind(lists: &[&[Value]]) -> ApiResult<ElementKind> {
    let mut items = lists.iter().flat_map(|list| list.iter());
    let Some(first) = items.next() else {
        return Ok(ElementKind::Scalar);
    };
    if first.is_array() {
        // Upstream's apiserver answers this one as a generic 422.
        return Err(ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(
            serde_json::json!({"causes": [{"message": "lists of lists are not supported"}]}),
        ));
    }
    if items.any(|item| go_type(item) != go_type(first)) {
        let all: Vec<String> = lists.iter().map(|l| go_format_list(l)).collect();
        return Err(merge_error(format!(
            "list element types are not identical: [{}]",
            all.join(" ")
        )));
    }
    Ok(if first.is_object() {
        ElementKind::Object
    } else {
        ElementKind::Scalar
    })
}

/// A value as upstream's apiserver would store it from a patch: directives (keys starting
/// with `$`, which no type has) and `null` fields (which decode to nothing) dropped.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// A patch value with nothing to merge into (a new field or list item): as
/// [`strip_directives`], and any object carrying `$patch` is left out altogether (upstream's
/// `removeDirectives`), `None` if `value` itself is one.
fn without_directives(value: &Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(PATCH_DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .filter_map(|(k, v)| Some((k.clone(), without_directives(v)?)))
                .collect(),
        )),
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(without_directives).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// An error upstream's merge returns as a plain Go error: its apiserver serves those as a
/// 500 with no reason.
fn merge_error(message: impl Into<String>) -> ApiError {
    ApiError::new(500, "", message)
}

fn no_merge_key(item: &Value, key: &str) -> ApiError {
    merge_error(format!(
        "map: {} does not contain declared merge key: {key}",
        go_format(item)
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> ApiError {
    merge_error(format!(
        "expected a {expected}, but received a {}",
        go_type(actual)
    ))
}

/// The Go type a JSON value decodes to, as upstream's messages name it.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A JSON value as Go's `%v` prints the decoded value (upstream's error messages).
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or_default()),
        Value::String(s) => s.clone(),
        Value::Array(items) => go_format_list(items),
        Value::Object(map) => go_format_map(map),
    }
}

fn go_format_list(items: &[Value]) -> String {
    let items: Vec<String> = items.iter().map(go_format).collect();
    format!("[{}]", items.join(" "))
}

/// Go prints a map's entries sorted by key.
fn go_format_map(map: &Map<String, Value>) -> String {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let entries: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}:{}", go_format(v)))
        .collect();
    format!("map[{}]", entries.join(" "))
}

/// A float64 as `%v` prints it: the shortest digits, in exponent form from 1e+06 up or
/// below 1e-04.
fn go_float(f: f64) -> String {
    let exponent_form = format!("{f:e}");
    let Some((mantissa, exponent)) = exponent_form.split_once('e') else {
        return f.to_string();
    };
    let exponent: i32 = exponent.parse().unwrap_or_default();
    if f != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::LazyLock;

    use crate::schema::builtin;

    /// The type upstream's `patch_test.go` cases merge: `containers` and `initContainers`
    /// (merged by `name`, a pod's containers), `volumes` (merged, keys retained),
    /// `metadata` (an object's), `args` (atomic) and `spec` (a Deployment's).
    static TEST_TYPE: LazyLock<builtin::Type> = LazyLock::new(|| {
        let merged = |holds: &str, strategy: &str| json!({"list": "map", "keys": ["name"], "mergeKey": "name", "strategy": strategy, "type": holds});
        serde_json::from_value(json!({"fields": {
            "containers": merged("io.k8s.api.core.v1.Container", "merge"),
            "initContainers": merged("io.k8s.api.core.v1.Container", "merge"),
            "volumes": merged("io.k8s.api.core.v1.Volume", "merge,retainKeys"),
            "metadata": {"type": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "args": {"list": "atomic"},
            "spec": {"type": "io.k8s.api.apps.v1.DeploymentSpec"},
        }}))
        .expect("the test type")
    });

    fn test_type() -> Structure<'static> {
        Structure::Builtin(Some(&TEST_TYPE))
    }

    fn pod() -> Structure<'static> {
        Structure::builtin("", "v1", "Pod")
    }

    #[test]
    fn duplicate_keys_in_an_apply_are_refused_with_their_line() {
        let applied = b"\napiVersion: v1\nspec:\n  foo: a\n  bar: b\n  foo: c\n";
        let refused = parse_apply(applied).unwrap_err();
        assert_eq!(
            refused.message,
            "error converting YAML to JSON: yaml: unmarshal errors:\n  line 6: key \"foo\" already set in map"
        );
        assert!(parse_apply(b"spec:\n  foo: a\nother:\n  foo: b\n").is_ok());
    }

    #[test]
    fn json_patch_and_merge() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "1"}});
        let patched = apply(
            PatchType::Json,
            &obj,
            br#"[{"op":"add","path":"/data/y","value":"2"}]"#,
            pod(),
        )
        .unwrap();
        assert_eq!(patched["data"]["y"], "2");
        let merged = apply(
            PatchType::Merge,
            &obj,
            br#"{"data":{"x":null,"z":"3"}}"#,
            pod(),
        )
        .unwrap();
        assert_eq!(merged["data"], json!({"z": "3"}));
        assert!(apply(PatchType::Merge, &obj, b"[1]", pod()).is_err());
        let bad = apply(
            PatchType::Json,
            &obj,
            br#"[{"op":"remove","path":"/nope"}]"#,
            pod(),
        );
        assert_eq!(bad.unwrap_err().code, 422);
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let obj = json!({"spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "b", "image": "y"}
        ]}});
        let patch = br#"{"spec":{"$setElementOrder/containers":[{"name":"a"},{"name":"b"}],"containers":[{"name":"b","image":"z"}]}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, patch, pod()).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
        let delete = br#"{"spec":{"containers":[{"name":"a","$patch":"delete"}]}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, delete, pod()).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn strategic_merges_sets_of_scalars() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"finalizers": ["x"]}});
        let namespace = |patch: &[u8]| {
            let structure = Structure::builtin("", "v1", "Namespace");
            apply(PatchType::StrategicMerge, &obj, patch, structure).unwrap()
        };
        // kubectl's apply adds `c` and removes `a`, keeping `b` that someone else added.
        let out = namespace(
            br#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"],"finalizers":["b","c"]}}"#,
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        // A namespace's spec.finalizers is atomic: replaced.
        let out = namespace(br#"{"spec":{"finalizers":["y"]}}"#);
        assert_eq!(out["spec"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn strategic_directives() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}, "data": {"k": "v", "j": "w"}});
        let patch = br#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]},"data":{"$patch":"replace","n":"1"}}"#;
        let out = apply(
            PatchType::StrategicMerge,
            &obj,
            patch,
            Structure::builtin("", "v1", "ConfigMap"),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["data"], json!({"n": "1"}));
    }

    /// One strategic merge patch case: the object, the patch and the result, in YAML. Each
    /// ports a case of upstream's `patch_test.go`, its `mergingList` (merge key `name`) as
    /// `containers`, `mergingIntList` (a merged list of scalars) as `metadata.finalizers`,
    /// its retainKeys map as `metadata`, and lists without a strategy as `args`.
    type Case<'c> = (&'c str, &'c str, &'c str, &'c str);

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML")
    }

    fn strategic(original: &str, patch: &str) -> ApiResult<Value> {
        let patch = serde_json::to_vec(&yaml(patch)).expect("patch");
        apply(
            PatchType::StrategicMerge,
            &yaml(original),
            &patch,
            test_type(),
        )
    }

    fn check(cases: &[Case]) {
        for (name, original, patch, expected) in cases {
            match strategic(original, patch) {
                Ok(out) => assert_eq!(out, yaml(expected), "{name}"),
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }

    #[test]
    fn set_element_order_orders_merged_lists() {
        check(&[
            (
                "add an item in a list and preserve order",
                "containers: [{name: 1}, {name: 2, value: 2}]",
                "{$setElementOrder/containers: [{name: 3}, {name: 1}, {name: 2}], containers: [{name: 3, value: 3}]}",
                "containers: [{name: 3, value: 3}, {name: 1}, {name: 2, value: 2}]",
            ),
            (
                "add an item in a list and preserve order, server fields kept",
                "containers: [{name: 1, other: a}, {name: 2, value: 2, other: b}]",
                "{$setElementOrder/containers: [{name: 3}, {name: 1}, {name: 2}], containers: [{name: 3, value: 3}]}",
                "containers: [{name: 3, value: 3}, {name: 1, other: a}, {name: 2, value: 2, other: b}]",
            ),
            (
                "add multiple items in a list and preserve order",
                "containers: [{name: 1, other: a}, {name: 2, value: 2, other: b}]",
                "{$setElementOrder/containers: [{name: 1}, {name: 4}, {name: 2}, {name: 3}], containers: [{name: 4, value: 4}, {name: 3, value: 3}]}",
                "containers: [{name: 1, other: a}, {name: 4, value: 4}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]",
            ),
            (
                "delete an item in a list and preserve order",
                "containers: [{name: 1}, {name: 3, value: 3}, {name: 2, value: 2}]",
                "{$setElementOrder/containers: [{name: 2}, {name: 1}], containers: [{name: 3, $patch: delete}]}",
                "containers: [{name: 2, value: 2}, {name: 1}]",
            ),
            (
                "delete an item in a list and preserve order, server fields kept",
                "containers: [{name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]",
                "{$setElementOrder/containers: [{name: 2}, {name: 1}], containers: [{name: 3, $patch: delete}]}",
                "containers: [{name: 2, value: 2, other: b}, {name: 1, other: a}]",
            ),
            (
                "change an item in a list and preserve order",
                "containers: [{name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]",
                "{$setElementOrder/containers: [{name: 2}, {name: 3}, {name: 1}], containers: [{name: 3, value: x}]}",
                "containers: [{name: 2, value: 2, other: b}, {name: 3, value: x}, {name: 1, other: a}]",
            ),
            (
                "add and delete an item in a list and preserve order",
                "containers: [{name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]",
                "{$setElementOrder/containers: [{name: 4}, {name: 2}, {name: 1}], containers: [{name: 4, value: 4}, {name: 3, $patch: delete}]}",
                "containers: [{name: 4, value: 4}, {name: 2, value: 2, other: b}, {name: 1, other: a}]",
            ),
            (
                "set elements order in a list",
                "containers: [{name: 1, other: a}, {name: 3, value: 3}, {name: 4, value: 4}, {name: 2, value: 2}]",
                "{$setElementOrder/containers: [{name: 4}, {name: 2}, {name: 3}, {name: 1}]}",
                "containers: [{name: 4, value: 4}, {name: 2, value: 2}, {name: 3, value: 3}, {name: 1, other: a}]",
            ),
            (
                "set elements order in a list with server-only items",
                "containers: [{name: 1, other: a}, {name: 3, value: 3}, {name: 4, value: 4}, {name: 2, value: 2}, {name: 9}]",
                "{$setElementOrder/containers: [{name: 4}, {name: 2}, {name: 3}, {name: 1}]}",
                "containers: [{name: 4, value: 4}, {name: 2, value: 2}, {name: 3, value: 3}, {name: 1, other: a}, {name: 9}]",
            ),
            (
                "set elements order in a list with server-only items 2",
                "containers: [{name: 1, other: a}, {name: 2, value: 2}, {name: 9}, {name: 3, value: 3}, {name: 4, value: 4}]",
                "{$setElementOrder/containers: [{name: 2}, {name: 1}, {name: 4}, {name: 3}]}",
                "containers: [{name: 2, value: 2}, {name: 1, other: a}, {name: 9}, {name: 4, value: 4}, {name: 3, value: 3}]",
            ),
            (
                "set elements order in a list with server-only items 3",
                "containers: [{name: 1, other: a}, {name: 2, value: 2}, {name: 7}, {name: 9}, {name: 8}, {name: 3, value: 3}, {name: 4, value: 4}]",
                "{$setElementOrder/containers: [{name: 2}, {name: 1}, {name: 4}, {name: 3}]}",
                "containers: [{name: 2, value: 2}, {name: 1, other: a}, {name: 7}, {name: 9}, {name: 8}, {name: 4, value: 4}, {name: 3, value: 3}]",
            ),
            (
                "set element order for a merging list with duplicates",
                "containers: [{name: 1}, {name: 2, value: dup1}, {name: 3}, {name: 2, value: dup2}, {name: 4}]",
                "{$setElementOrder/containers: [{name: 2}, {name: 1}, {name: 4}, {name: 3}, {name: 2}]}",
                "containers: [{name: 2, value: dup1}, {name: 2, value: dup2}, {name: 1}, {name: 4}, {name: 3}]",
            ),
            (
                "nested patch merge with empty list",
                "{name: hi, containers: [{name: hello2}]}",
                "{$setElementOrder/containers: [{name: hello}, {name: doesntexist}], containers: [{name: hello}]}",
                "{name: hi, containers: [{name: hello}, {name: hello2}]}",
            ),
            (
                "$setElementOrder contains item that is not present in the list to be merged",
                "containers: [{name: 1}, {name: 3}]",
                "{$setElementOrder/containers: [{name: 3}, {name: 2}, {name: 1}], containers: [{name: 3, value: 3}, {name: 1, value: 1}]}",
                "containers: [{name: 3, value: 3}, {name: 1, value: 1}]",
            ),
            (
                "delete and reorder in one list, reorder in another",
                "{containers: [{name: a, value: a}, {name: b, value: b}], initContainers: [{name: c, value: c}, {name: d, value: d}]}",
                "{$setElementOrder/containers: [{name: b}], $setElementOrder/initContainers: [{name: d}, {name: c}], containers: [{name: a, $patch: delete}]}",
                "{containers: [{name: b, value: b}], initContainers: [{name: d, value: d}, {name: c, value: c}]}",
            ),
            (
                "a list the object lacks takes the patch's items in the directive's order",
                "{name: hi}",
                "{$setElementOrder/containers: [{name: b}, {name: a}], containers: [{name: b}, {name: a, value: 1}]}",
                "{name: hi, containers: [{name: b}, {name: a, value: 1}]}",
            ),
            (
                "a list nested in a merged item is ordered by its own directive",
                "containers: [{name: c, env: [{name: A, value: '1'}, {name: C, value: '3'}]}]",
                "{containers: [{name: c, $setElementOrder/env: [{name: A}, {name: B}, {name: C}], env: [{name: B, value: '2'}]}]}",
                "containers: [{name: c, env: [{name: A, value: '1'}, {name: B, value: '2'}, {name: C, value: '3'}]}]",
            ),
        ]);
    }

    #[test]
    fn set_element_order_orders_lists_of_scalars() {
        check(&[
            (
                "add an item in a list of primitives and preserve order",
                "metadata: {finalizers: [1, 4, 2]}",
                "metadata: {$setElementOrder/finalizers: [3, 1, 2], finalizers: [3]}",
                "metadata: {finalizers: [3, 1, 4, 2]}",
            ),
            (
                "delete an item in a list of primitives and preserve order",
                "metadata: {finalizers: [1, 2, 3]}",
                "metadata: {$setElementOrder/finalizers: [2, 1], $deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {finalizers: [2, 1]}",
            ),
            (
                "add multiple items in a int list and preserve order",
                "metadata: {finalizers: [1, 2]}",
                "metadata: {$setElementOrder/finalizers: [1, 4, 2, 3], finalizers: [4, 3]}",
                "metadata: {finalizers: [1, 4, 2, 3]}",
            ),
            (
                "add and delete an item in a int list and preserve order",
                "metadata: {finalizers: [1, 2, 3]}",
                "metadata: {$setElementOrder/finalizers: [4, 2, 1], finalizers: [4], $deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {finalizers: [4, 2, 1]}",
            ),
            (
                "set elements order in a int list",
                "metadata: {finalizers: [1, 3, 4, 2]}",
                "metadata: {$setElementOrder/finalizers: [4, 2, 3, 1]}",
                "metadata: {finalizers: [4, 2, 3, 1]}",
            ),
            (
                "set elements order in a int list with server-only items",
                "metadata: {finalizers: [1, 3, 4, 2, 9]}",
                "metadata: {$setElementOrder/finalizers: [4, 2, 3, 1]}",
                "metadata: {finalizers: [4, 2, 3, 1, 9]}",
            ),
            (
                "set elements order in a int list with server-only items 2",
                "metadata: {finalizers: [1, 2, 9, 3, 4]}",
                "metadata: {$setElementOrder/finalizers: [2, 1, 4, 3]}",
                "metadata: {finalizers: [2, 1, 9, 4, 3]}",
            ),
            (
                "set elements order in a int list with server-only items 3",
                "metadata: {finalizers: [1, 2, 7, 9, 8, 3, 4]}",
                "metadata: {$setElementOrder/finalizers: [2, 1, 4, 3]}",
                "metadata: {finalizers: [2, 1, 7, 9, 8, 4, 3]}",
            ),
            (
                "set element order for a merging int list with duplicates",
                "metadata: {finalizers: [1, 2, 3, 2, 4]}",
                "metadata: {$setElementOrder/finalizers: [2, 1, 4, 3, 2]}",
                "metadata: {finalizers: [2, 2, 1, 4, 3]}",
            ),
            (
                "$setElementOrder contains item that is not present in the int list to be merged",
                "metadata: {finalizers: [1, 3]}",
                "metadata: {$setElementOrder/finalizers: [3, 2, 1]}",
                "metadata: {finalizers: [3, 1]}",
            ),
            (
                "delete items in lists of scalars",
                "metadata: {finalizers: [1, 2, 3, 4]}",
                "metadata: {$setElementOrder/finalizers: [1, 2], $deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {finalizers: [1, 2, 4]}",
            ),
            (
                "delete all duplicate items in lists of scalars",
                "metadata: {finalizers: [1, 2, 3, 3, 4]}",
                "metadata: {$setElementOrder/finalizers: [1, 2], $deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {finalizers: [1, 2, 4]}",
            ),
            (
                "add and delete items in lists of scalars",
                "metadata: {finalizers: [1, 2, 3]}",
                "metadata: {$setElementOrder/finalizers: [1, 2, 4], $deleteFromPrimitiveList/finalizers: [3], finalizers: [4]}",
                "metadata: {finalizers: [1, 2, 4]}",
            ),
        ]);
    }

    #[test]
    fn merged_lists_take_the_patch_order() {
        check(&[
            (
                "unique scalars when merging lists",
                "metadata: {finalizers: [1, 2]}",
                "metadata: {finalizers: [2, 3]}",
                "metadata: {finalizers: [1, 2, 3]}",
            ),
            (
                "preserve the order from the patch in a merging list",
                "containers: [{name: 1}, {name: 2, value: b}, {name: 3}]",
                "containers: [{name: 3, value: c}, {name: 1, value: a}, {name: 2, other: x}]",
                "containers: [{name: 3, value: c}, {name: 1, value: a}, {name: 2, value: b, other: x}]",
            ),
            (
                "preserve the order from the patch in a merging list 2",
                "containers: [{name: 1}, {name: 2, value: b}, {name: 3}]",
                "containers: [{name: 3, value: c}, {name: 1, value: a}]",
                "containers: [{name: 2, value: b}, {name: 3, value: c}, {name: 1, value: a}]",
            ),
            (
                "preserve the order from the patch in a merging int list",
                "metadata: {finalizers: [1, 2, 3]}",
                "metadata: {finalizers: [3, 1, 2]}",
                "metadata: {finalizers: [3, 1, 2]}",
            ),
            (
                "preserve the order from the patch in a merging int list 2",
                "metadata: {finalizers: [1, 2, 3]}",
                "metadata: {finalizers: [3, 1]}",
                "metadata: {finalizers: [2, 3, 1]}",
            ),
            (
                "an item new to the list comes where the patch puts it, before the server's",
                "containers: [{name: hello2}]",
                "containers: [{name: hello}]",
                "containers: [{name: hello}, {name: hello2}]",
            ),
            (
                "a list without a merge strategy is replaced",
                "{args: [a, b], containers: [{name: c, args: [x]}]}",
                "{args: [c], containers: [{name: c, args: [y, z]}]}",
                "{args: [c], containers: [{name: c, args: [y, z]}]}",
            ),
        ]);
    }

    #[test]
    fn patch_directives() {
        check(&[
            (
                "delete map from nested map: it is left empty",
                "metadata: {labels: {key1: '1', key2: '1'}}",
                "metadata: {labels: {$patch: delete}}",
                "metadata: {labels: {}}",
            ),
            (
                "a deleted map the object lacks stays absent",
                "metadata: {name: x}",
                "metadata: {labels: {$patch: delete}}",
                "metadata: {name: x}",
            ),
            (
                "delete all items from merging list",
                "containers: [{name: 1}, {name: 2}]",
                "containers: [{$patch: replace}]",
                "containers: []",
            ),
            (
                "replace a merging list",
                "containers: [{name: 1, value: a}, {name: 2}]",
                "containers: [{name: 3}, {name: 1}, {$patch: replace}]",
                "containers: [{name: 3}, {name: 1}]",
            ),
            (
                "merge empty merging lists",
                "containers: []",
                "containers: []",
                "containers: []",
            ),
            ("delete all keys from map", "{name: 1, value: 1}", "$patch: replace", "{}"),
            (
                "add key and delete all keys from map",
                "{name: 1, value: 1}",
                "{other: a, $patch: replace}",
                "other: a",
            ),
            (
                "replace a nested map",
                "spec: {strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1}}}",
                "spec: {strategy: {$patch: replace, type: Recreate}}",
                "spec: {strategy: {type: Recreate}}",
            ),
            (
                "delete all duplicate entries in a merging list",
                "containers: [{name: 1}, {name: 1}, {name: 2, value: a}, {name: 3}, {name: 3}]",
                "containers: [{name: 1, $patch: delete}, {name: 3, $patch: delete}]",
                "containers: [{name: 2, value: a}]",
            ),
            (
                "delete a missing item from a merging list",
                "containers: [{name: 1}]",
                "containers: [{name: 2, $patch: delete}]",
                "containers: [{name: 1}]",
            ),
            (
                "a new list leaves out its directive items",
                "name: hi",
                "containers: [{name: hello}, {name: doesntexist, $patch: delete}]",
                "{name: hi, containers: [{name: hello}]}",
            ),
            (
                "delete an env var of a container",
                "spec: {template: {spec: {containers: [{name: c, env: [{name: A, value: '1'}, {name: B, value: '2'}]}]}}}",
                "spec: {template: {spec: {containers: [{name: c, env: [{name: A, $patch: delete}]}]}}}",
                "spec: {template: {spec: {containers: [{name: c, env: [{name: B, value: '2'}]}]}}}",
            ),
        ]);
    }

    #[test]
    fn unsupported_patch_directives_are_refused() {
        let map = strategic(
            "metadata: {labels: {a: b}}",
            "metadata: {labels: {$patch: merge}}",
        )
        .unwrap_err();
        assert_eq!(map.code, 500);
        assert_eq!(
            map.message,
            "unknown patch type: merge in map: map[$patch:merge]"
        );
        assert!(map.to_status().get("reason").is_none());
        let list = strategic(
            "containers: [{name: a}]",
            "containers: [{name: a, $patch: merge}]",
        )
        .unwrap_err();
        assert_eq!(
            list.message,
            "merging lists cannot yet be specified in the patch"
        );
        let unknown = strategic(
            "containers: [{name: a}]",
            "containers: [{name: a, $patch: nope}]",
        )
        .unwrap_err();
        assert_eq!(
            unknown.message,
            "unknown patch type: nope in map: map[$patch:nope name:a]"
        );
        let keyless =
            strategic("containers: [{name: a}]", "containers: [{$patch: delete}]").unwrap_err();
        assert_eq!(
            keyless.message,
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
    }

    #[test]
    fn delete_from_primitive_list() {
        check(&[
            (
                "$deleteFromPrimitiveList of nonexistent item in primitive list should not add the item to the list",
                "metadata: {finalizers: [1, 2]}",
                "metadata: {$deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {finalizers: [1, 2]}",
            ),
            (
                "$deleteFromPrimitiveList on empty primitive list should not add the item to the list",
                "metadata: {finalizers: null}",
                "metadata: {$deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {finalizers: null}",
            ),
            (
                "$deleteFromPrimitiveList on nonexistent primitive list should not add the primitive list",
                "metadata: {foo: [bar]}",
                "metadata: {$deleteFromPrimitiveList/finalizers: [3]}",
                "metadata: {foo: [bar]}",
            ),
            (
                "$deleteFromPrimitiveList should delete item from a list with merge patch strategy",
                "metadata: {finalizers: [1, 2, 3]}",
                "metadata: {$deleteFromPrimitiveList/finalizers: [2]}",
                "metadata: {finalizers: [1, 3]}",
            ),
            (
                "$deleteFromPrimitiveList should delete item from a list without merge patch strategy",
                "args: [1, 2, 3]",
                "$deleteFromPrimitiveList/args: [2]",
                "args: [1, 3]",
            ),
        ]);
        let malformed = strategic("args: [a]", "$deleteFromPrimitiveList: [a]").unwrap_err();
        assert_eq!(
            (malformed.code, malformed.message.as_str()),
            (400, "invalid patch format of primitive list")
        );
    }

    #[test]
    fn retain_keys() {
        check(&[
            (
                "retainKeys map should clear defaulted field",
                "metadata: {value: foo}",
                "metadata: {$retainKeys: [other], other: bar}",
                "metadata: {other: bar}",
            ),
            (
                "retainKeys map should clear defaulted field (discriminated union)",
                "metadata: {name: type1, value: foo}",
                "metadata: {$retainKeys: [name, other], name: type2, other: bar}",
                "metadata: {name: type2, other: bar}",
            ),
            (
                "retainKeys map adds a field and clear a field",
                "metadata: {name: foo, other: a}",
                "metadata: {$retainKeys: [name, value], value: bar}",
                "metadata: {name: foo, value: bar}",
            ),
            (
                "retainKeys map deletes a field and clears a field",
                "metadata: {name: foo, value: bar, other: a}",
                "metadata: {$retainKeys: [name], value: null}",
                "metadata: {name: foo}",
            ),
            (
                "retainKeys map clears a field",
                "metadata: {name: foo, value: bar, other: a}",
                "metadata: {$retainKeys: [name, value]}",
                "metadata: {name: foo, value: bar}",
            ),
            (
                "retainKeys map adds an item in nested merging int list",
                "metadata: {name: foo, finalizers: [1, 2, 3]}",
                "metadata: {$setElementOrder/finalizers: [1, 2, 4], $retainKeys: [finalizers, name], finalizers: [4]}",
                "metadata: {name: foo, finalizers: [1, 2, 4, 3]}",
            ),
            (
                "retainKeys map deletes an item in nested merging int list",
                "metadata: {name: foo, finalizers: [1, 2, 3]}",
                "metadata: {$setElementOrder/finalizers: [1, 3], $retainKeys: [finalizers, name], $deleteFromPrimitiveList/finalizers: [2]}",
                "metadata: {name: foo, finalizers: [1, 3]}",
            ),
            (
                "retainKeys map deletes nested merging list",
                "metadata: {name: foo, value: bar, containers: [{name: a}]}",
                "metadata: {$retainKeys: [name, value], containers: null}",
                "metadata: {name: foo, value: bar}",
            ),
            (
                "retainKeys map can add a field when no retainKeys directive present",
                "metadata: {name: foo}",
                "metadata: {value: bar}",
                "metadata: {name: foo, value: bar}",
            ),
            (
                "retainKeys map merge an empty map",
                "metadata: {name: foo, value: a}",
                "metadata: {}",
                "metadata: {name: foo, value: a}",
            ),
            (
                "retainKeys list of maps clears a field",
                "volumes: [{name: bar}, {name: foo, value: a, other: x}]",
                "{$setElementOrder/volumes: [{name: bar}, {name: foo}], volumes: [{$retainKeys: [name, value], name: foo}]}",
                "volumes: [{name: bar}, {name: foo, value: a}]",
            ),
            (
                "retainKeys list of maps adds a field and clear a field",
                "volumes: [{name: bar}, {name: foo, other: x}]",
                "{$setElementOrder/volumes: [{name: bar}, {name: foo}], volumes: [{$retainKeys: [name, value], name: foo, value: a}]}",
                "volumes: [{name: bar}, {name: foo, value: a}]",
            ),
            (
                "retainKeys list of maps deletes a field and clear a field",
                "volumes: [{name: bar}, {name: foo, value: a, other: x}]",
                "{$setElementOrder/volumes: [{name: bar}, {name: foo}], volumes: [{$retainKeys: [name], name: foo, value: null}]}",
                "volumes: [{name: bar}, {name: foo}]",
            ),
            (
                "a volume switching source: the old source is cleared",
                "spec: {template: {spec: {volumes: [{name: v, emptyDir: {}}]}}}",
                "spec: {template: {spec: {volumes: [{$retainKeys: [configMap, name], name: v, configMap: {name: cm}}]}}}",
                "spec: {template: {spec: {volumes: [{name: v, configMap: {name: cm}}]}}}",
            ),
        ]);
        // A field the patch sets must be among the kept.
        let unnamed = strategic(
            "metadata: {name: a}",
            "metadata: {$retainKeys: [name], value: b}",
        )
        .unwrap_err();
        assert_eq!(
            (unnamed.code, unnamed.message.as_str()),
            (400, "invalid patch format of retainKeys")
        );
        let not_a_list =
            strategic("metadata: {name: a}", "metadata: {$retainKeys: name}").unwrap_err();
        assert_eq!(not_a_list.code, 400);
    }

    #[test]
    fn null_deletes_a_key() {
        check(&[
            (
                "null deletes a key",
                "metadata: {labels: {a: '1', b: '2'}}",
                "metadata: {labels: {a: null}}",
                "metadata: {labels: {b: '2'}}",
            ),
            (
                "null for a key the object lacks adds nothing",
                "metadata: {labels: {b: '2'}}",
                "metadata: {labels: {a: null}, annotations: null}",
                "metadata: {labels: {b: '2'}}",
            ),
            (
                "delete field from map in merging list",
                "containers: [{name: 1, value: 1}, {name: 2, value: 2}]",
                "containers: [{name: 1, value: null}]",
                "containers: [{name: 1}, {name: 2, value: 2}]",
            ),
            (
                "nulls inside a new value are dropped",
                "metadata: {name: x}",
                "metadata: {labels: {a: '1', b: null}}",
                "metadata: {name: x, labels: {a: '1'}}",
            ),
        ]);
    }

    #[test]
    fn malformed_merges_are_refused_as_upstream_refuses_them() {
        let order = strategic(
            "containers: [{name: 1}, {name: 3}, {name: 2}]",
            "{$setElementOrder/containers: [{name: 1}, {name: 2}, {name: 3}], containers: [{name: 3, value: 3}, {name: 1, value: 1}]}",
        )
        .unwrap_err();
        assert_eq!(order.code, 500);
        assert_eq!(
            order.message,
            "The order in patch list:\n[map[name:3 value:3] map[name:1 value:1]]\n doesn't match $setElementOrder list:\n[map[name:1] map[name:2] map[name:3]]\n"
        );
        let scalars = strategic(
            "metadata: {finalizers: [1, 3, 2]}",
            "metadata: {$setElementOrder/finalizers: [1, 2, 3], finalizers: [3, 1]}",
        )
        .unwrap_err();
        assert!(
            scalars.message.contains("doesn't match"),
            "{}",
            scalars.message
        );
        let keyless = strategic(
            "containers: [{name: 1, value: a}]",
            "containers: [{value: b}]",
        )
        .unwrap_err();
        assert_eq!(
            keyless.message,
            "map: map[value:b] does not contain declared merge key: name"
        );
        let prefix = strategic("containers: []", "$setElementOrder: [{name: 1}]").unwrap_err();
        assert_eq!(
            (prefix.code, prefix.message.as_str()),
            (400, "invalid patch format of setElementOrder list")
        );
        let lists = strategic(
            "metadata: {finalizers: [[1]]}",
            "metadata: {finalizers: [[2]]}",
        )
        .unwrap_err();
        assert_eq!(lists.code, 422);
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(8080.0), "8080");
        assert_eq!(go_float(0.5), "0.5");
    }
}
