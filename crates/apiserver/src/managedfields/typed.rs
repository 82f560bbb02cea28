//! Field sets of objects, comparisons and the apply merge, walking JSON objects with the
//! list and map semantics of [`crate::schema`] (structured-merge-diff's `ToFieldSet`,
//! `Compare`, `Merge` and `RemoveItems`).

use serde_json::{Map, Value};

use super::fieldpath::{OrdValue, Path, PathElement, Set};
use crate::schema::{ListType, Structure};

/// The path element an item of the list at `field_path` is known by.
fn item_element(s: Structure, list: &ListType, item: &Value, index: usize) -> PathElement {
    match list {
        ListType::Map(keys) => {
            let mut fields = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(v) = item.get(*key).cloned().or_else(|| s.key_default(key)) {
                    fields.push(((*key).to_string(), OrdValue(v)));
                }
            }
            fields.sort();
            PathElement::Key(fields)
        }
        ListType::Set => PathElement::Value(OrdValue(item.clone())),
        ListType::Atomic => PathElement::Index(index),
    }
}

/// Whether the value at `field_path` is a leaf: a scalar, or a list or map that is one value.
fn is_leaf(s: Structure, value: &Value, field_path: &[&str]) -> bool {
    match value {
        Value::Object(_) => s.is_atomic_map(field_path),
        Value::Array(_) => s.list_type(field_path) == ListType::Atomic,
        _ => true,
    }
}

/// The fields an object sets (structured-merge-diff's `ToFieldSet`): its leaves, the items
/// of its granular lists, its empty maps and the keys of free-form maps.
pub fn field_set(object: &Value, s: Structure) -> Set {
    let mut set = Set::new();
    walk_set(s, object, &mut Vec::new(), &mut Vec::new(), &mut set);
    set
}

