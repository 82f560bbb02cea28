//! Sets of field paths, as structured-merge-diff defines them, and their `FieldsV1`
//! encoding (`f:name`, `k:{"name":"web"}`, `v:"value"`, `i:0`, `.` for the node itself).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// A JSON value with upstream's total order (numbers by value, strings bytewise, and
/// across types null < bool < number < string < list < map).
#[derive(Debug, Clone, PartialEq)]
pub struct OrdValue(pub Value);

impl Eq for OrdValue {}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(a, b)| compare_values(a, b))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(_), Value::Object(_)) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

impl Ord for OrdValue {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_values(&self.0, &other.0)
    }
}

impl PartialOrd for OrdValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One step of a path. The derived order is upstream's: field names, then keys, then
/// values, then indices.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// A field of a struct, or a key of a map.
    Field(String),
    /// An item of an associative list, by its key fields (sorted by name).
    Key(Vec<(String, OrdValue)>),
    /// An item of a set.
    Value(OrdValue),
    /// An item of a list by position.
    Index(usize),
}

/// Go's `%q`-like rendering of a value in a path, as upstream prints conflicts.
fn value_text(v: &Value) -> String {
    v.to_string()
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_text(&v.0)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", value_text(&v.0)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

impl PathElement {
    /// The `FieldsV1` key of this element.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let object: Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                format!("k:{}", Value::Object(object))
            }
            PathElement::Value(v) => format!("v:{}", v.0),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(text: &str) -> Result<Self, String> {
        let (prefix, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("unexpected key {text:?}"))?;
        let json = |rest: &str| -> Result<Value, String> {
            serde_json::from_str(rest).map_err(|e| format!("parsing {text:?}: {e}"))
        };
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match json(rest)? {
                Value::Object(fields) => {
                    let mut key: Vec<(String, OrdValue)> =
                        fields.into_iter().map(|(k, v)| (k, OrdValue(v))).collect();
                    key.sort();
                    Ok(PathElement::Key(key))
                }
                _ => Err(format!("key {text:?} is not an object")),
            },
            "v" => Ok(PathElement::Value(OrdValue(json(rest)?))),
            "i" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|_| format!("bad index in {text:?}")),
            _ => Err(format!("unexpected prefix in {text:?}")),
        }
    }
}

pub type Path = Vec<PathElement>;

/// How upstream prints a path: `.spec.containers[name="web"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of paths, kept as a trie: `members` end here, `children` continue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Set {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, Set>,
}

