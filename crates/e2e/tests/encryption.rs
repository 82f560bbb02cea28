//! Secrets encrypted at rest (`--encryption-provider-config`, upstream's
//! `EncryptionConfiguration`): the datastore's own bytes, in the embedded file and in a
//! real etcd, hold no secret in clear, while kubectl reads them as ever; keys rotate by
//! putting a new key first and rewriting every secret, after which the old key can go.

use std::path::Path;

use base64::Engine;
use skiff_e2e::{skiff_binary, Etcd, Server};

const KEY_ONE: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8=";
const KEY_TWO: &str = "YW5vdGhlciBrZXkgb2YgdGhpcnR5LXR3byBieXRlcyE=";

fn write_config(path: &Path, providers: &str) {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n{providers}"
    );
    std::fs::write(path, text).expect("writing the encryption configuration");
}

fn aescbc_one() -> String {
    format!("  - aescbc:\n      keys:\n      - name: one\n        secret: {KEY_ONE}\n")
}

fn secretbox_two() -> String {
    format!("  - secretbox:\n      keys:\n      - name: two\n        secret: {KEY_TWO}\n")
}

/// Whether `needle` (or its base64, as a secret's data is stored) occurs in `haystack`.
fn holds(haystack: &[u8], needle: &str) -> bool {
    let encoded = base64::engine::general_purpose::STANDARD.encode(needle);
    [needle.as_bytes(), encoded.as_bytes()]
        .iter()
        .any(|n| haystack.windows(n.len()).any(|w| w == *n))
}

fn store_file(server: &Server) -> Vec<u8> {
    std::fs::read(server.data_dir.path().join("db").join("state.redb")).expect("the store file")
}

#[test]
fn secrets_are_encrypted_in_the_store_file_and_keys_rotate() {
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("encryption.yaml");
    write_config(&config, &format!("{}  - identity: {{}}\n", aescbc_one()));
    let mut server = Server::start(&[
        "--encryption-provider-config",
        config.to_str().expect("path"),
    ]);
    let secret_value = format!("hunter2-{}", std::process::id());
    let config_value = format!("plain-config-{}", std::process::id());
    server.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={secret_value}"),
    ]);
    server.ok(&[
        "create",
        "configmap",
        "settings",
        &format!("--from-literal=mode={config_value}"),
    ]);

    let bytes = store_file(&server);
    // The check can see plain data: the ConfigMap (not encrypted) is there in clear.
    assert!(
        holds(&bytes, &config_value),
        "the unencrypted ConfigMap is readable in the file"
    );
    assert!(
        !holds(&bytes, &secret_value),
        "the secret's value is not in the store file"
    );
    assert!(holds(&bytes, "k8s:enc:aescbc:v1:one:"));
    let read = server.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(
        read,
        base64::engine::general_purpose::STANDARD.encode(&secret_value)
    );

    // Rotation: the new key first, the old one still listed to read; rewrite everything.
    write_config(
        &config,
        &format!("{}{}  - identity: {{}}\n", secretbox_two(), aescbc_one()),
    );
    server.restart();
    let all = server.ok(&["get", "secrets", "-A", "-o", "json"]);
    server.ok_with_input(&["replace", "-f", "-"], &all);
    assert!(holds(&store_file(&server), "k8s:enc:secretbox:v1:two:"));

    // The old key (and plain reads) gone: every secret still reads, so each was rewritten.
    write_config(&config, &secretbox_two());
    server.restart();
    let read = server.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(
        read,
        base64::engine::general_purpose::STANDARD.encode(&secret_value)
    );
    let listed = server.ok(&["get", "secrets", "-A", "-o", "name"]);
    assert!(listed.contains("secret/db"), "{listed}");

    // A server without the key does not start on data it cannot read, and says why.
    server.kill9();
    write_config(
        &config,
        &format!("  - aescbc:\n      keys:\n      - name: other\n        secret: {KEY_ONE}\n"),
    );
    let refused = std::process::Command::new("timeout")
        .arg("30")
        .arg(skiff_binary())
        .args(["apiserver", "--data-dir"])
        .arg(server.data_dir.path())
        .args(["--https-port", &skiff_e2e::free_port().to_string()])
        .arg("--encryption-provider-config")
        .arg(&config)
        .output()
        .expect("skiff apiserver");
    assert!(!refused.status.success(), "the server must not start");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("no secretbox key named \"two\" is configured to read this value"),
        "{said}"
    );
}

#[test]
fn secrets_are_encrypted_in_etcd() {
    let etcd = Etcd::start();
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("encryption.yaml");
    write_config(
        &config,
        &format!("  - aesgcm:\n      keys:\n      - name: gcm\n        secret: {KEY_ONE}\n"),
    );
    let server = Server::start(&[
        "--datastore",
        "etcd",
        "--etcd-endpoints",
        &etcd.endpoint,
        "--encryption-provider-config",
        config.to_str().expect("path"),
    ]);
    let secret_value = format!("etcd-hunter2-{}", std::process::id());
    server.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={secret_value}"),
    ]);
    let out = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &etcd.endpoint,
            "get",
            "/registry/secrets/default/db",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl (apt-get install etcd-client)");
    assert!(out.status.success());
    assert!(
        out.stdout
            .starts_with(b"/registry/secrets/default/db\nk8s:enc:aesgcm:v1:gcm:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!holds(&out.stdout, &secret_value));
    let read = server.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(
        read,
        base64::engine::general_purpose::STANDARD.encode(&secret_value)
    );
}