fn walk_set<'a>(
    s: Structure,
    value: &'a Value,
    fields: &mut Vec<&'a str>,
    path: &mut Path,
    set: &mut Set,
) {
    if !fields.is_empty() && is_leaf(s, value, fields) {
        set.insert(path);
        return;
    }
    match value {
        Value::Object(map) => {
            let free_form = s.is_free_form_map(fields);
            for (key, child) in map {
                fields.push(key);
                path.push(PathElement::Field(key.clone()));
                walk_set(s, child, fields, path, set);
                let empty_map = matches!(child, Value::Object(m) if m.is_empty());
                if child.is_null() || empty_map || free_form {
                    set.insert(path);
                }
                path.pop();
                fields.pop();
            }
        }
        Value::Array(items) => {
            let list = s.list_type(fields);
            for (i, item) in items.iter().enumerate() {
                path.push(item_element(s, &list, item, i));
                walk_set(s, item, fields, path, set);
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

/// What changed from one object to another (structured-merge-diff's `Compare`): leaves
/// added, modified or removed, and the granular maps and list items that appeared or went.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

impl Comparison {
    pub fn changed(&self) -> Set {
        self.added.union(&self.modified)
    }
}

pub fn compare(old: &Value, new: &Value, s: Structure) -> Comparison {
    let mut c = Comparison::default();
    walk_compare(
        s,
        Some(old),
        Some(new),
        &mut Vec::new(),
        &mut Vec::new(),
        &mut c,
    );
    c
}

fn walk_compare<'a>(
    s: Structure,
    lhs: Option<&'a Value>,
    rhs: Option<&'a Value>,
    fields: &mut Vec<&'a str>,
    path: &mut Path,
    c: &mut Comparison,
) {
    let Some(present) = rhs.or(lhs) else {
        return;
    };
    // Equal sides hold no difference at any depth; most of an updated object is
    // unchanged (a status write leaves the spec alone), and this skips walking it.
    if let (Some(l), Some(r)) = (lhs, rhs) {
        if l == r {
            return;
        }
    }
    // A null facing a granular map or list is a wildcard (upstream's zero values hold
    // `null` for lists such as `containers`): the other side's contents are compared
    // against nothing, but the node itself was not added or removed.
    let granular = |v: &Value| (v.is_object() || v.is_array()) && !is_leaf(s, v, fields);
    match (lhs, rhs) {
        (Some(Value::Null), Some(r)) if granular(r) => {
            walk_children(s, None, Some(r), fields, path, c);
            return;
        }
        (Some(l), Some(Value::Null)) if granular(l) => {
            walk_children(s, Some(l), None, fields, path, c);
            return;
        }
        _ => {}
    }
    let same_shape = match (lhs, rhs) {
        (Some(l), Some(r)) => {
            std::mem::discriminant(l) == std::mem::discriminant(r)
                && (l.is_object() || l.is_array())
        }
        _ => true,
    };
    let leaf = (!fields.is_empty() && is_leaf(s, present, fields))
        || !same_shape
        || !(present.is_object() || present.is_array());
    if !leaf {
        walk_children(s, lhs, rhs, fields, path, c);
    }
    if leaf || !path.is_empty() {
        match (lhs, rhs) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(l), Some(r)) if leaf && l != r => c.modified.insert(path),
            _ => {}
        }
    }
}

/// Compares the fields or items of a granular map or list.
fn walk_children<'a>(
    s: Structure,
    lhs: Option<&'a Value>,
    rhs: Option<&'a Value>,
    fields: &mut Vec<&'a str>,
    path: &mut Path,
    c: &mut Comparison,
) {
    let Some(present) = rhs.or(lhs) else {
        return;
    };
    match present {
        Value::Object(_) => {
            let l = lhs.and_then(Value::as_object);
            let r = rhs.and_then(Value::as_object);
            let in_l = |k: &String| l.is_some_and(|l| l.contains_key(k));
            let keys: Vec<&'a String> = l
                .into_iter()
                .flat_map(|m| m.keys())
                .chain(r.into_iter().flat_map(|m| m.keys()).filter(|k| !in_l(k)))
                .collect();
            for key in keys {
                fields.push(key);
                path.push(PathElement::Field(key.clone()));
                let (lv, rv) = (l.and_then(|m| m.get(key)), r.and_then(|m| m.get(key)));
                walk_compare(s, lv, rv, fields, path, c);
                path.pop();
                fields.pop();
            }
        }
        Value::Array(_) => {
            let list = s.list_type(fields);
            let index = |v: Option<&'a Value>| -> Vec<(PathElement, &'a Value)> {
                v.and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (item_element(s, &list, item, i), item))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (l, r) = (index(lhs), index(rhs));
            let find = |items: &[(PathElement, &'a Value)], pe: &PathElement| {
                items.iter().find(|(p, _)| p == pe).map(|(_, v)| *v)
            };
            for (pe, item) in &l {
                path.push(pe.clone());
                walk_compare(s, Some(item), find(&r, pe), fields, path, c);
                path.pop();
            }
            for (pe, item) in &r {
                if find(&l, pe).is_none() {
                    path.push(pe.clone());
                    walk_compare(s, None, Some(item), fields, path, c);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// Merges an applied configuration into the live object (structured-merge-diff's
/// `Merge`): the configuration's leaves win, granular maps merge by field, associative
/// lists by key (shared items in the configuration's order, others where they were),
/// sets by value. A `null` in the configuration leaves the field unset.
pub fn merge(live: &Value, config: &Value, s: Structure) -> Value {
    merge_at(s, Some(live), config, &mut Vec::new()).unwrap_or(Value::Null)
}

fn merge_at<'a>(
    s: Structure,
    live: Option<&'a Value>,
    config: &'a Value,
    fields: &mut Vec<&'a str>,
) -> Option<Value> {
    if config.is_null() {
        return None;
    }
    let Some(live) = live else {
        return Some(strip_nulls(config));
    };
    let granular = fields.is_empty() || !is_leaf(s, config, fields);
    match (live, config) {
        (Value::Object(l), Value::Object(r)) if granular => {
            let mut out = l.clone();
            for (key, value) in r {
                fields.push(key);
                match merge_at(s, l.get(key), value, fields) {
                    Some(merged) => {
                        out.insert(key.clone(), merged);
                    }
                    None => {
                        out.shift_remove(key);
                    }
                }
                fields.pop();
            }
            Some(Value::Object(out))
        }
        (Value::Array(l), Value::Array(r)) if granular => {
            Some(Value::Array(merge_list(s, l, r, fields)))
        }
        _ => Some(strip_nulls(config)),
    }
}

/// Merges two granular lists item by item, ordered as upstream orders them: the items
/// both hold keep the configuration's order, items only the live list holds stay where
/// they were relative to those, items only the configuration holds come where it puts them.
fn merge_list<'a>(
    s: Structure,
    live: &'a [Value],
    config: &'a [Value],
    fields: &mut Vec<&'a str>,
) -> Vec<Value> {
    let list = s.list_type(fields);
    let key = |items: &'a [Value]| -> Vec<PathElement> {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| item_element(s, &list, v, i))
            .collect()
    };
    let (lk, rk) = (key(live), key(config));
    let in_live = |pe: &PathElement| lk.iter().position(|k| k == pe);
    let in_config = |pe: &PathElement| rk.iter().any(|k| k == pe);
    // The shared items in the configuration's order: the next one is the only shared
    // item the walk may take from the live list.
    let mut shared = rk.iter().filter(|pe| in_live(pe).is_some());
    let mut next_shared = shared.next();
    let mut taken: Vec<&PathElement> = Vec::new();
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut l, mut r) = (0, 0);
    while l < lk.len() || r < rk.len() {
        if l < lk.len() && r < rk.len() {
            if lk[l] == rk[r] {
                taken.push(&rk[r]);
                out.extend(merge_at(s, Some(&live[l]), &config[r], fields));
                l += 1;
                r += 1;
                next_shared = shared.next();
                continue;
            }
            if in_config(&lk[l]) && next_shared.is_some_and(|n| *n != lk[l]) {
                l += 1;
                continue;
            }
        }
        if l < lk.len() {
            if !in_config(&lk[l]) {
                out.push(live[l].clone());
                l += 1;
                continue;
            }
            if taken.contains(&&lk[l]) {
                l += 1;
                continue;
            }
        }
        if r < rk.len() {
            let pe = &rk[r];
            taken.push(pe);
            out.extend(merge_at(
                s,
                in_live(pe).map(|i| &live[i]),
                &config[r],
                fields,
            ));
            r += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes from `value` every field, map key and list item whose path is a member of
/// `remove` (structured-merge-diff's `RemoveItems`).
pub fn remove_items(value: &mut Value, remove: &Set, s: Structure) {
    remove_at(s, value, remove, &mut Vec::new());
}

fn remove_at(s: Structure, value: &mut Value, remove: &Set, fields: &mut Vec<String>) {
    if !fields.is_empty() {
        let names: Vec<&str> = fields.iter().map(String::as_str).collect();
        if is_leaf(s, value, &names) {
            return;
        }
    }
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let pe = PathElement::Field(key.clone());
                if remove.has(std::slice::from_ref(&pe)) {
                    map.shift_remove(&key);
                } else if let (Some(below), Some(child)) = (remove.child(&pe), map.get_mut(&key)) {
                    fields.push(key);
                    remove_at(s, child, below, fields);
                    fields.pop();
                }
            }
        }
        Value::Array(items) => {
            let names: Vec<&str> = fields.iter().map(String::as_str).collect();
            let list = s.list_type(&names);
            let elements: Vec<PathElement> = items
                .iter()
                .enumerate()
                .map(|(i, v)| item_element(s, &list, v, i))
                .collect();
            let mut kept = Vec::with_capacity(items.len());
            for (mut item, pe) in std::mem::take(items).into_iter().zip(elements) {
                if remove.has(std::slice::from_ref(&pe)) {
                    continue;
                }
                if let Some(below) = remove.child(&pe) {
                    remove_at(s, &mut item, below, fields);
                }
                kept.push(item);
            }
            *items = kept;
        }
        _ => {}
    }
}

/// Structs upstream's Go types always hold (non-pointer fields), present even in an empty
/// object: a comparison treats them as there before a write, so creating an object does
/// not claim them as added nodes, as upstream's zero values do not.
const ALWAYS_PRESENT: &[&[&str]] = &[
    &["metadata"],
    &["spec"],
    &["status"],
    &["spec", "template"],
    &["spec", "template", "metadata"],
    &["spec", "template", "spec"],
    &["spec", "strategy"],
    &["spec", "updateStrategy"],
    &["spec", "jobTemplate"],
    &["spec", "jobTemplate", "metadata"],
    &["spec", "jobTemplate", "spec"],
    &["spec", "jobTemplate", "spec", "template"],
    &["spec", "jobTemplate", "spec", "template", "metadata"],
    &["spec", "jobTemplate", "spec", "template", "spec"],
];

/// Lists upstream's Go types always serialize (as `null` when empty).
const ALWAYS_NULL: &[&[&str]] = &[
    &["spec", "containers"],
    &["spec", "template", "spec", "containers"],
    &[
        "spec",
        "jobTemplate",
        "spec",
        "template",
        "spec",
        "containers",
    ],
];

/// Fills in the always-present structs under fields the object has (comparisons only:
/// both sides get them, so kinds without such fields see no difference).
pub fn with_zero_structs(mut object: Value) -> Value {
    let zero_values = ALWAYS_PRESENT
        .iter()
        .map(|p| (p, Value::Object(Map::new())))
        .chain(ALWAYS_NULL.iter().map(|p| (p, Value::Null)));
    for (path, zero) in zero_values {
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut node = Some(&mut object);
        for p in parents {
            node = node.and_then(|n| n.get_mut(*p)).filter(|n| n.is_object());
        }
        if let Some(map) = node.and_then(Value::as_object_mut) {
            map.entry(*last).or_insert(zero);
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Structure<'static> {
        Structure::builtin("apps", "v1", "Deployment")
    }

    fn fields_of(set: &Set) -> Value {
        set.to_fields_v1()
    }

    #[test]
    fn field_set_of_an_applied_deployment() {
        let config = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx", "image": "nginx",
                        "ports": [{"containerPort": 80}],
                        "resources": {},
                    }]},
                },
            },
        });
        let set = field_set(&config, deployment());
        assert_eq!(
            fields_of(&set),
            json!({
                "f:apiVersion": {}, "f:kind": {},
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {},
                            }},
                            "f:resources": {},
                        }}},
                    },
                },
            })
        );
    }

    #[test]
    fn comparison_marks_new_nodes_but_not_zero_structs() {
        let old = with_zero_structs(json!({"kind": "Deployment"}));
        let new = with_zero_structs(json!({
            "kind": "Deployment",
            "metadata": {"labels": {"app": "web"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
            ]}}},
        }));
        let c = compare(&old, &new, deployment());
        assert!(c.removed.is_empty() && c.modified.is_empty());
        assert_eq!(
            fields_of(&c.added),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"a\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}, "f:protocol": {},
                        }},
                    },
                }}}},
            })
        );
        let changed = json!({"kind": "Deployment", "spec": {"replicas": 3}, "metadata": {}});
        let c = compare(&new, &with_zero_structs(changed), deployment());
        assert!(c.modified.has(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        assert!(c.removed.has(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into())
        ]));
    }

    #[test]
    fn merge_by_list_semantics() {
        // A Deployment with this pod spec in its template.
        let with_pod_spec = |spec: Value| json!({"spec": {"template": {"spec": spec}}});
        let mut live = with_pod_spec(json!({"containers": [
            {"name": "a", "image": "1", "tty": true, "args": ["x", "y"]},
            {"name": "b", "image": "2"},
        ]}));
        live["metadata"] = json!({"finalizers": ["a"]});
        live["spec"]["selector"] = json!({"matchLabels": {"x": "1", "y": "2"}});
        let mut config = with_pod_spec(json!({"containers": [
            {"name": "c", "image": "3"},
            {"name": "a", "image": "9", "stdin": null, "args": ["z"]},
        ]}));
        config["metadata"] = json!({"finalizers": ["b"]});
        config["spec"]["selector"] = json!({"matchLabels": {"x": "1"}});
        let merged = merge(&live, &config, deployment());
        assert_eq!(merged["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            merged["spec"]["selector"],
            json!({"matchLabels": {"x": "1"}})
        );
        // Containers merge by name; their args are atomic: replaced.
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "c", "image": "3"},
                {"name": "a", "image": "9", "tty": true, "args": ["z"]},
                {"name": "b", "image": "2"},
            ])
        );
        // Reordered shared items follow the configuration; the live-only item keeps its
        // place before them.
        let live = with_pod_spec(json!({"volumes": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
        let config = with_pod_spec(json!({"volumes": [{"name": "c"}, {"name": "a"}]}));
        assert_eq!(
            merge(&live, &config, deployment())["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "b"}, {"name": "c"}, {"name": "a"}])
        );
    }

    #[test]
    fn remove_items_by_path() {
        let mut object = json!({"data": {"a": "1", "b": "2"}, "spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "2", "tty": true}
        ]}});
        let config = json!({"data": {"b": "x"}, "spec": {"containers": [{"name": "a"}, {"name": "b", "tty": true}]}});
        let pod = Structure::builtin("", "v1", "Pod");
        let mut remove = field_set(&config, pod);
        // Keep container a and data.b, drop everything else the config names.
        let keep = field_set(
            &json!({"spec": {"containers": [{"name": "a"}]}, "data": {"b": "x"}}),
            pod,
        );
        remove = remove.difference(&keep);
        remove_items(&mut object, &remove, pod);
        assert_eq!(
            object,
            json!({"data": {"a": "1", "b": "2"}, "spec": {"containers": [{"name": "a", "image": "1"}]}})
        );
    }
}
