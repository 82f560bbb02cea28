//! SPDY tunnelled through a WebSocket: since 1.31 `kubectl port-forward` first offers
//! its SPDY session inside a WebSocket (subprotocol `SPDY/3.1+portforward.k8s.io`), each
//! binary message carrying the session's next bytes, and falls back to plain SPDY only
//! when the server refuses. The API server, as upstream's does, unwraps the tunnel and
//! speaks plain SPDY to the kubelet.

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::proxy::ProxyError;

/// The WebSocket subprotocol of a tunnelled port forward.
pub const PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Whether a request is a WebSocket handshake offering the tunnelled port forward.
pub fn requested(headers: &http::HeaderMap) -> bool {
    crate::wsstream::requested(headers)
        && crate::wsstream::offered(headers)
            .iter()
            .any(|p| p == PORT_FORWARD)
}

/// The headers of the plain SPDY upgrade that stands in for the client's WebSocket
/// handshake towards the backend.
pub fn spdy_request_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut spdy: http::HeaderMap = headers
        .iter()
        .filter(|(name, _)| !name.as_str().starts_with("sec-websocket-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    spdy.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(crate::spdy::PROTOCOL),
    );
    spdy.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    spdy.insert(
        "x-stream-protocol-version",
        http::HeaderValue::from_static(crate::portforward::PROTOCOL),
    );
    spdy
}

/// The answer to the client's WebSocket handshake, once the backend has switched to SPDY.
pub fn accept(headers: &http::HeaderMap) -> Result<http::Response<bytes::Bytes>, ProxyError> {
    crate::wsstream::accept(headers, Some(PORT_FORWARD))
}

/// Carries the session between the client's WebSocket and the backend's SPDY connection
/// until either side ends it.
pub async fn bridge(client: hyper::upgrade::Upgraded, backend: hyper::upgrade::Upgraded) {
    let websocket =
        WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
    let (mut to_client, mut from_client) = websocket.split();
    let (mut from_backend, mut to_backend) = tokio::io::split(TokioIo::new(backend));
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(data) if to_backend.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_backend.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_backend.read(&mut buffer).await {
                Ok(n) if n > 0 => {
                    let message = Message::Binary(bytes::Bytes::copy_from_slice(&buffer[..n]));
                    if to_client.send(message).await.is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        // The backend ended the session: a normal closure, which the client reads as
        // the end of its stream.
        let close = CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        let _ = to_client.send(Message::Close(Some(close))).await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
