//! Registry credentials from a pod's `imagePullSecrets`, found for an image as
//! upstream's kubelet finds them (`pkg/credentialprovider`): each `auths` entry of a
//! `kubernetes.io/dockerconfigjson` secret (or each entry of a legacy
//! `kubernetes.io/dockercfg` one) is keyed by its registry host and optional path,
//! where a host part may be a glob (`*.example.com`); an image takes the credentials
//! of every key that matches it, the most specific first, and Docker Hub's
//! (`https://index.docker.io/v1/`) when none does and the image is on Docker Hub.
//! The pull then tries each credential in turn ([`crate::cri::Cri::pull_image`]).

use std::collections::HashMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value};
use skiff_runtime::proto;

/// The key under which a Docker Hub credential is found, whatever URL the secret
/// gave it (`https://index.docker.io/v1/` is what `kubectl create secret
/// docker-registry` writes by default).
const DOCKER_HUB: &str = "index.docker.io";

/// One registry login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub email: String,
}

impl Credential {
    /// What the CRI's `PullImageRequest.auth` carries of it.
    pub fn to_cri(&self) -> proto::AuthConfig {
        proto::AuthConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            ..Default::default()
        }
    }
}

/// Why a pull secret could not be read; the pull fails with it, as upstream's does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("secret {secret}: {reason}")]
    Malformed { secret: String, reason: String },
}

/// Credentials by registry key (`host[:port][/path]`, the host possibly globbed).
#[derive(Debug, Default)]
pub struct Keyring {
    /// The keys in reverse order, so that `quay.io/team` comes before `quay.io`.
    index: Vec<String>,
    creds: HashMap<String, Vec<Credential>>,
}

impl Keyring {
    /// The keyring of a pod's pull secrets, in the pod's order. Secrets of other
    /// types, or without their key, give nothing.
    pub fn from_secrets(secrets: &[Secret]) -> Result<Keyring, KeyringError> {
        let mut keyring = Keyring::default();
        for secret in secrets {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let data = |key: &str| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.as_slice())
                    .filter(|b| !b.is_empty())
            };
            let entries = match (
                secret.type_.as_deref(),
                data(".dockerconfigjson"),
                data(".dockercfg"),
            ) {
                (Some("kubernetes.io/dockerconfigjson"), Some(json), _) => parse_config_json(json),
                (Some("kubernetes.io/dockercfg"), _, Some(cfg)) => parse_dockercfg(cfg),
                _ => continue,
            };
            let entries = entries.map_err(|reason| KeyringError::Malformed {
                secret: name,
                reason,
            })?;
            keyring.add(entries);
        }
        Ok(keyring)
    }

    /// Adds entries keyed as a docker config keys them: a URL with or without a
    /// scheme, whose `/v1/` or `/v2/` path means the registry itself.
    pub fn add(&mut self, entries: Vec<(String, Credential)>) {
        for (location, credential) in entries {
            let url = if location.starts_with("https://") || location.starts_with("http://") {
                location
            } else {
                format!("https://{location}")
            };
            let (host, path) = split_url(&url);
            let path = if path.starts_with("/v1/") || path.starts_with("/v2/") {
                &path[3..]
            } else {
                path
            };
            let key = if path.is_empty() || path == "/" {
                host.to_string()
            } else {
                format!("{host}{path}")
            };
            self.creds.entry(key).or_default().push(credential);
        }
        self.index = self.creds.keys().cloned().collect();
        self.index.sort_by(|a, b| b.cmp(a));
    }

    /// The credentials for `repository` (an image's `registry/repository`, as
    /// [`repository_to_pull`] gives it), the most specific keys' first.
    pub fn lookup(&self, repository: &str) -> Vec<Credential> {
        let found: Vec<Credential> = self
            .index
            .iter()
            .filter(|key| urls_match(key, repository))
            .flat_map(|key| self.creds[key].iter().cloned())
            .collect();
        if !found.is_empty() || !is_docker_hub(repository) {
            return found;
        }
        self.creds.get(DOCKER_HUB).cloned().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }
}

