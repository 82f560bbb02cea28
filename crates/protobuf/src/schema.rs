//! The shape of the generated schema (`schema_generated.rs`) and lookups over it.

use crate::schema_generated::{KINDS, MESSAGES};

/// Scalar or message type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// Index into [`MESSAGES`].
    Msg(u16),
}

/// Cardinality of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `optional`.
    One,
    /// `repeated`.
    Rep,
    /// `map<string, ty>`.
    Map,
}

/// One protobuf field and its JSON counterpart.
#[derive(Debug)]
pub(crate) struct Field {
    pub tag: u32,
    /// JSON name; empty for a Go embedded struct whose fields are inlined in the parent.
    pub json: &'static str,
    pub ty: Ty,
    pub shape: Shape,
    /// Whether a zero value is meaningful in JSON (Go pointer field, or no `omitempty`).
    pub keep_zero: bool,
}

/// Messages whose JSON form differs from their protobuf structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// metav1.Time: `{seconds, nanos}` <-> RFC 3339 string (seconds precision), zero -> null.
    Time,
    /// metav1.MicroTime: `{seconds, nanos}` <-> RFC 3339 string with 6 fractional digits.
    MicroTime,
    /// metav1.Duration: `{duration: nanos}` <-> Go duration string ("1h0m0s").
    Duration,
    /// resource.Quantity: `{string}` <-> JSON string.
    Quantity,
    /// intstr.IntOrString: `{type, intVal, strVal}` <-> JSON number or string.
    IntOrString,
    /// runtime.RawExtension: `{raw}` <-> embedded JSON value.
    RawExtension,
    /// metav1.FieldsV1: `{Raw}` <-> embedded JSON value.
    FieldsV1,
    /// apiextensions JSON: `{raw}` <-> embedded JSON value.
    Json,
    /// JSONSchemaPropsOrArray: schema object or array of schemas.
    PropsOrArray,
    /// JSONSchemaPropsOrBool: schema object or boolean.
    PropsOrBool,
    /// JSONSchemaPropsOrStringArray: schema object or array of strings.
    PropsOrStringArray,
    /// Go named slice types such as `ExtraValue []string`: `{repeated string items}` <-> array.
    StringList,
}

/// A protobuf message.
#[derive(Debug)]
pub(crate) struct Message {
    /// Full protobuf name, e.g. `k8s.io.api.core.v1.Pod`.
    pub name: &'static str,
    pub special: Special,
    /// Sorted by tag.
    pub fields: &'static [Field],
}

/// A top-level kind and the message that carries it.
#[derive(Debug)]
pub(crate) struct KindEntry {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub message: u16,
}

pub(crate) fn message(index: u16) -> &'static Message {
    &MESSAGES[usize::from(index)]
}

impl Message {
    pub(crate) fn field(&self, tag: u32) -> Option<&'static Field> {
        self.fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .map(|i| &self.fields[i])
    }
}

/// Meta kinds that every group version registers (`metav1.AddToGroupVersion`) or that are
/// "unversioned"; they resolve to meta.k8s.io/v1 whatever apiVersion they carry.
const SHARED_META_KINDS: &[&str] = &[
    "WatchEvent",
    "Status",
    "DeleteOptions",
    "ListOptions",
    "GetOptions",
    "CreateOptions",
    "UpdateOptions",
    "PatchOptions",
    "APIVersions",
    "APIGroupList",
    "APIGroup",
    "APIResourceList",
];

/// Kinds served in a version the generated table's source (k8s-pb 0.9) does not know yet,
/// and the version they were promoted from, whose messages they share field for field:
/// upstream keeps a type's protobuf tags when it promotes it (as the table shows for
/// these kinds from `v1alpha1` to `v1beta1`).
const PROMOTED: &[(&str, &str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicy",
        "admissionregistration.k8s.io/v1beta1",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicyList",
        "admissionregistration.k8s.io/v1beta1",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicyBinding",
        "admissionregistration.k8s.io/v1beta1",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingAdmissionPolicyBindingList",
        "admissionregistration.k8s.io/v1beta1",
    ),
];

/// The message index for a kind, if it has a protobuf form.
pub(crate) fn lookup_kind(api_version: &str, kind: &str) -> Option<u16> {
    let find = |api_version: &str| {
        KINDS
            .binary_search_by(|e| (e.api_version, e.kind).cmp(&(api_version, kind)))
            .ok()
            .map(|i| KINDS[i].message)
    };
    let exact = find(api_version).or_else(|| {
        PROMOTED
            .iter()
            .find(|(v, k, _)| *v == api_version && *k == kind)
            .and_then(|(_, _, from)| find(from))
    });
    exact.or_else(|| {
        if !SHARED_META_KINDS.contains(&kind) {
            return None;
        }
        ["meta.k8s.io/v1", "v1"].iter().find_map(|av| {
            KINDS
                .binary_search_by(|e| (e.api_version, e.kind).cmp(&(*av, kind)))
                .ok()
                .map(|i| KINDS[i].message)
        })
    })
}

/// The message index of a message by full protobuf name.
pub(crate) fn message_by_name(name: &str) -> Option<u16> {
    MESSAGES
        .iter()
        .position(|m| m.name == name)
        .and_then(|i| u16::try_from(i).ok())
}

#[cfg(test)]
pub(crate) fn all_kinds() -> &'static [KindEntry] {
    &KINDS
}

#[cfg(test)]
pub(crate) fn all_messages() -> &'static [Message] {
    &MESSAGES
}
