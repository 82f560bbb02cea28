//! The upgrade proxy: passes an HTTP/1.1 upgrade request (a WebSocket handshake) on to a
//! backend over a connection the caller opened, answers the client with the backend's
//! answer, and, on `101 Switching Protocols`, splices the two upgraded connections.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request is not an upgrade request")]
    NotAnUpgrade,
    #[error("backend: {0}")]
    Backend(String),
}

/// Headers that belong to one hop and are not passed on.
const HOP_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "authorization",
];

/// Whether a request asks to switch protocols (`Connection: Upgrade`).
pub fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// How much of a backend's refusal is passed back.
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

/// Sends `request` (with `path_and_query` in place of its own; its body is not sent) to
/// the backend on `connection`, and returns what the client gets back: `101` with the
/// backend's headers (the splice then runs on its own), or the backend's refusal.
pub async fn upgrade<B, S>(
    mut request: http::Request<B>,
    connection: S,
    authority: &str,
    path_and_query: &str,
) -> Result<http::Response<Bytes>, ProxyError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    if !is_upgrade(request.headers()) {
        return Err(ProxyError::NotAnUpgrade);
    }
    let client_side = hyper::upgrade::on(&mut request);
    let (response, backend_side) = handshake(
        request.method(),
        request.headers(),
        connection,
        authority,
        path_and_query,
    )
    .await?;
    if let Some(backend_side) = backend_side {
        splice(client_side, backend_side);
    }
    Ok(response)
}

/// Once both sides have switched protocols, copies bytes between them until either ends.
pub fn splice(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade proxy: a side did not upgrade");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!(error = %e, "upgrade proxy: stream ended");
        }
    });
}

/// Sends an upgrade request with `headers` (less those of one hop) to the backend on
/// `connection`. Returns the backend's answer (`101` with its headers, or its refusal
/// with the start of its body) and, on `101`, the backend's side of the switched
/// connection.
pub async fn handshake<S>(
    method: &http::Method,
    headers: &http::HeaderMap,
    connection: S,
    authority: &str,
    path_and_query: &str,
) -> Result<(http::Response<Bytes>, Option<hyper::upgrade::OnUpgrade>), ProxyError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(connection))
        .await
        .map_err(|e| ProxyError::Backend(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade proxy: backend connection ended");
        }
    });
    let mut outgoing = http::Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .header(http::header::HOST, authority);
    for (name, value) in headers {
        if !HOP_HEADERS.contains(&name.as_str()) {
            outgoing = outgoing.header(name, value);
        }
    }
    let outgoing = outgoing
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ProxyError::Backend(e.to_string()))?;
    let mut answer = sender
        .send_request(outgoing)
        .await
        .map_err(|e| ProxyError::Backend(e.to_string()))?;
    let status = answer.status();
    let mut response = http::Response::builder().status(status);
    for (name, value) in answer.headers() {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        // A refusal (404, 400, …): its body goes back.
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = body.slice(..body.len().min(MAX_REFUSAL_BYTES));
        let response = response
            .body(body)
            .map_err(|e| ProxyError::Backend(e.to_string()))?;
        return Ok((response, None));
    }
    let backend_side = hyper::upgrade::on(&mut answer);
    let response = response
        .body(Bytes::new())
        .map_err(|e| ProxyError::Backend(e.to_string()))?;
    Ok((response, Some(backend_side)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut headers = http::HeaderMap::new();
        assert!(!is_upgrade(&headers));
        headers.insert(
            http::header::CONNECTION,
            "keep-alive, Upgrade".parse().unwrap(),
        );
        assert!(is_upgrade(&headers));
    }
}