/// The part of an image reference credentials are matched against:
/// `registry/repository`, normalised (`busybox` is `docker.io/library/busybox`).
pub fn repository_to_pull(image: &str) -> Option<String> {
    skiff_runtime::reference::Reference::parse(image)
        .ok()
        .map(|r| r.name())
}

/// Whether `image` lives on Docker Hub judging by its name alone: no registry host
/// (a first part without `.` or `:`), or one of Docker Hub's names.
fn is_docker_hub(image: &str) -> bool {
    let Some((first, _)) = image.split_once('/') else {
        return !image.is_empty();
    };
    !first.is_empty()
        && (first == "docker.io" || first == DOCKER_HUB || !first.contains(['.', ':']))
}

/// A `.dockerconfigjson`: `{"auths": {<location>: <entry>}}`.
pub fn parse_config_json(bytes: &[u8]) -> Result<Vec<(String, Credential)>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let object = value
        .as_object()
        .ok_or("a docker config must be a JSON object")?;
    match field(object, "auths") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(auths) => parse_entries(auths),
    }
}

/// A legacy `.dockercfg`: `{<location>: <entry>}`.
pub fn parse_dockercfg(bytes: &[u8]) -> Result<Vec<(String, Credential)>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    parse_entries(&value)
}

fn parse_entries(value: &Value) -> Result<Vec<(String, Credential)>, String> {
    let entries = value
        .as_object()
        .ok_or("the registry entries must be a JSON object")?;
    entries
        .iter()
        .map(|(location, entry)| Ok((location.clone(), parse_entry(location, entry)?)))
        .collect()
}

/// One entry: `username` and `password`, or `auth` (base64 of `user:password`),
/// which wins when present.
fn parse_entry(location: &str, entry: &Value) -> Result<Credential, String> {
    let object = entry
        .as_object()
        .ok_or_else(|| format!("the entry for {location:?} must be a JSON object"))?;
    let text = |key: &str| -> Result<String, String> {
        match field(object, key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!(
                "{key} of the entry for {location:?} must be a string"
            )),
        }
    };
    let mut credential = Credential {
        username: text("username")?,
        password: text("password")?,
        email: text("email")?,
    };
    let auth = text("auth")?;
    if !auth.is_empty() {
        (credential.username, credential.password) = decode_auth(&auth)?;
    }
    Ok(credential)
}

/// A field by name as Go's JSON decoding finds it: an exact match, else one that
/// differs only in case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// `base64(user:password)`, padded or not.
fn decode_auth(field: &str) -> Result<(String, String), String> {
    let engine = if field.trim_end().ends_with('=') {
        &base64::engine::general_purpose::STANDARD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    let decoded = engine.decode(field).map_err(|e| match e {
        base64::DecodeError::InvalidByte(at, _) => {
            format!("illegal base64 data at input byte {at}")
        }
        other => format!("illegal base64 data: {other}"),
    })?;
    let decoded = String::from_utf8_lossy(&decoded);
    let (user, password) = decoded
        .split_once(':')
        .ok_or("unable to parse auth field, must be formatted as base64(username:password)")?;
    Ok((user.to_string(), password.to_string()))
}

/// A URL's host (with port) and path, the scheme, if any, dropped.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// A host's dot-separated parts and its port (empty without one).
fn host_parts(host: &str) -> (Vec<&str>, &str) {
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        match bracketed.split_once("]:") {
            Some((name, port)) => (name, port),
            None => (host, ""),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if !port.contains(':') => (name, port),
            _ => (host, ""),
        }
    };
    (name.split('.').collect(), port)
}

