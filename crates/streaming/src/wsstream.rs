//! A byte stream sent to a client over a WebSocket, as upstream's API server serves
//! `pods/log` to a WebSocket handshake: each chunk one message, raw under the
//! `binary.k8s.io` subprotocol (or none), base64 text under `base64.binary.k8s.io`,
//! and a normal closure at the end.

use base64::Engine;
use futures::{SinkExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::proxy::ProxyError;

/// How chunks travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    Base64,
}

/// Whether a request is a WebSocket handshake.
pub fn requested(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The subprotocols the client offers, in its order.
pub fn offered(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The subprotocol to answer with and the encoding it means: the first one offered
/// that upstream's stream server knows, else none and raw bytes.
pub fn negotiate(headers: &http::HeaderMap) -> (Option<&'static str>, Encoding) {
    for protocol in offered(headers) {
        match protocol.as_str() {
            "binary.k8s.io" => return (Some("binary.k8s.io"), Encoding::Binary),
            "base64.binary.k8s.io" => return (Some("base64.binary.k8s.io"), Encoding::Base64),
            _ => {}
        }
    }
    (None, Encoding::Binary)
}

/// The `101 Switching Protocols` answering the client's handshake, naming `protocol`.
pub fn accept(
    headers: &http::HeaderMap,
    protocol: Option<&str>,
) -> Result<http::Response<bytes::Bytes>, ProxyError> {
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ProxyError::Backend("WebSocket handshake without a key".into()))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        response = response.header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
        .body(bytes::Bytes::new())
        .map_err(|e| ProxyError::Backend(e.to_string()))
}

/// Sends `chunks` to the upgraded client until they end, it goes away or a chunk fails.
pub async fn send<E>(
    client: hyper::upgrade::Upgraded,
    chunks: impl Stream<Item = Result<bytes::Bytes, E>>,
    encoding: Encoding,
) {
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
    let mut chunks = std::pin::pin!(chunks);
    while let Some(Ok(chunk)) = chunks.next().await {
        let message = match encoding {
            Encoding::Binary => Message::Binary(chunk),
            Encoding::Base64 => Message::Text(
                base64::engine::general_purpose::STANDARD
                    .encode(&chunk)
                    .into(),
            ),
        };
        if socket.send(message).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_known_protocol_wins() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(
                "v4.channel.k8s.io, base64.binary.k8s.io, binary.k8s.io",
            ),
        );
        assert_eq!(
            negotiate(&headers),
            (Some("base64.binary.k8s.io"), Encoding::Base64)
        );
        assert_eq!(negotiate(&http::HeaderMap::new()), (None, Encoding::Binary));
    }
}
