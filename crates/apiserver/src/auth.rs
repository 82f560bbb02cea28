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
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?
            .trim();
        self.lookup(token)
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