/// Whether the registry key `glob` covers `target` (both without scheme), as
/// upstream's `URLsMatch`: the same port, as many host parts, each matching its glob,
/// and the key's path a prefix of the target's (as strings, not path segments).
pub fn urls_match(glob: &str, target: &str) -> bool {
    let (glob_host, glob_path) = split_url(glob);
    let (target_host, target_path) = split_url(target);
    let (glob_parts, glob_port) = host_parts(glob_host);
    let (target_parts, target_port) = host_parts(target_host);
    glob_port == target_port
        && glob_parts.len() == target_parts.len()
        && target_path.starts_with(glob_path)
        && glob_parts
            .iter()
            .zip(&target_parts)
            .all(|(g, t)| glob_match(g, t) == Some(true))
}

/// Shell-style matching of one name (`*`, `?`, `[a-z]`, `[^…]`, `\` escapes), as Go's
/// `filepath.Match` on a name without separators; `None` for a malformed pattern.
fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_from(&p, &n)
}

fn glob_from(p: &[char], n: &[char]) -> Option<bool> {
    match p.first() {
        None => Some(n.is_empty()),
        Some('*') => {
            let rest = &p[1..];
            let mut matched = false;
            for skip in 0..=n.len() {
                if glob_from(rest, &n[skip..])? {
                    matched = true;
                    break;
                }
            }
            Some(matched)
        }
        Some('?') => match n.split_first() {
            Some((_, n)) => glob_from(&p[1..], n),
            None => Some(false),
        },
        Some('[') => {
            let (class_len, hit) = match n.first() {
                Some(c) => char_class(&p[1..], *c)?,
                None => {
                    char_class(&p[1..], '\0')?;
                    return Some(false);
                }
            };
            if hit {
                glob_from(&p[1 + class_len..], &n[1..])
            } else {
                Some(false)
            }
        }
        Some('\\') => {
            let literal = p.get(1)?;
            match n.split_first() {
                Some((c, n)) if c == literal => glob_from(&p[2..], n),
                _ => Some(false),
            }
        }
        Some(literal) => match n.split_first() {
            Some((c, n)) if c == literal => glob_from(&p[1..], n),
            _ => Some(false),
        },
    }
}

