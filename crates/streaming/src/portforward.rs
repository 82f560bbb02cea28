//! The `portforward.k8s.io` protocol over SPDY, server side: what `kubectl port-forward`
//! speaks to a pod.
//!
//! For every local connection the client opens two streams carrying the same
//! `requestID` and `port` headers: an `error` stream, which the server closes empty when
//! the forward ends well or after writing a message when it fails, and a `data` stream
//! carrying the connection's bytes both ways. Each side half-closes the data stream
//! when its end of the connection stops sending.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::spdy::{self, Stream, StreamReader, StreamWriter};

/// The subprotocol (`X-Stream-Protocol-Version`) this server speaks.
pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long the second stream of a pair may take to arrive (upstream's stream creation
/// timeout).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves port forwarding on an upgraded `connection` until the client goes away.
/// `dial(port)` opens a connection to `port` in the pod; `pod` names the pod in error
/// messages.
pub async fn serve<C, D, F>(connection: C, pod: String, dial: D) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    D: Fn(u16) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let pairs: Pairs = Arc::default();
    let pod = Arc::new(pod);
    spdy::serve(connection, move |stream| {
        let Some(request) = request_id(&stream) else {
            let writer = stream.split().1;
            tokio::spawn(async move { writer.reset(spdy::REFUSED_STREAM).await });
            return;
        };
        let is_error = stream.header("streamtype") == Some("error");
        let complete = {
            let mut open = lock(&pairs);
            let pair = open.entry(request.clone()).or_default();
            if pair.error.is_none() && pair.data.is_none() {
                tokio::spawn(give_up_after_timeout(pairs.clone(), request.clone()));
            }
            if is_error {
                pair.error = Some(stream);
            } else {
                pair.data = Some(stream);
            }
            match pair {
                Pair {
                    error: Some(_),
                    data: Some(_),
                } => open.remove(&request),
                _ => None,
            }
        };
        if let Some(Pair {
            error: Some(error),
            data: Some(data),
        }) = complete
        {
            tokio::spawn(forward(error, data, pod.clone(), dial.clone()));
        }
    })
    .await
}

type Pairs = Arc<Mutex<HashMap<String, Pair>>>;

fn lock(pairs: &Pairs) -> std::sync::MutexGuard<'_, HashMap<String, Pair>> {
    pairs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops a request whose second stream never came, telling the client on its error
/// stream if that is the one that came.
async fn give_up_after_timeout(pairs: Pairs, request: String) {
    tokio::time::sleep(PAIR_TIMEOUT).await;
    let Some(pair) = lock(&pairs).remove(&request) else {
        return;
    };
    for stream in [pair.error, pair.data].into_iter().flatten() {
        let writer = stream.split().1;
        let _ = writer
            .write(b"timed out waiting for the other stream of the port forward request")
            .await;
        let _ = writer.finish().await;
    }
}

/// The request a stream belongs to: its `requestID` header, or (for clients too old to
/// send one) the id upstream derives from the stream ids, where the data stream follows
/// its error stream.
fn request_id(stream: &Stream) -> Option<String> {
    if let Some(id) = stream.header("requestid") {
        return Some(id.to_string());
    }
    match stream.header("streamtype")? {
        "error" => Some(stream.id().to_string()),
        "data" => Some(stream.id().checked_sub(2)?.to_string()),
        _ => None,
    }
}

/// Runs one forwarded connection.
async fn forward<D, F>(error: Stream, data: Stream, pod: Arc<String>, dial: D)
where
    D: Fn(u16) -> F,
    F: Future<Output = io::Result<TcpStream>>,
{
    let (_, error) = error.split();
    let port = data.header("port").unwrap_or_default().to_string();
    let (client_side, to_client) = data.split();
    let outcome = match port.parse::<u16>() {
        Ok(number) if number > 0 => match dial(number).await {
            Ok(connection) => splice(connection, client_side, &to_client).await,
            Err(e) => Err(e),
        },
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid port {port:?}"),
        )),
    };
    if let Err(e) = outcome {
        let message = format!("error forwarding port {port} to pod {pod}, uid : {e}");
        tracing::debug!(%message, "port forward failed");
        let _ = error.write(message.as_bytes()).await;
    }
    let _ = to_client.finish().await;
    let _ = error.finish().await;
}

