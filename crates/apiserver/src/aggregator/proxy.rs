//! Passing an authorized request to the extension API server behind a remote
//! APIService: the request as it came, less this server's credentials, with the user in
//! the `X-Remote-*` headers and the front-proxy client certificate vouching for them;
//! the answer streamed back as it arrives (watches included).

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

use super::authentication::{GROUP_HEADER, UID_HEADER, USER_HEADER};
use super::{Aggregator, Remote};
use crate::auth::UserInfo;
use crate::status::{ApiError, ApiResult};

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
    let (sender, connection) = crate::service_client::connect(&address, &remote.host(), config)
        .await
        .map_err(|e| unavailable(format!("error trying to reach service: {e}")))?;
    let request = crate::service_client::Relayed {
        method,
        target: path,
        host: &remote.host(),
        headers,
        extra: identity_headers(user),
        body,
        // An extension API server's answers are the API's own, not pages to rewrite.
        links: None,
    };
    crate::service_client::relay(sender, connection, request)
        .await
        .map_err(|e| unavailable(format!("error trying to reach service: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

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
            assert!(
                !crate::service_client::passed_on(&HeaderName::from_static(dropped)),
                "{dropped}"
            );
        }
        for kept in ["accept", "content-type"] {
            assert!(crate::service_client::passed_on(&HeaderName::from_static(
                kept
            )));
        }
    }
}