/// A `[…]` class after its `[`: how many pattern characters it takes (to its `]`)
/// and whether `c` is in it; `None` when it never closes, is empty, or holds an
/// unescaped `-` or `]` where a character belongs (Go's `ErrBadPattern`).
fn char_class(p: &[char], c: char) -> Option<(usize, bool)> {
    // One character of the class, unescaped; where the next one starts.
    let escaped = |i: usize| -> Option<(char, usize)> {
        match *p.get(i)? {
            '-' | ']' => None,
            '\\' => Some((*p.get(i + 1)?, i + 2)),
            ch => Some((ch, i + 1)),
        }
    };
    let negated = p.first() == Some(&'^');
    let mut i = usize::from(negated);
    let mut hit = false;
    let mut ranges = 0;
    loop {
        if p.get(i)? == &']' && ranges > 0 {
            break;
        }
        let (lo, next) = escaped(i)?;
        i = next;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            (hi, i) = escaped(i + 1)?;
            if lo > hi {
                return None;
            }
        }
        hit |= lo <= c && c <= hi;
        ranges += 1;
    }
    Some((i + 1, hit != negated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn auth(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }

    fn keyring_with(location: &str) -> Keyring {
        let cfg = json!({location: {"email": "foo@bar.baz", "auth": auth("foo", "bar")}});
        let mut keyring = Keyring::default();
        keyring.add(parse_dockercfg(cfg.to_string().as_bytes()).expect("parse"));
        keyring
    }

    use serde_json::json;

    /// Upstream's `TestURLsMatch` cases.
    #[test]
    fn urls_match_as_upstream() {
        let cases = [
            ("*.kubernetes.io", "prefix.kubernetes.io", true),
            ("prefix.*.io", "prefix.kubernetes.io", true),
            ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
            ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
            ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
            (
                "*.kubernetes.io:1111/blah",
                "prefix.kubernetes.io:1111/blah",
                true,
            ),
            (
                "prefix.*.io:1111/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                true,
            ),
            ("*.kubernetes.io", "kubernetes.io", false),
            ("*.*.kubernetes.io", "prefix.kubernetes.io", false),
            ("*.*.kubernetes.io", "kubernetes.io", false),
            ("kubernetes.io", "kubernetes.com", false),
            ("k*.io", "quay.io", false),
            (
                "*.kubernetes.io:1234/blah",
                "prefix.kubernetes.io:1111/blah",
                false,
            ),
            (
                "prefix.*.io/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                false,
            ),
            // The path is a string prefix, not a segment prefix.
            ("registry.io/team", "registry.io/teamwork/app", true),
            ("127.0.0.1:5000", "127.0.0.1:5000/library/busybox", true),
            ("127.0.0.1", "127.0.0.1:5000/library/busybox", false),
            // A malformed glob matches nothing.
            ("[z-a].io", "b.io", false),
            ("[ab.io", "a.io", false),
            ("[a-c].io", "b.io", true),
            ("[^a-c].io", "b.io", false),
            // `?` starts a URL's query, so it never globs a host.
            ("?.io", "b.io", false),
            ("[]].io", "].io", false),
            ("[\\]].io", "].io", true),
        ];
        for (glob, target, expected) in cases {
            assert_eq!(urls_match(glob, target), expected, "{glob} vs {target}");
        }
    }

    /// Upstream's `TestDockerKeyringForGlob`: each entry is found for an image under it.
    #[test]
    fn keyring_finds_globbed_entries() {
        let cases = [
            ("https://hello.kubernetes.io", "hello.kubernetes.io"),
            ("https://*.docker.io", "prefix.docker.io"),
            ("https://prefix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.*", "prefix.docker.io"),
            ("https://*.docker.io/path", "prefix.docker.io/path"),
            ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
            ("https://prefix.docker.*/path", "prefix.docker.io/path"),
            ("https://*.docker.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
            (
                "https://*.docker.io/path:1111",
                "prefix.docker.io/path:1111",
            ),
            ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
            ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
            (
                "https://prefix.docker.*/path:1111",
                "prefix.docker.io/path:1111",
            ),
            ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
            ("*.docker.io:1111", "prefix.docker.io:1111/path"),
        ];
        for (location, target) in cases {
            let found = keyring_with(location).lookup(&format!("{target}/foo/bar"));
            assert_eq!(
                found,
                vec![Credential {
                    username: "foo".into(),
                    password: "bar".into(),
                    email: "foo@bar.baz".into()
                }],
                "{location} for {target}"
            );
        }
    }

    /// Upstream's `TestKeyringMiss` and its Docker Hub cases.
    #[test]
    fn keyring_misses_and_docker_hub() {
        let misses = [
            ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
            ("https://*.docker.com", "prefix.docker.io"),
            ("https://suffix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.c*", "prefix.docker.io"),
            (
                "https://prefix.*.io/path:1111",
                "prefix.docker.io/path/subpath:1111",
            ),
            ("suffix.*.io", "prefix.docker.io"),
        ];
        for (location, target) in misses {
            let found = keyring_with(location).lookup(&format!("{target}/foo/bar"));
            assert!(found.is_empty(), "{location} for {target}: {found:?}");
        }
        let hub = keyring_with("https://index.docker.io/v1/");
        assert!(hub.lookup("world.mesos.org/foo/bar").is_empty());
        for image in [
            "google/docker-registry",
            "jenkins",
            "docker.io/library/busybox",
            "index.docker.io/v1//google/docker-registry",
        ] {
            assert_eq!(hub.lookup(image).len(), 1, "{image}");
        }
        // What the kubelet looks up for `busybox`.
        assert_eq!(
            repository_to_pull("busybox").as_deref(),
            Some("docker.io/library/busybox")
        );
        assert_eq!(
            repository_to_pull("127.0.0.1:5000/team/app:v1@sha256:abc").as_deref(),
            Some("127.0.0.1:5000/team/app")
        );
    }

    /// Upstream's `TestIsDefaultRegistryMatch`.
    #[test]
    fn docker_hub_by_name() {
        for (image, expected) in [
            ("foo/bar", true),
            ("docker.io/foo/bar", true),
            ("index.docker.io/foo/bar", true),
            ("foo", true),
            ("", false),
            ("registry.tld/foo/bar", false),
            ("registry:5000/foo/bar", false),
            ("myhostdocker.io/foo/bar", false),
        ] {
            assert_eq!(is_docker_hub(image), expected, "{image:?}");
        }
    }

    #[test]
    fn more_specific_keys_come_first() {
        let mut keyring = Keyring::default();
        let cred = |user: &str| Credential {
            username: user.into(),
            ..Default::default()
        };
        keyring.add(vec![
            ("quay.io".into(), cred("host")),
            ("quay.io/coreos".into(), cred("path")),
            ("*.io".into(), cred("glob")),
        ]);
        let users: Vec<String> = keyring
            .lookup("quay.io/coreos/etcd")
            .into_iter()
            .map(|c| c.username)
            .collect();
        assert_eq!(users, ["path", "host", "glob"]);
    }

    fn secret(name: &str, type_: &str, key: &str, data: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some([(key.to_string(), ByteString(data.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_of_both_kinds_and_both_forms() {
        let json = json!({"auths": {
            "registry.example:5000": {"username": "u1", "password": "p1"},
            "https://index.docker.io/v1/": {"auth": auth("hub", "p:w")},
        }});
        let legacy = json!({"legacy.example": {"auth": auth("u2", "p2").trim_end_matches('='), "email": "e"}});
        let keyring = Keyring::from_secrets(&[
            secret(
                "a",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                &json.to_string(),
            ),
            secret(
                "b",
                "kubernetes.io/dockercfg",
                ".dockercfg",
                &legacy.to_string(),
            ),
            // Not a pull secret: left out, whatever it holds.
            secret("c", "Opaque", ".dockerconfigjson", "not json"),
            // The key of the other type: left out.
            secret(
                "d",
                "kubernetes.io/dockercfg",
                ".dockerconfigjson",
                &json.to_string(),
            ),
        ])
        .expect("keyring");
        let user = |image: &str| {
            keyring
                .lookup(&repository_to_pull(image).expect("image"))
                .into_iter()
                .map(|c| format!("{}:{}", c.username, c.password))
                .collect::<Vec<_>>()
        };
        assert_eq!(user("registry.example:5000/app:v1"), ["u1:p1"]);
        assert_eq!(user("busybox"), ["hub:p:w"]);
        assert_eq!(user("legacy.example/x"), ["u2:p2"]);
        assert!(user("other.example/x").is_empty());
    }

    #[test]
    fn malformed_secrets_fail_with_the_reason() {
        let bad = |data: &str| {
            Keyring::from_secrets(&[secret(
                "pull",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                data,
            )])
            .expect_err(data)
            .to_string()
        };
        assert!(
            bad("{").starts_with("secret pull: EOF while parsing"),
            "{}",
            bad("{")
        );
        assert_eq!(
            bad(r#"{"auths": {"r.io": {"auth": "!!"}}}"#),
            "secret pull: illegal base64 data at input byte 0"
        );
        let no_colon = json!({"auths": {"r.io": {"auth": base64::engine::general_purpose::STANDARD.encode("user")}}});
        assert_eq!(
            bad(&no_colon.to_string()),
            "secret pull: unable to parse auth field, must be formatted as base64(username:password)"
        );
        // Go decodes field names in any case; an empty config is no credential.
        let entries =
            parse_config_json(br#"{"Auths": {"r.io": {"Username": "u", "Password": "p"}}}"#)
                .expect("parse");
        assert_eq!(entries[0].1.username, "u");
        assert!(parse_config_json(b"{}").expect("parse").is_empty());
    }
}