/// Copies both ways until the pod's side has finished (the client's end may finish
/// earlier: the pod then sees its connection half-closed) or the client resets the
/// stream. The client waits for the error stream to close once the pod's side is done,
/// so the forward ends there rather than waiting for the client to finish too.
async fn splice(
    connection: TcpStream,
    mut from_client: StreamReader,
    to_client: &StreamWriter,
) -> io::Result<()> {
    let (mut from_pod, mut to_pod) = connection.into_split();
    let upstream = async {
        while let Some(data) = from_client.recv().await {
            match data {
                Ok(bytes) => to_pod.write_all(&bytes).await.map_err(Some)?,
                // The client is gone: nothing more to do or report.
                Err(_) => return Err(None),
            }
        }
        to_pod.shutdown().await.map_err(Some)?;
        // Done sending; the pod's side decides when the forward ends.
        std::future::pending::<Result<(), Option<io::Error>>>().await
    };
    let downstream = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let n = from_pod.read(&mut buffer).await?;
            if n == 0 {
                return Ok(());
            }
            to_client.write(&buffer[..n]).await?;
        }
    };
    tokio::select! {
        ended = upstream => match ended {
            Err(Some(e)) => Err(e),
            Err(None) | Ok(()) => Ok(()),
        },
        ended = downstream => ended,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spdy::client::{read, Decoder, Encoder, ServerFrame};

    /// A pod's server: answers each connection with what it read, upper-cased, once the
    /// client has finished sending.
    async fn shouting_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let mut heard = Vec::new();
                connection.read_to_end(&mut heard).await.unwrap();
                connection
                    .write_all(&heard.to_ascii_uppercase())
                    .await
                    .unwrap();
            }
        });
        port
    }

    fn dial_loopback(port: u16) -> impl Future<Output = io::Result<TcpStream>> {
        TcpStream::connect(("127.0.0.1", port))
    }

    /// Opens the error and data streams of one request.
    async fn open(
        to_server: &mut (impl AsyncWrite + Unpin),
        encoder: &mut Encoder,
        ids: (u32, u32),
        request: &str,
        port: &str,
    ) {
        for (id, kind) in [(ids.0, "error"), (ids.1, "data")] {
            let headers = [("streamType", kind), ("port", port), ("requestID", request)];
            let frame = encoder.syn_stream(id, &headers).unwrap();
            to_server.write_all(&frame).await.unwrap();
        }
    }

    /// Everything the server sends until both streams are finished, by stream.
    async fn drain(
        from_server: &mut (impl AsyncRead + Unpin),
        decoder: &mut Decoder,
        ids: (u32, u32),
    ) -> (Vec<u8>, Vec<u8>) {
        let (mut error, mut data, mut finished) = (Vec::new(), Vec::new(), 0);
        while finished < 2 {
            match read(from_server, decoder).await.unwrap().unwrap() {
                ServerFrame::Data {
                    stream,
                    data: bytes,
                    fin,
                } => {
                    if stream == ids.0 {
                        error.extend(bytes);
                    } else {
                        data.extend(bytes);
                    }
                    finished += usize::from(fin);
                }
                ServerFrame::Reply(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (error, data)
    }

    #[tokio::test]
    async fn forwards_a_connection_and_reports_a_refused_one() {
        let port = shouting_server().await;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(serve(server, "pod-a".into(), dial_loopback));
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let (mut encoder, mut decoder) = (Encoder::new().unwrap(), Decoder::new());

        open(&mut to_server, &mut encoder, (1, 3), "0", &port.to_string()).await;
        to_server
            .write_all(&encoder.data(3, b"hello", true))
            .await
            .unwrap();
        let (error, data) = drain(&mut from_server, &mut decoder, (1, 3)).await;
        assert_eq!((error, data), (vec![], b"HELLO".to_vec()));

        // Nothing listens on port 1: the error stream says so.
        open(&mut to_server, &mut encoder, (5, 7), "1", "1").await;
        let (error, data) = drain(&mut from_server, &mut decoder, (5, 7)).await;
        let error = String::from_utf8(error).unwrap();
        assert!(
            error.starts_with("error forwarding port 1 to pod pod-a, uid : "),
            "{error}"
        );
        assert!(data.is_empty());

        drop((to_server, from_server));
        session.await.unwrap().unwrap();
    }
}
