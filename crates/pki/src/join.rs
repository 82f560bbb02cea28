//! Joining a node to a cluster with one token, as k3s does: the server writes
//! `DATA_DIR/node-token`, `K10<sha256 of the cluster CA, hex>::node:<secret>`. An agent
//! given the server's URL and that token fetches the CA from the server's public
//! `/cacerts` without trusting anything yet, keeps it only if its hash is the token's,
//! and from then on talks TLS verified against it, authenticated by the token.
//!
//! The token is a bearer token of the server's: whoever holds it is an agent. For now
//! agents act with full rights (as the admin kubeconfig does); per-node identities and
//! the Node authorizer replace that (see the authentication issue).

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

/// The server's join token: read from `data_dir`, or made (random secret) and written
/// there readable by its owner only.
pub fn node_token(data_dir: &Path, ca_pem: &str) -> Result<String> {
    let path = data_dir.join(NODE_TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if parse_token(&token).is_some_and(|(hash, _)| hash == ca_hash(ca_pem)) {
            return Ok(token);
        }
        tracing::warn!(path = %path.display(), "node token names another CA: making a new one");
    }
    let mut secret = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| Error::Join("no randomness for the node token".into()))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("K10{}::node:{secret}", ca_hash(ca_pem));
    crate::write_private_file(&path, token.as_bytes())?;
    Ok(token)
}

/// `(CA hash, secret)` of a token in the `K10<hash>::node:<secret>` form.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (hash, credentials) = token.strip_prefix("K10")?.split_once("::")?;
    let (_, secret) = credentials.split_once(':')?;
    (hash.len() == 64 && !secret.is_empty()).then_some((hash, secret))
}

/// Fetches the cluster CA from `server` (`https://host:port`) and returns it if its hash
/// is the token's. The TLS connection is not verified — nothing is trusted yet — which is
/// why the answer is checked against the token before anything else is sent.
pub async fn fetch_ca(server: &str, token: &str) -> Result<String> {
    let (want, _) = parse_token(token).ok_or_else(|| {
        Error::Join("the token is not a node token (K10<CA hash>::node:<secret>)".into())
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
        let (hash, secret) = parse_token(&token).expect("parses");
        assert_eq!(hash, ca_hash("CA ONE"));
        assert_eq!(secret.len(), 48);
        assert_eq!(node_token(dir.path(), "CA ONE").expect("again"), token);
        // A new CA (a new cluster in the same dir) gets a new token.
        let other = node_token(dir.path(), "CA TWO").expect("token");
        assert_ne!(other, token);
        assert!(parse_token("not-a-token").is_none());
        assert!(parse_token("K10abc::node:x").is_none(), "hash too short");
    }
}
