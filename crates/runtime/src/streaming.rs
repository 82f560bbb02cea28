//! The CRI streaming server: `Exec` answers with a one-time URL here, and the kubelet
//! proxies the client's WebSocket to it (see `skiff-streaming`). Serves on loopback
//! only: nothing but the node's kubelet should reach it.
//!
//! A command runs through `runc exec` with the container's process settings; its stdout
//! and stderr go out on their channels, the client's stdin comes in, and the exit status
//! ends the stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use skiff_streaming::channel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// How long an `Exec` URL stays good (upstream's `StreamIdleTimeout` for the request
/// cache is a minute too).
const URL_LIFETIME: Duration = Duration::from_secs(60);

/// An `Exec` the kubelet asked for and has not connected to yet.
#[derive(Debug, Clone)]
pub struct PendingExec {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    created: Instant,
}

pub struct StreamingServer {
    address: SocketAddr,
    pending: Mutex<HashMap<String, PendingExec>>,
    runtime: Arc<Runtime>,
}

impl StreamingServer {
    /// Binds a loopback port and serves until the process ends.
    pub async fn start(runtime: Arc<Runtime>) -> anyhow::Result<Arc<StreamingServer>> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let server = Arc::new(StreamingServer {
            address: listener.local_addr()?,
            pending: Mutex::new(HashMap::new()),
            runtime,
        });
        let app = Router::new()
            .route("/exec/{token}", any(exec))
            .with_state(server.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "streaming server stopped");
            }
        });
        tracing::info!(address = %server.address, "CRI streaming server listening");
        Ok(server)
    }

    /// Registers an `Exec` and returns its URL.
    pub fn prepare_exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        streams: (bool, bool, bool),
    ) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut pending = self.lock();
        pending.retain(|_, p| p.created.elapsed() < URL_LIFETIME);
        pending.insert(
            token.clone(),
            PendingExec {
                container_id,
                cmd,
                stdin: streams.0,
                stdout: streams.1,
                stderr: streams.2,
                created: Instant::now(),
            },
        );
        format!("http://{}/exec/{token}", self.address)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingExec>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, token: &str) -> Option<PendingExec> {
        self.lock()
            .remove(token)
            .filter(|p| p.created.elapsed() < URL_LIFETIME)
    }
}

async fn exec(
    State(server): State<Arc<StreamingServer>>,
    Path(token): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(request) = server.take(&token) else {
        return (http::StatusCode::NOT_FOUND, "unknown or expired exec URL").into_response();
    };
    let runtime = server.runtime.clone();
    upgrade
        .protocols(channel::PROTOCOLS.iter().copied())
        .on_upgrade(move |socket| async move {
            let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(channel::PROTOCOLS[0]);
            run(runtime, request, socket, v5).await
        })
}

/// Runs the command, pumping the streams, then sends the exit status and closes.
async fn run(runtime: Arc<Runtime>, request: PendingExec, mut socket: WebSocket, v5: bool) {
    let status = match pump(&runtime, &request, &mut socket, v5).await {
        Ok(code) => channel::exit_status(&request.cmd, code),
        Err(e) => channel::internal_error(&e.to_string()),
    };
    let message = channel::frame(channel::ERROR, status.to_string().as_bytes());
    let _ = socket.send(Message::Binary(message.into())).await;
    // A normal closure (1000): kubectl reads the error stream to its end, and takes a
    // close without a code as a broken stream.
    let close = axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

async fn pump(
    runtime: &Runtime,
    request: &PendingExec,
    socket: &mut WebSocket,
    v5: bool,
) -> Result<i32> {
    let prepared = runtime
        .prepare_exec(&request.container_id, request.cmd.clone())
        .await?;
    let mut child = runtime
        .runc
        .command()
        .arg("exec")
        .arg("--process")
        .arg(&prepared.process_json)
        .arg(&prepared.container_id)
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Internal(format!("runc exec: {e}")))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_buf, mut err_buf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = async { stdout.as_mut().expect("checked").read(&mut out_buf).await }, if stdout.is_some() => {
                match read {
                    Ok(n) if n > 0 => {
                        if request.stdout {
                            let frame = channel::frame(channel::STDOUT, &out_buf[..n]);
                            if socket.send(Message::Binary(frame.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => stdout = None,
                }
            }
            read = async { stderr.as_mut().expect("checked").read(&mut err_buf).await }, if stderr.is_some() => {
                match read {
                    Ok(n) if n > 0 => {
                        if request.stderr {
                            let frame = channel::frame(channel::STDERR, &err_buf[..n]);
                            if socket.send(Message::Binary(frame.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => stderr = None,
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&channel::STDIN) => {
                        if let Some(pipe) = stdin.as_mut() {
                            if pipe.write_all(&data[1..]).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    // v5: the client closed its end of stdin.
                    Some(&channel::CLOSE) if v5 && data.get(1) == Some(&channel::STDIN) => {
                        stdin = None;
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                // The client went away: stop the command.
                None | Some(Err(_)) => {
                    let _ = child.start_kill();
                    break;
                }
            },
        }
    }
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| Error::Internal(format!("runc exec: {e}")))?;
    runtime.finish_exec(&prepared);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1))
}
