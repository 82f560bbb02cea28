//! Generates `src/schema_generated.rs`, the table the codec walks.
//!
//! Run by hand (see the crate docs):
//!
//! ```text
//! cargo run -p skiff-protobuf --example gen_schema -- \
//!     --k8s-pb    ~/.cargo/registry/src/*/k8s-pb-0.9.0/src \
//!     --k8s-openapi ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_37 \
//!     --go        /tmp/k8s-go \
//!     --out       crates/protobuf/src/schema_generated.rs
//! ```
//!
//! Inputs:
//! * k8s-pb (prost output): the message structure: fields, tags, wire types, message
//!   references, plus `impl Resource` blocks giving (apiVersion, kind) per message.
//! * Go sources (`--go DIR` holding checkouts `api`, `apimachinery`,
//!   `apiextensions-apiserver`, `kube-aggregator`): JSON names joined on the protobuf tag
//!   number of each struct field (`json:"volumeID,omitempty" protobuf:"bytes,1,opt,..."`), and
//!   whether a zero value is meaningful (pointer field or no `omitempty`).
//! * k8s-openapi: fallback JSON names (matched on the normalized snake_case name) for fields
//!   the Go sources do not cover.
//!
//! Anything matched by none of them falls back to lowerCamelCase of the prost field name;
//! such fields are listed on stderr.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
struct PbField {
    rust_name: String,
    tag: u32,
    /// string, bytes, bool, int32, int64, double, message
    ty: String,
    /// resolved message reference (modpath, struct name) for message types
    msg: Option<(String, String)>,
    shape: &'static str,
}

#[derive(Debug, Clone)]
struct PbMessage {
    modpath: String,
    name: String,
    fields: Vec<PbField>,
}

/// (modpath, lowercase struct name) -> (Go struct name, proto tag -> field).
type GoStructs = HashMap<(String, String), (String, HashMap<u32, GoField>)>;
/// (modpath, lowercase struct name) -> (k8s-openapi name, normalized snake name -> JSON name).
type OpenapiStructs = HashMap<(String, String), (String, HashMap<String, String>)>;

struct GoField {
    json: String,
    keep_zero: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut i = 1;
    while i + 1 < args.len() {
        opts.insert(
            args[i].trim_start_matches('-').to_string(),
            args[i + 1].clone(),
        );
        i += 2;
    }
    let pb_dir = PathBuf::from(opts.get("k8s-pb").expect("--k8s-pb DIR"));
    let oa_dir = opts.get("k8s-openapi").map(PathBuf::from);
    let go_dir = opts.get("go").map(PathBuf::from);
    let out = PathBuf::from(
        opts.get("out")
            .cloned()
            .unwrap_or_else(|| "crates/protobuf/src/schema_generated.rs".into()),
    );

