//! Authentication: who sent a request, from its client certificate (user from the CN,
//! groups from O) or its bearer token (from a static token file, upstream's CSV form:
//! `token,user,uid,"group1,group2"`). Anonymous requests reach only the health and
//! version endpoints upstream leaves open; everything else gets `401`.

use std::collections::HashMap;
use std::path::Path;

use http::HeaderMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Who an unauthenticated request is, for the few paths that allow one.
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// Every authenticated user is also in `system:authenticated`, as upstream adds it.
    pub fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo { name, uid, groups }
    }
}

/// The address a request came from (for the audit log's `sourceIPs`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub std::net::SocketAddr);

/// The identity a TLS connection's client certificate proves, if it sent one.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

/// Reads the subject of a verified client certificate.
pub fn identity_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo::authenticated(name, String::new(), groups))
}

#[derive(Debug, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    /// Loads a static token file; each line is `token,user,uid[,"group1,group2"]`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading token file {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut tokens = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                anyhow::bail!(
                    "token file line {}: want token,user,uid[,groups], got {} fields",
                    number + 1,
                    fields.len()
                );
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                fields[0].clone(),
                UserInfo::authenticated(fields[1].clone(), fields[2].clone(), groups),
            );
        }
        Ok(TokenAuthenticator { tokens })
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Option<UserInfo> {
        self.lookup(bearer_token(headers)?)
    }

    /// Adds one token (the node join token, say) for `user`.
    pub fn insert(&mut self, token: String, user: UserInfo) {
        self.tokens.insert(token, user);
    }

    /// The user of one static token.
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }
}

/// The group every bootstrap token's user is in; a token's `auth-extra-groups` may add
/// more, all under this prefix.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Upstream's bootstrap token authenticator: a `<id>.<secret>` token is good while the
/// `kube-system` Secret `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`
/// holds that secret, allows authentication, and has not expired. Its user is
/// `system:bootstrap:<id>`, in `system:bootstrappers` and the token's extra groups.
pub fn bootstrap_token_user(token: &str, cache: &crate::cache::WatchCache) -> Option<UserInfo> {
    use serde_json::Value;
    let parts = skiff_pki::join::BootstrapToken::parse(token)?;
    let secret = cache
        .get(&format!(
            "/registry/secrets/kube-system/bootstrap-token-{}",
            parts.id
        ))?
        .value()
        .ok()?;
    if secret.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
        || crate::object::meta_str(&secret, "deletionTimestamp").is_some()
    {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        use base64::Engine;
        let encoded = secret.get("data")?.get(name)?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    let stored = field("token-secret")?;
    // Compared in constant time: the secret is the credential.
    let matches = stored.len() == parts.secret.len()
        && stored
            .bytes()
            .zip(parts.secret.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0;
    if !matches || field("token-id").as_deref() != Some(parts.id) {
        return None;
    }
    if field("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        match crate::object::parse_time(&expiration) {
            Some(at) if at > jiff::Timestamp::now() => {}
            _ => return None,
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    for group in field("auth-extra-groups").unwrap_or_default().split(',') {
        let group = group.trim();
        // Upstream refuses the token if an extra group leaves the bootstrappers' prefix.
        if group.is_empty() {
            continue;
        }
        if !group.starts_with("system:bootstrappers:") {
            return None;
        }
        groups.push(group.to_string());
    }
    Some(UserInfo::authenticated(
        format!("system:bootstrap:{}", parts.id),
        String::new(),
        groups,
    ))
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields
}

/// Paths anyone may read without credentials (upstream's `system:public-info-viewer`).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" | skiff_pki::join::CA_PATH
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let auth =
            TokenAuthenticator::parse("abc,alice,1,\"dev,ops\"\n# comment\ndef,bob,2\n").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        let alice = auth.authenticate(&headers).unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        headers.insert(http::header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(auth.authenticate(&headers).is_none());
        assert!(TokenAuthenticator::parse("only,two").is_err());
    }

    #[test]
    fn public_paths() {
        assert!(is_public("/readyz"));
        assert!(is_public("/livez/ping"));
        assert!(!is_public("/api"));
    }
}