impl Set {
    pub fn new() -> Self {
        Set::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The paths below `element`, without it.
    pub fn child(&self, element: &PathElement) -> Option<&Set> {
        self.children.get(element)
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub fn difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, child)| {
                let rest = match other.children.get(pe) {
                    Some(theirs) => child.difference(theirs),
                    None => child.clone(),
                };
                (!rest.is_empty()).then(|| (pe.clone(), rest))
            })
            .collect();
        Set { members, children }
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, child)| {
                let both = child.intersection(other.children.get(pe)?);
                (!both.is_empty()).then(|| (pe.clone(), both))
            })
            .collect();
        Set { members, children }
    }

    /// Every member, in upstream's order (a node's members before its children's).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            out.push(path);
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// This set with every named field that has members below it made a member too
    /// (upstream's `EnsureNamedFieldsAreMembers`): a struct field holding owned fields
    /// counts as owned; a key of a free-form map does not. `field_path` names the fields
    /// from the root to this node.
    pub fn with_named_fields<'a>(
        &'a self,
        s: crate::schema::Structure,
        field_path: &mut Vec<&'a str>,
    ) -> Set {
        let free_form = s.is_free_form_map(field_path);
        let mut out = Set {
            members: self.members.clone(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let pushed = match pe {
                PathElement::Field(name) => {
                    if !free_form {
                        out.members.insert(pe.clone());
                    }
                    field_path.push(name);
                    true
                }
                _ => false,
            };
            out.children
                .insert(pe.clone(), child.with_named_fields(s, field_path));
            if pushed {
                field_path.pop();
            }
        }
        out
    }

    /// Removes the members at these exact paths (the children below them stay).
    pub fn remove_members(&mut self, paths: &[&[PathElement]]) {
        for path in paths {
            self.remove_member(path);
        }
    }

    fn remove_member(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_member(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Removes everything at and below `element`.
    pub fn remove_subtree(&mut self, element: &PathElement) {
        self.members.remove(element);
        self.children.remove(element);
    }

    /// The `FieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode(false))
    }

    fn encode(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        // Members and children interleave in element order.
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            let value = match self.children.get(pe) {
                Some(child) => child.encode(self.members.contains(pe)),
                None => Map::new(),
            };
            out.insert(pe.encode(), Value::Object(value));
        }
        out
    }

    pub fn from_fields_v1(value: &Value) -> Result<Set, String> {
        let Value::Object(entries) = value else {
            return Err("FieldsV1 must be an object".into());
        };
        let mut set = Set::new();
        for (key, child) in entries {
            if key == "." {
                continue;
            }
            let pe = PathElement::decode(key)?;
            let Value::Object(inner) = child else {
                return Err(format!("the value of {key:?} must be an object"));
            };
            if inner.is_empty() || inner.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let below = Set::from_fields_v1(child)?;
            if !below.is_empty() {
                set.children.insert(pe, below);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn fields_v1_round_trip_in_upstream_order() {
        let fields = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}},
                }}},
            },
        });
        let set = Set::from_fields_v1(&fields).unwrap();
        assert!(set.has(&[field("spec"), field("replicas")]));
        assert!(set.has(&[field("metadata"), field("labels")]));
        assert!(!set.has(&[field("spec")]));
        assert_eq!(set.to_fields_v1(), fields);
        assert_eq!(
            serde_json::to_string(&set.to_fields_v1()).unwrap(),
            serde_json::to_string(&fields).unwrap()
        );
    }

    #[test]
    fn keys_values_and_order() {
        let mut set = Set::new();
        let key = PathElement::Key(vec![
            ("containerPort".into(), OrdValue(json!(80))),
            ("protocol".into(), OrdValue(json!("TCP"))),
        ]);
        set.insert(&[field("ports"), key.clone()]);
        set.insert(&[field("ports"), key.clone(), field("containerPort")]);
        set.insert(&[
            field("finalizers"),
            PathElement::Value(OrdValue(json!("a"))),
        ]);
        set.insert(&[field("b")]);
        set.insert(&[field("a")]);
        let text = serde_json::to_string(&set.to_fields_v1()).unwrap();
        assert_eq!(
            text,
            r#"{"f:a":{},"f:b":{},"f:finalizers":{"v:\"a\"":{}},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}"#
        );
        assert_eq!(
            path_string(&[field("ports"), key, field("containerPort")]),
            r#".ports[containerPort=80,protocol="TCP"].containerPort"#
        );
        // Numbers order by value, not by text.
        assert!(OrdValue(json!(9)) < OrdValue(json!(10)));
        assert!(Set::from_fields_v1(&json!({"x:1": {}})).is_err());
    }

    #[test]
    fn set_algebra() {
        let mut a = Set::new();
        a.insert(&[field("spec"), field("replicas")]);
        a.insert(&[field("spec"), field("paused")]);
        let mut b = Set::new();
        b.insert(&[field("spec"), field("replicas")]);
        assert_eq!(a.intersection(&b), b);
        let rest = a.difference(&b);
        assert_eq!(rest.paths(), vec![vec![field("spec"), field("paused")]]);
        assert!(b.difference(&a).is_empty());
        assert_eq!(rest.union(&b), a);
        let named = a.with_named_fields(
            crate::schema::Structure::builtin("apps", "v1", "Deployment"),
            &mut Vec::new(),
        );
        assert!(named.has(&[field("spec")]));
    }
}