    // ---- k8s-pb
    let mut messages: Vec<PbMessage> = Vec::new();
    let mut kinds: Vec<(String, String, String, String)> = Vec::new(); // apiVersion, kind, modpath, name
    for file in walk(&pb_dir) {
        if file.file_name().and_then(|n| n.to_str()) != Some("mod.rs") {
            continue;
        }
        let rel = file.parent().unwrap().strip_prefix(&pb_dir).unwrap();
        let modpath = rel.to_string_lossy().replace('\\', "/");
        let text = fs::read_to_string(&file).unwrap();
        parse_pb(&modpath, &text, &mut messages, &mut kinds);
    }
    messages.sort_by(|a, b| (&a.modpath, &a.name).cmp(&(&b.modpath, &b.name)));
    for m in &mut messages {
        m.fields.sort_by_key(|f| f.tag);
    }
    let index: HashMap<(String, String), usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.modpath.clone(), m.name.clone()), i))
        .collect();

    // ---- Go sources: (modpath, lowercase struct) -> (GoName, tag -> field)
    let mut go: GoStructs = HashMap::new();
    if let Some(go_dir) = &go_dir {
        for repo in [
            "api",
            "apimachinery",
            "apiextensions-apiserver",
            "kube-aggregator",
        ] {
            let root = go_dir.join(repo);
            for file in walk(&root) {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !name.ends_with(".go") || name.ends_with("_test.go") {
                    continue;
                }
                let rel = file.parent().unwrap().strip_prefix(&root).unwrap();
                let modpath = format!(
                    "{}/{}",
                    repo.replace('-', "_"),
                    rel.to_string_lossy().replace('\\', "/")
                );
                let text = fs::read_to_string(&file).unwrap();
                parse_go(&modpath, &text, &mut go);
            }
        }
    }

    // ---- k8s-openapi: (modpath, lowercase struct) -> (OpenapiName, normalized -> json)
    let mut oa: OpenapiStructs = HashMap::new();
    if let Some(oa_dir) = &oa_dir {
        for file in walk(oa_dir) {
            if file.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = file.parent().unwrap().strip_prefix(oa_dir).unwrap();
            let modpath = rel.to_string_lossy().replace('\\', "/");
            let text = fs::read_to_string(&file).unwrap();
            parse_openapi(&modpath, &text, &mut oa);
        }
    }

    // ---- emit
    let mut s = String::new();
    s.push_str(
        "// @generated by `examples/gen_schema.rs` from k8s-pb 0.9 (structure), the Kubernetes Go\n\
         // sources (JSON names, zero-value rules) and k8s-openapi 0.29 (fallback names).\n\
         // Do not edit by hand; see the crate docs for how to regenerate.\n\n\
         use crate::schema::{Field, KindEntry, Message, Shape::*, Special, Ty::*};\n\n",
    );
    let _ = writeln!(
        s,
        "pub(crate) static MESSAGES: [Message; {}] = [",
        messages.len()
    );
    let mut fallbacks = 0;
    for (idx, m) in messages.iter().enumerate() {
        let key = (m.modpath.clone(), m.name.to_lowercase());
        let go_entry = go.get(&key);
        let oa_entry = oa.get(&key);
        let display = go_entry
            .map(|g| g.0.clone())
            .or_else(|| oa_entry.map(|o| o.0.clone()))
            .unwrap_or_else(|| m.name.clone());
        let full = format!(
            "k8s.io.{}.{}",
            m.modpath.replace('/', ".").replace('_', "-"),
            display
        );
        let special = special_for(&m.modpath, &m.name);
        let _ = writeln!(
            s,
            "    // {idx}\n    Message {{ name: {full:?}, special: Special::{special}, fields: &["
        );
        for f in &m.fields {
            let (json, keep_zero) = if let Some(gf) = go_entry.and_then(|g| g.1.get(&f.tag)) {
                (gf.json.clone(), gf.keep_zero)
            } else if let Some(j) = oa_entry.and_then(|o| o.1.get(&normalize(&f.rust_name))) {
                eprintln!("openapi name for {full}.{} -> {j}", f.rust_name);
                (j.clone(), false)
            } else {
                fallbacks += 1;
                let j = lower_camel(&f.rust_name);
                eprintln!("FALLBACK name for {full}.{} -> {j}", f.rust_name);
                (j, false)
            };
            let ty = match f.ty.as_str() {
                "string" => "Str".to_string(),
                "bytes" => "Bytes".to_string(),
                "bool" => "Bool".to_string(),
                "int32" => "I32".to_string(),
                "int64" => "I64".to_string(),
                "double" => "F64".to_string(),
                "message" => {
                    let r = f.msg.clone().unwrap();
                    match index.get(&r) {
                        Some(i) => format!("Msg({i})"),
                        None => panic!("unresolved message {r:?} in {full}"),
                    }
                }
                other => panic!("unknown type {other}"),
            };
            let _ = writeln!(
                s,
                "        Field {{ tag: {}, json: {json:?}, ty: {ty}, shape: {}, keep_zero: {keep_zero} }},",
                f.tag, f.shape
            );
        }
        s.push_str("    ] },\n");
    }
    s.push_str("];\n\n");

    // Kinds: resources, their lists, and meta kinds.
    let mut kind_rows: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (av, kind, modpath, name) in &kinds {
        if let Some(&i) = index.get(&(modpath.clone(), name.clone())) {
            kind_rows.insert((av.clone(), kind.clone()), i);
        }
        if let Some(&i) = index.get(&(modpath.clone(), format!("{name}List"))) {
            kind_rows.insert((av.clone(), format!("{kind}List")), i);
        }
    }
    // Every other message of a served group version whose first field is `metadata`
    // (ObjectMeta or ListMeta) is a top-level kind too: subresources such as Scale, Eviction,
    // TokenRequest, Binding, and list kinds.
    let mut module_av: HashMap<String, String> = kinds
        .iter()
        .map(|(av, _, modpath, _)| (modpath.clone(), av.clone()))
        .collect();
    module_av.insert(
        "api/apidiscovery/v2".into(),
        "apidiscovery.k8s.io/v2".into(),
    );
    module_av.insert(
        "api/apidiscovery/v2beta1".into(),
        "apidiscovery.k8s.io/v2beta1".into(),
    );
    let object_meta = index[&(
        "apimachinery/pkg/apis/meta/v1".to_string(),
        "ObjectMeta".to_string(),
    )];
    let list_meta = index[&(
        "apimachinery/pkg/apis/meta/v1".to_string(),
        "ListMeta".to_string(),
    )];
    for (i, m) in messages.iter().enumerate() {
        let Some(av) = module_av.get(&m.modpath) else {
            continue;
        };
        let Some(first) = m.fields.iter().find(|f| f.tag == 1) else {
            continue;
        };
        let Some(target) = first.msg.as_ref().and_then(|r| index.get(r)) else {
            continue;
        };
        if first.rust_name != "metadata"
            || (*target != object_meta && *target != list_meta)
            || m.name.ends_with("Spec")
            || m.name.ends_with("ClaimTemplate")
        {
            continue;
        }
        let kind = go
            .get(&(m.modpath.clone(), m.name.to_lowercase()))
            .map(|g| g.0.clone())
            .unwrap_or_else(|| m.name.clone());
        kind_rows.entry((av.clone(), kind)).or_insert(i);
    }
    let meta = "apimachinery/pkg/apis/meta/v1";
    for (av, kind) in [
        ("v1", "Status"),
        ("v1", "APIVersions"),
        ("v1", "APIGroupList"),
        ("v1", "APIGroup"),
        ("v1", "APIResourceList"),
        ("v1", "WatchEvent"),
        ("meta.k8s.io/v1", "Status"),
        ("meta.k8s.io/v1", "WatchEvent"),
        ("meta.k8s.io/v1", "DeleteOptions"),
        ("meta.k8s.io/v1", "ListOptions"),
        ("meta.k8s.io/v1", "GetOptions"),
        ("meta.k8s.io/v1", "CreateOptions"),
        ("meta.k8s.io/v1", "UpdateOptions"),
        ("meta.k8s.io/v1", "PatchOptions"),
        ("meta.k8s.io/v1", "ApplyOptions"),
        ("meta.k8s.io/v1", "TableOptions"),
        ("meta.k8s.io/v1", "PartialObjectMetadata"),
        ("meta.k8s.io/v1", "PartialObjectMetadataList"),
        ("meta.k8s.io/v1", "List"),
    ] {
        let i = index[&(meta.to_string(), kind.to_string())];
        kind_rows.insert((av.to_string(), kind.to_string()), i);
    }
    let metab = "apimachinery/pkg/apis/meta/v1beta1";
    if let Some(&i) = index.get(&(metab.to_string(), "PartialObjectMetadataList".to_string())) {
        kind_rows.insert(
            (
                "meta.k8s.io/v1beta1".into(),
                "PartialObjectMetadataList".into(),
            ),
            i,
        );
    }
    let _ = writeln!(
        s,
        "pub(crate) static KINDS: [KindEntry; {}] = [",
        kind_rows.len()
    );
    for ((av, kind), i) in &kind_rows {
        let _ = writeln!(
            s,
            "    KindEntry {{ api_version: {av:?}, kind: {kind:?}, message: {i} }},"
        );
    }
    s.push_str("];\n");
    fs::write(&out, s).unwrap();
    eprintln!(
        "wrote {} messages, {} kinds ({} fallback names) to {}",
        messages.len(),
        kind_rows.len(),
        fallbacks,
        out.display()
    );
}

