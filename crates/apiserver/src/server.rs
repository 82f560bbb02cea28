//! The HTTPS listener: TLS with optional client certificates, HTTP/1.1 and HTTP/2 on one
//! port, authentication in front of every handler.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::{
    identity_from_certificate, is_public, PeerIdentity, TokenAuthenticator, UserInfo,
};
use crate::handlers::{self, AppState};
use crate::status::ApiError;

/// Upstream's limit on request bodies (3 MiB objects, plus room for the envelope).
pub(crate) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024 + 64 * 1024;

pub struct Authenticator {
    pub tokens: TokenAuthenticator,
    pub service_accounts: Arc<crate::tokens::TokenSigner>,
    pub cache: Arc<crate::cache::WatchCache>,
}

impl Authenticator {
    /// `TokenReview`: what `spec.token` proves for `spec.audiences`, in the review's
    /// `status`, as a webhook token authenticator expects it.
    pub fn token_review(&self, mut review: serde_json::Value) -> serde_json::Value {
        use serde_json::{json, Value};
        let token = review
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
        let audiences: Vec<String> = review
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let api_audience = || vec![crate::tokens::ISSUER.to_string()];
        // Static and bootstrap tokens know no audience: they count for the API server's
        // own only.
        let static_user = self
            .tokens
            .lookup(&token)
            .or_else(|| crate::auth::bootstrap_token_user(&token, &self.cache))
            .filter(|_| {
                audiences.is_empty() || audiences.iter().any(|a| a == crate::tokens::ISSUER)
            });
        let reviewed = match static_user {
            Some(user) => Some(crate::tokens::Reviewed {
                user,
                extra: Default::default(),
                audiences: api_audience(),
            }),
            None => self
                .service_accounts
                .review(&token, &audiences, &self.cache),
        };
        let status = match reviewed {
            Some(r) => {
                let mut user = json!({"username": r.user.name, "groups": r.user.groups});
                if !r.user.uid.is_empty() {
                    user["uid"] = json!(r.user.uid);
                }
                if !r.extra.is_empty() {
                    user["extra"] = json!(r.extra);
                }
                json!({"authenticated": true, "user": user, "audiences": r.audiences})
            }
            None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
        };
        review["apiVersion"] = json!("authentication.k8s.io/v1");
        review["kind"] = json!("TokenReview");
        if review.get("metadata").is_none() {
            review["metadata"] = json!({});
        }
        review["metadata"]["creationTimestamp"] = Value::Null;
        review["status"] = status;
        review
    }

    fn bearer(&self, headers: &http::HeaderMap) -> Option<UserInfo> {
        let token = crate::auth::bearer_token(headers)?;
        self.tokens
            .lookup(token)
            .or_else(|| crate::auth::bootstrap_token_user(token, &self.cache))
            .or_else(|| self.service_accounts.authenticate(token, &self.cache))
    }
}

async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let from_certificate = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    let user = from_certificate.or_else(|| auth.bearer(request.headers()));
    match user {
        Some(user) => {
            request.extensions_mut().insert::<UserInfo>(user);
            next.run(request).await
        }
        None if is_public(request.uri().path()) => next.run(request).await,
        None => ApiError::unauthorized().into_response(),
    }
}

async fn ok() -> &'static str {
    "ok"
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    user: Option<axum::Extension<UserInfo>>,
) -> Response {
    let Some(axum::Extension(user)) = user else {
        return ApiError::unauthorized().into_response();
    };
    let request = crate::authz::Attributes {
        verb: "get".into(),
        path: "/metrics".into(),
        ..Default::default()
    };
    if let Err(e) = handlers::authorize(&state, &user, &request) {
        return e.into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub fn router(
    state: Arc<AppState>,
    auth: Arc<Authenticator>,
    audit: Option<Arc<crate::audit::AuditLog>>,
    ca_pem: String,
) -> Router {
    Router::new()
        // The cluster CA, public as k3s serves it: joining agents check it against the
        // hash their token carries.
        .route(skiff_pki::join::CA_PATH, get(move || async move { ca_pem }))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/healthz/ping", get(ok))
        .route("/livez/ping", get(ok))
        .route("/readyz/ping", get(ok))
        .route("/metrics", get(metrics))
        .fallback(handlers::handle)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(crate::warnings::record))
        // Audited once authenticated: every event names its user.
        .layer(axum::middleware::from_fn_with_state(
            audit,
            crate::audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, authenticate))
}

/// TLS settings: the serving certificate, and client certificates checked against the CA
/// but not required (tokens authenticate too).
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile_certs(cert_pem).map_err(|e| anyhow::anyhow!("serving certificate: {e}"))?;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("serving key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile_certs(client_ca_pem).map_err(|e| anyhow::anyhow!("client CA: {e}"))? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn rustls_pemfile_certs(
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect()
}

/// Accepts connections until the process ends.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, app: Router) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accepting connection");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move { serve_connection(acceptor, tcp, peer, app).await });
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    let identity = PeerIdentity(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| identity_from_certificate(cert.as_ref())),
    );
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(identity.clone());
            request
                .extensions_mut()
                .insert(crate::auth::PeerAddress(peer));
            app.clone().oneshot(request.map(Body::new))
        });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
