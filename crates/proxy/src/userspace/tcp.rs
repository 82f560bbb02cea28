//! A TCP portal: accepts the connections its rules redirect here, connects each to an
//! endpoint the balancer chooses (trying others, with growing timeouts, when one does
//! not answer) and copies bytes both ways until both sides are done.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use crate::model::Endpoint;

/// Upstream's userspace proxy's dial timeouts: one attempt each, the first at the
/// client's pinned endpoint, the others at the next endpoints in turn.
const DIAL_TIMEOUTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Serves one listener until its task is aborted (the portal went away).
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(portal = %shared.label, %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = relay(client, peer, &shared).await;
            shared.count("tcp", result.as_ref().map_or("error", |&r| r));
            if let Err(error) = result {
                tracing::debug!(portal = %shared.label, %peer, %error, "connection ended");
            }
        });
    }
}

async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> io::Result<&'static str> {
    let Some((mut backend, endpoint)) = connect(peer, shared).await? else {
        // The rules refuse a Service without endpoints; a connection accepted just
        // before they changed is reset, the nearest to a refusal left.
        let _ = client.set_zero_linger();
        return Ok("no_endpoints");
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut backend)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("relaying to {endpoint:?}: {e}")))?;
    Ok("ok")
}

/// A connection to an endpoint for a client at `peer`; `None` when the portal has no
/// endpoints.
async fn connect(peer: SocketAddr, shared: &Shared) -> io::Result<Option<(TcpStream, Endpoint)>> {
    let mut last_error = None;
    for (attempt, timeout) in DIAL_TIMEOUTS.into_iter().enumerate() {
        // After a failure the client's pin is not trusted: the next endpoint is tried.
        let Some(endpoint) = shared.choose(peer.ip(), attempt > 0) else {
            return Ok(None);
        };
        let addr = SocketAddr::from((endpoint.ip, endpoint.port));
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(Some((stream, endpoint))),
            Ok(Err(error)) => last_error = Some(format!("connecting to {addr}: {error}")),
            Err(_) => last_error = Some(format!("connecting to {addr}: timed out")),
        }
    }
    Err(io::Error::other(
        last_error.unwrap_or_else(|| "no endpoint answered".into()),
    ))
}