fn special_for(modpath: &str, name: &str) -> &'static str {
    match (modpath, name) {
        ("apimachinery/pkg/apis/meta/v1", "Time") => "Time",
        ("apimachinery/pkg/apis/meta/v1", "MicroTime") => "MicroTime",
        ("apimachinery/pkg/apis/meta/v1", "Duration") => "Duration",
        ("apimachinery/pkg/apis/meta/v1", "FieldsV1") => "FieldsV1",
        ("apimachinery/pkg/apis/meta/v1", "Verbs") => "StringList",
        ("apimachinery/pkg/api/resource", "Quantity") => "Quantity",
        ("apimachinery/pkg/api/resource", "QuantityValue") => "Quantity",
        ("apimachinery/pkg/util/intstr", "IntOrString") => "IntOrString",
        ("apimachinery/pkg/runtime", "RawExtension") => "RawExtension",
        (m, "Json") if m.starts_with("apiextensions_apiserver/") => "Json",
        (m, "JsonSchemaPropsOrArray") if m.starts_with("apiextensions_apiserver/") => {
            "PropsOrArray"
        }
        (m, "JsonSchemaPropsOrBool") if m.starts_with("apiextensions_apiserver/") => "PropsOrBool",
        (m, "JsonSchemaPropsOrStringArray") if m.starts_with("apiextensions_apiserver/") => {
            "PropsOrStringArray"
        }
        (_, "ExtraValue") => "StringList",
        _ => "None",
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn normalize(s: &str) -> String {
    s.trim_start_matches("r#")
        .trim_end_matches('_')
        .replace('_', "")
        .to_lowercase()
}

fn lower_camel(s: &str) -> String {
    let s = s.trim_start_matches("r#");
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn quoted(line: &str) -> Option<String> {
    let a = line.find('"')?;
    let b = line[a + 1..].find('"')?;
    Some(line[a + 1..a + 1 + b].to_string())
}

fn parse_pb(
    modpath: &str,
    text: &str,
    messages: &mut Vec<PbMessage>,
    kinds: &mut Vec<(String, String, String, String)>,
) {
    let mut cur: Option<PbMessage> = None;
    let mut attr: Option<String> = None;
    let mut impl_for: Option<String> = None;
    let mut api_version = String::new();
    // Join field declarations that rustfmt split over several lines.
    let mut joined: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(last) = joined.last_mut() {
            let lt = last.trim();
            let open = lt.matches('<').count() > lt.matches('>').count();
            if lt.starts_with("pub ")
                && lt.contains(':')
                && (open || !lt.ends_with(','))
                && !lt.ends_with('{')
            {
                last.push_str(line.trim());
                continue;
            }
        }
        joined.push(line.to_string());
    }
    for line in joined.iter().map(|l| l.as_str()) {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.split([' ', '{']).next().unwrap().to_string();
            let m = PbMessage {
                modpath: modpath.to_string(),
                name,
                fields: Vec::new(),
            };
            if rest.trim_end().ends_with("{}") {
                messages.push(m);
            } else {
                cur = Some(m);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("impl crate::Resource for ") {
            impl_for = Some(rest.trim_end_matches(" {").trim().to_string());
            continue;
        }
        if let Some(target) = &impl_for {
            let t = line.trim();
            if t.starts_with("const API_VERSION") {
                api_version = quoted(t).unwrap();
            } else if t.starts_with("const KIND") {
                let kind = quoted(t).unwrap();
                kinds.push((
                    api_version.clone(),
                    kind,
                    modpath.to_string(),
                    target.clone(),
                ));
            } else if line.starts_with('}') {
                impl_for = None;
            }
            continue;
        }
        let Some(m) = cur.as_mut() else { continue };
        if line.starts_with('}') {
            messages.push(cur.take().unwrap());
            continue;
        }
        let t = line.trim();
        if let Some(a) = t.strip_prefix("#[prost(") {
            attr = Some(a.trim_end_matches(")]").to_string());
            continue;
        }
        if let (Some(a), Some(rest)) = (attr.as_ref(), t.strip_prefix("pub ")) {
            let (fname, fty) = rest.split_once(':').unwrap();
            let fty = fty.trim().trim_end_matches(',');
            let tag: u32 = a
                .split("tag = \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let (ty, shape) = if let Some(map) = a.strip_prefix("btree_map = \"string, ") {
                (map.split('"').next().unwrap().to_string(), "Map")
            } else {
                let first = a.split([',', ' ']).next().unwrap().to_string();
                let shape = if a.contains("repeated") { "Rep" } else { "One" };
                (first, shape)
            };
            let msg = if ty == "message" {
                Some(resolve(modpath, fty))
            } else {
                None
            };
            m.fields.push(PbField {
                rust_name: fname.to_string(),
                tag,
                ty,
                msg,
                shape,
            });
            attr = None;
        }
    }
}

/// Resolves a prost type expression such as
/// `::core::option::Option<super::super::apimachinery::pkg::apis::meta::v1::ObjectMeta>`
/// relative to `modpath`.
fn resolve(modpath: &str, ty: &str) -> (String, String) {
    let mut t = ty.replace(' ', "").replace(",>", ">");
    for wrapper in [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ] {
        while let Some(rest) = t.strip_prefix(wrapper) {
            t = rest
                .strip_suffix('>')
                .unwrap_or_else(|| panic!("bad type {ty:?}"))
                .to_string();
        }
    }
    if let Some(rest) = t.strip_prefix("::prost::alloc::collections::BTreeMap<") {
        t = rest
            .strip_suffix('>')
            .unwrap()
            .split_once(',')
            .unwrap()
            .1
            .to_string();
    }
    let mut segs: Vec<&str> = if modpath.is_empty() {
        Vec::new()
    } else {
        modpath.split('/').collect()
    };
    let parts: Vec<&str> = t.split("::").collect();
    let (name, path) = parts.split_last().unwrap();
    for p in path {
        match *p {
            "super" => {
                segs.pop();
            }
            "crate" => segs.clear(),
            other => segs.push(other),
        }
    }
    (segs.join("/"), name.to_string())
}

fn parse_go(modpath: &str, text: &str, go: &mut GoStructs) {
    let mut cur: Option<(String, HashMap<u32, GoField>)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("type ") {
            if let Some(name) = rest.strip_suffix(" struct {") {
                cur = Some((name.trim().to_string(), HashMap::new()));
            }
            continue;
        }
        if line.starts_with('}') {
            if let Some((name, fields)) = cur.take() {
                go.insert((modpath.to_string(), name.to_lowercase()), (name, fields));
            }
            continue;
        }
        let Some((_, fields)) = cur.as_mut() else {
            continue;
        };
        let t = line.trim();
        if t.starts_with("//") {
            continue;
        }
        let Some((decl, tags)) = t.split_once('`') else {
            continue;
        };
        let decl: Vec<&str> = decl.split_whitespace().collect();
        if decl.is_empty() {
            continue;
        }
        // `metav1.ObjectMeta `json:"metadata,omitempty"`` embeds under a JSON name.
        let pointer = decl.last().is_some_and(|t| t.starts_with('*'));
        let Some(json) = tags
            .split("json:\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let Some(pb) = tags
            .split("protobuf:\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let Some(tag) = pb.split(',').nth(1).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let mut jparts = json.split(',');
        let jname = jparts.next().unwrap_or("").to_string();
        if jname == "-" || (jname.is_empty() && decl.len() != 1) {
            continue;
        }
        // An embedded struct without a JSON name is inlined by encoding/json: its fields
        // appear in the parent object. The schema marks it with an empty JSON name.
        let omitempty = jparts.any(|o| o == "omitempty" || o == "omitzero");
        fields.insert(
            tag,
            GoField {
                json: jname,
                keep_zero: pointer || !omitempty,
            },
        );
    }
}

fn parse_openapi(modpath: &str, text: &str, oa: &mut OpenapiStructs) {
    let Some(name) = text
        .lines()
        .find_map(|l| l.strip_prefix("pub struct "))
        .map(|r| r.split([' ', '{', '<']).next().unwrap().to_string())
    else {
        return;
    };
    let mut fields = HashMap::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some((json, rest)) = t.split_once("\" => Field::Key_") {
            let json = json.trim_start_matches('"');
            let snake = rest.trim_end_matches(',');
            fields.insert(normalize(snake), json.to_string());
        }
    }
    oa.insert((modpath.to_string(), name.to_lowercase()), (name, fields));
}
