//! Golden bytes captured from a real kubectl 1.37.1: each `tests/fixtures/kubectl/*.bin` is the
//! request body of a `kubectl create ...` (sent as application/vnd.kubernetes.protobuf) and the
//! `.json` next to it is what `kubectl create ... --dry-run=client -o json` prints for the same
//! object. Decoding the bytes must give that JSON.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

fn fixtures() -> Vec<(String, Vec<u8>, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubectl");
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .expect("fixtures dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    entries.sort();
    for bin in entries {
        let json = bin.with_extension("json");
        let expected: Value =
            serde_json::from_slice(&fs::read(&json).expect("json fixture")).expect("valid json");
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, fs::read(&bin).unwrap(), expected));
    }
    out
}

#[test]
fn kubectl_request_bodies_decode_to_kubectls_json() {
    let fx = fixtures();
    assert_eq!(fx.len(), 15);
    for (name, bytes, expected) in fx {
        let got = skiff_protobuf::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got,
            expected,
            "{name}:\n got {}\nwant {}",
            serde_json::to_string_pretty(&got).unwrap(),
            serde_json::to_string_pretty(&expected).unwrap()
        );
    }
}

#[test]
fn kubectl_objects_round_trip() {
    for (name, bytes, expected) in fixtures() {
        let encoded = skiff_protobuf::encode(&expected).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = skiff_protobuf::decode(&encoded).unwrap();
        assert_eq!(back, expected, "{name}");
        // Our bytes differ from Go's only in not writing empty non-pointer fields, so they are
        // never longer than Go's.
        assert!(encoded.len() <= bytes.len(), "{name}");
    }
}

#[test]
fn namespace_golden_bytes() {
    let (_, bytes, _) = fixtures().into_iter().next().unwrap();
    // magic, Unknown{typeMeta{v1, Namespace}, raw{metadata{name foo, ...empty Go fields...},
    // spec{}, status{phase ""}}, contentEncoding "", contentType ""}
    let want: &[u8] = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1b\x0a\x13\x0a\x03foo\
        \x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";
    assert_eq!(bytes, want);
    let ns = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "foo"}, "spec": {}, "status": {}
    });
    assert_eq!(skiff_protobuf::decode(want).unwrap(), ns);
    assert_eq!(
        skiff_protobuf::encode(&ns).unwrap(),
        b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x0b\x0a\x05\x0a\x03foo\x12\x00\x1a\x00\x1a\x00\x22\x00"
    );
}
