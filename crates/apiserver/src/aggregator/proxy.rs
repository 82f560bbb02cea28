//! Passing an authorized request to the extension API server behind a remote
//! APIService: the request as it came, less this server's credentials, with the user in
//! the `X-Remote-*` headers and the front-proxy client certificate vouching for them;
//! the answer streamed back as it arrives (watches included).

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::authentication::{GROUP_HEADER, UID_HEADER, USER_HEADER};
use super::{Aggregator, Remote};
use crate::auth::UserInfo;
use crate::status::{ApiError, ApiResult};

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), and those
/// the proxy sets itself.
fn passed_on(name: &HeaderName) -> bool {
    let name = name.as_str();
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            // This server's credentials, and identities only this server may assert.
            | "authorization"
    ) && !name.starts_with("impersonate-")
        && !name.starts_with("x-remote-")
}

/// The headers that tell the extension server who the user is.
fn identity_headers(user: &UserInfo) -> Vec<(String, String)> {
    let mut headers = vec![(USER_HEADER.to_string(), user.name.clone())];
    if !user.uid.is_empty() {
        headers.push((UID_HEADER.to_string(), user.uid.clone()));
    }
    for group in &user.groups {
        headers.push((GROUP_HEADER.to_string(), group.clone()));
    }
    headers
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

/// Sends the request to `remote`'s server and returns its answer.
pub async fn forward(
    aggregator: &Aggregator,
    remote: &Remote,
    user: &UserInfo,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if !remote.available {
        return Err(unavailable("service unavailable"));
    }
    let address = crate::services::resolve_endpoint(
        &aggregator.registry,
        &remote.namespace,
        &remote.service,
        remote.port,
    )
    .map_err(|e| unavailable(format!("service unavailable: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let config = crate::service_client::tls_config(&remote.trust(&aggregator.client_certificate))
        .map_err(ApiError::internal)?;
    let (mut sender, connection) = crate::service_client::connect(&address, &remote.host(), config)
        .await
        .map_err(|e| unavailable(format!("error trying to reach service: {e}")))?;
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, remote.host());
    for (name, value) in headers.iter().filter(|(name, _)| passed_on(name)) {
        request = request.header(name, value);
    }
    for (name, value) in identity_headers(user) {
        let value = HeaderValue::from_str(&value)
            .map_err(|_| ApiError::bad_request(format!("{name} cannot hold {value:?}")))?;
        request = request.header(name, value);
    }
    let request = request
        .body(http_body_util::Full::new(body))
        .map_err(ApiError::internal)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unavailable(format!("error trying to reach service: {e}")))?;
    let (parts, incoming) = response.into_parts();
    let mut answer = Response::builder().status(parts.status);
    for (name, value) in parts.headers.iter().filter(|(name, _)| passed_on(name)) {
        answer = answer.header(name, value);
    }
    answer
        .body(Body::from_stream(crate::service_client::body_stream(
            incoming, connection,
        )))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_user_in_headers_and_drops_credentials() {
        let user = UserInfo {
            name: "jane".into(),
            uid: "42".into(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        };
        let headers = identity_headers(&user);
        assert_eq!(
            headers,
            [
                ("X-Remote-User".to_string(), "jane".to_string()),
                ("X-Remote-Uid".into(), "42".into()),
                ("X-Remote-Group".into(), "dev".into()),
                ("X-Remote-Group".into(), "system:authenticated".into()),
            ]
        );
        for dropped in [
            "authorization",
            "impersonate-user",
            "x-remote-user",
            "connection",
        ] {
            assert!(!passed_on(&HeaderName::from_static(dropped)), "{dropped}");
        }
        assert!(passed_on(&HeaderName::from_static("accept")));
        assert!(passed_on(&HeaderName::from_static("content-type")));
    }
}
