//! Warnings for the client, as upstream's warning recorder returns them: whatever a
//! request's path records (admission, mostly) goes back as `Warning: 299 - "text"`
//! headers, each text once, which kubectl prints as `Warning: text`. A second request
//! scope ([`acting_as`]) tells admission who asks (upstream's admission attributes carry
//! the user; Skiff's registry calls do not): the user after impersonation.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

tokio::task_local! {
    static RECORDED: Arc<Mutex<Vec<String>>>;
    static USER: crate::auth::UserInfo;
}

/// The name of the current request's user, if any.
pub fn user() -> Option<String> {
    USER.try_with(|u| u.name.clone()).ok()
}

/// The current request's user, if any (none for the server's own writes).
pub fn user_info() -> Option<crate::auth::UserInfo> {
    USER.try_with(Clone::clone).ok()
}

/// Runs `work` as a request of `user`.
pub async fn acting_as<F: std::future::Future>(user: crate::auth::UserInfo, work: F) -> F::Output {
    USER.scope(user, work).await
}

/// Records a warning for the current request (nothing happens outside one).
pub fn add(text: impl Into<String>) {
    let text = text.into();
    let _ = RECORDED.try_with(|recorded| {
        if let Ok(mut recorded) = recorded.lock() {
            if !recorded.contains(&text) {
                recorded.push(text);
            }
        }
    });
}

/// Middleware: runs the request with a warning recorder and adds what it recorded to
/// the response's headers.
pub async fn record(request: Request, next: Next) -> Response {
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let mut response = RECORDED.scope(recorded.clone(), next.run(request)).await;
    let texts = recorded.lock().map(|r| r.clone()).unwrap_or_default();
    for text in texts {
        if let Some(value) = header(&text) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    response
}

/// RFC 7234's form with upstream's code and agent: `299 - "text"`, quotes and
/// backslashes escaped.
fn header(text: &str) -> Option<HeaderValue> {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    // Header values may not hold control characters.
    let cleaned: String = escaped
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::from_str(&format!("299 - \"{cleaned}\"")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_escape_quotes() {
        let value =
            header(r#"would violate PodSecurity "baseline:latest": privileged (container "c")"#)
                .unwrap();
        assert_eq!(
            value.to_str().unwrap(),
            r#"299 - "would violate PodSecurity \"baseline:latest\": privileged (container \"c\")""#
        );
    }

    #[tokio::test]
    async fn warnings_are_kept_once_per_request_only() {
        add("outside any request");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        RECORDED
            .scope(recorded.clone(), async {
                add("a");
                add("b");
                add("a");
            })
            .await;
        assert_eq!(*recorded.lock().unwrap(), ["a", "b"]);
    }
}
