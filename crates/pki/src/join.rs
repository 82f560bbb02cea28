//! Joining a node to a cluster with one token, as k3s does: the server writes
//! `DATA_DIR/node-token`, `K10<sha256 of the cluster CA, hex>::<id>.<secret>`. An agent
//! given the server's URL and that token fetches the CA from the server's public
//! `/cacerts` without trusting anything yet, keeps it only if its hash is the token's,
//! and from then on talks TLS verified against it.
//!
//! The part after `::` is a bootstrap token (upstream's `<6 chars>.<16 chars>` form, kept
//! as a `bootstrap-token-<id>` Secret in `kube-system`): it authenticates the agent as
//! `system:bootstrap:<id>`, which may do one thing, ask for certificates through
//! `CertificateSigningRequest`s. The node's components then act with the identities
//! those certificates give them, as kubelet TLS bootstrapping does upstream.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{PkiError as Error, Result};

/// Where the server keeps its join token, in its data dir.
pub const NODE_TOKEN_FILE: &str = "node-token";
/// The public path the CA is served on.
pub const CA_PATH: &str = "/cacerts";

/// The hex SHA-256 of the CA bundle, as the token carries it.
pub fn ca_hash(ca_pem: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server's join token: read from `data_dir`, or made (random bootstrap token) and
/// written there readable by its owner only.
pub fn node_token(data_dir: &Path, ca_pem: &str) -> Result<String> {
    let path = data_dir.join(NODE_TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        match parse_token(&token) {
            Some((hash, _)) if hash == ca_hash(ca_pem) => return Ok(token),
            Some(_) => {
                tracing::warn!(path = %path.display(), "node token names another CA: making a new one")
            }
            None => {
                tracing::warn!(path = %path.display(), "node token of an older form: making a new one")
            }
        }
    }
    let bootstrap = format!("{}.{}", random_token_text(6)?, random_token_text(16)?);
    let token = format!("K10{}::{bootstrap}", ca_hash(ca_pem));
    crate::write_private_file(&path, token.as_bytes())?;
    Ok(token)
}

/// `(CA hash, bootstrap token)` of a token in the `K10<hash>::<id>.<secret>` form.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (hash, bootstrap) = token.strip_prefix("K10")?.split_once("::")?;
    (hash.len() == 64 && BootstrapToken::parse(bootstrap).is_some()).then_some((hash, bootstrap))
}

/// Upstream's bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`, an id and a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapToken<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl<'a> BootstrapToken<'a> {
    pub fn parse(token: &'a str) -> Option<Self> {
        let (id, secret) = token.split_once('.')?;
        let valid = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (valid(id, 6) && valid(secret, 16)).then_some(BootstrapToken { id, secret })
    }
}

/// `len` random characters of `[a-z0-9]`.
fn random_token_text(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Join("no randomness for the node token".into()))?;
    // 252 is the largest multiple of 36 below 256: the rest are drawn again, so that
    // every character is equally likely.
    let mut text = String::with_capacity(len);
    for mut byte in bytes {
        while byte >= 252 {
            let mut one = [0u8; 1];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut one)
                .map_err(|_| Error::Join("no randomness for the node token".into()))?;
            byte = one[0];
        }
        text.push(ALPHABET[(byte % 36) as usize] as char);
    }
    Ok(text)
}

/// Fetches the cluster CA from `server` (`https://host:port`) and returns it if its hash
/// is the token's. The TLS connection is not verified — nothing is trusted yet — which is
/// why the answer is checked against the token before anything else is sent.
pub async fn fetch_ca(server: &str, token: &str) -> Result<String> {
    let (want, _) = parse_token(token).ok_or_else(|| {
        Error::Join("the token is not a node token (K10<CA hash>::<id>.<secret>, from the server's DATA_DIR/node-token)".into())
    })?;
    let authority = server
        .strip_prefix("https://")
        .ok_or_else(|| Error::Join(format!("the server URL {server:?} is not https://")))?
        .trim_end_matches('/');
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Join(format!("{what} {server}: {e}"));
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(crate::insecure::AnyServerCertificate::new())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| fail("connecting to", &e))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail("naming", &e))?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| fail("TLS with", &e))?;
    let request = format!("GET {CA_PATH} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| fail("asking", &e))?;
    let mut answer = Vec::new();
    // A server that closes without TLS close_notify still sent the whole answer.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Join(format!("no answer for {CA_PATH} from {server}")))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(Error::Join(format!("{server}{CA_PATH} answered {status}")));
    }
    if ca_hash(body) != want {
        return Err(Error::Join(format!(
            "the CA {server} serves is not the one the token names: wrong token or wrong server"
        )));
    }
    Ok(body.to_string())
}

/// A kubeconfig for `server`, trusting `ca_pem`, authenticating with `token`.
pub fn token_kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: skiff\ncontexts:\n- context:\n    cluster: skiff\n    user: agent\n  name: skiff\ncurrent-context: skiff\npreferences: {{}}\nusers:\n- name: agent\n  user:\n    token: {token}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_ca_and_survive_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = node_token(dir.path(), "CA ONE").expect("token");
        let (hash, bootstrap) = parse_token(&token).expect("parses");
        assert_eq!(hash, ca_hash("CA ONE"));
        let parts = BootstrapToken::parse(bootstrap).expect("a bootstrap token");
        assert_eq!((parts.id.len(), parts.secret.len()), (6, 16));
        assert_eq!(node_token(dir.path(), "CA ONE").expect("again"), token);
        // A new CA (a new cluster in the same dir) gets a new token.
        let other = node_token(dir.path(), "CA TWO").expect("token");
        assert_ne!(other, token);
        assert!(parse_token("not-a-token").is_none());
        assert!(
            parse_token("K10abc::abcdef.0123456789abcdef").is_none(),
            "hash too short"
        );
        let old_form = format!("K10{}::node:{}", ca_hash("CA ONE"), "ab".repeat(24));
        assert!(parse_token(&old_form).is_none());
        std::fs::write(dir.path().join(NODE_TOKEN_FILE), &old_form).expect("write");
        assert!(parse_token(&node_token(dir.path(), "CA ONE").expect("remade")).is_some());
        assert!(BootstrapToken::parse("ABCDEF.0123456789abcdef").is_none());
        assert!(BootstrapToken::parse("abcdef.0123456789abcde").is_none());
    }
}
