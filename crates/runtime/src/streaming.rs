//! The CRI streaming server: `Exec` and `PortForward` answer with a one-time URL here,
//! and the kubelet proxies the client's connection to it (see `skiff-streaming`). Serves
//! on loopback only: nothing but the node's kubelet should reach it.
//!
//! - exec (a WebSocket, `channel.k8s.io`): a command runs through `runc exec` with the
//!   container's process settings; its stdout and stderr go out on their channels, the
//!   client's stdin comes in, and the exit status ends the stream;
//! - port forward (SPDY, `portforward.k8s.io`): each forwarded connection is a pair of
//!   streams, carried to the port on the sandbox's loopback.

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
use skiff_streaming::{channel, portforward, spdy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// How long a streaming URL stays good (upstream's `StreamIdleTimeout` for the request
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
    pub tty: bool,
}

/// An `Attach` the kubelet asked for and has not connected to yet.
#[derive(Debug, Clone)]
pub struct PendingAttach {
    pub container_id: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A session the kubelet asked for and has not connected to yet.
#[derive(Debug, Clone)]
enum Pending {
    Exec(PendingExec),
    Attach(PendingAttach),
    PortForward { sandbox_id: String },
}

pub struct StreamingServer {
    address: SocketAddr,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
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
            .route("/portforward/{token}", any(port_forward))
            .route("/attach/{token}", any(attach))
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
        tty: bool,
    ) -> String {
        self.register(
            "exec",
            Pending::Exec(PendingExec {
                container_id,
                cmd,
                stdin: streams.0,
                stdout: streams.1,
                stderr: streams.2,
                tty,
            }),
        )
    }

    /// Registers an `Attach` and returns its URL.
    pub fn prepare_attach(&self, request: PendingAttach) -> String {
        self.register("attach", Pending::Attach(request))
    }

    /// Registers a `PortForward` into a sandbox and returns its URL.
    pub fn prepare_port_forward(&self, sandbox_id: String) -> String {
        self.register("portforward", Pending::PortForward { sandbox_id })
    }

    fn register(&self, kind: &str, request: Pending) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut pending = self.lock();
        pending.retain(|_, (_, created)| created.elapsed() < URL_LIFETIME);
        pending.insert(token.clone(), (request, Instant::now()));
        format!("http://{}/{kind}/{token}", self.address)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Pending, Instant)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, token: &str) -> Option<Pending> {
        self.lock()
            .remove(token)
            .filter(|(_, created)| created.elapsed() < URL_LIFETIME)
            .map(|(request, _)| request)
    }
}

fn expired(kind: &str) -> Response {
    (
        http::StatusCode::NOT_FOUND,
        format!("unknown or expired {kind} URL"),
    )
        .into_response()
}

/// `/portforward/{token}`: switches the connection to SPDY and forwards its streams'
/// ports into the sandbox.
async fn port_forward(
    State(server): State<Arc<StreamingServer>>,
    Path(token): Path<String>,
    mut request: axum::extract::Request,
) -> Response {
    let Some(Pending::PortForward { sandbox_id }) = server.take(&token) else {
        return expired("port forward");
    };
    let headers = request.headers();
    let upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !skiff_streaming::proxy::is_upgrade(headers) || !upgrade.eq_ignore_ascii_case(spdy::PROTOCOL)
    {
        return (
            http::StatusCode::BAD_REQUEST,
            "port forwarding needs an upgrade to SPDY/3.1",
        )
            .into_response();
    }
    // A client that names protocols must name ours (upstream's handshake); one that
    // names none gets it anyway.
    let offered: Vec<&str> = headers
        .get_all(STREAM_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.is_empty() && !offered.contains(&portforward::PROTOCOL) {
        return (
            http::StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{:?}]",
                portforward::PROTOCOL
            ),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let runtime = server.runtime.clone();
    tokio::spawn(async move {
        let connection = match on_upgrade.await {
            Ok(connection) => hyper_util::rt::TokioIo::new(connection),
            Err(e) => {
                tracing::debug!(error = %e, "port forward: the upgrade did not complete");
                return;
            }
        };
        let sandbox = sandbox_id.clone();
        let dial = move |port: u16| {
            let (runtime, sandbox) = (runtime.clone(), sandbox.clone());
            async move { runtime.connect_to_port(&sandbox, port).await }
        };
        if let Err(e) = portforward::serve(connection, sandbox_id.clone(), dial).await {
            tracing::debug!(sandbox = %sandbox_id, error = %e, "port forward session ended");
        }
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(spdy::PROTOCOL),
    );
    headers.insert(
        STREAM_PROTOCOL,
        http::HeaderValue::from_static(portforward::PROTOCOL),
    );
    response
}

/// The header a streaming client offers and a server picks its subprotocol in.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";

async fn exec(
    State(server): State<Arc<StreamingServer>>,
    Path(token): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(Pending::Exec(request)) = server.take(&token) else {
        return expired("exec");
    };
    let runtime = server.runtime.clone();
    upgrade
        .protocols(channel::PROTOCOLS.iter().copied())
        .on_upgrade(move |socket| async move {
            let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(channel::PROTOCOLS[0]);
            run(runtime, request, socket, v5).await
        })
}

/// `/attach/{token}`: the container's output from now on, and the client's stdin into
/// it, until the container exits.
async fn attach(
    State(server): State<Arc<StreamingServer>>,
    Path(token): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(Pending::Attach(request)) = server.take(&token) else {
        return expired("attach");
    };
    let runtime = server.runtime.clone();
    upgrade
        .protocols(channel::PROTOCOLS.iter().copied())
        .on_upgrade(move |mut socket| async move {
            let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(channel::PROTOCOLS[0]);
            let status = match pump_attach(&runtime, &request, &mut socket, v5).await {
                Ok(()) => channel::success(),
                Err(e) => {
                    tracing::warn!(container = %request.container_id, error = %e, "attach failed");
                    channel::internal_error(&e.to_string())
                }
            };
            finish(socket, status).await
        })
}

/// Carries the monitor's framed output to the client's channels and the client's stdin
/// to the monitor, until the monitor lets go (the container exited) or the client goes.
async fn pump_attach(
    runtime: &Runtime,
    request: &PendingAttach,
    socket: &mut WebSocket,
    v5: bool,
) -> Result<()> {
    let attachment = runtime.attach(&request.container_id).await?;
    let mut resize = attachment.resize;
    let (mut from_monitor, mut to_monitor) = attachment.stdio.into_split();
    let mut stdin_open = request.stdin && attachment.stdin;
    let mut header = [0u8; 5];
    let mut data = Vec::new();
    loop {
        tokio::select! {
            read = from_monitor.read_exact(&mut header) => {
                if read.is_err() {
                    return Ok(());
                }
                let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                data.resize(length as usize, 0);
                if from_monitor.read_exact(&mut data).await.is_err() {
                    return Ok(());
                }
                let wanted = match header[0] {
                    crate::shim::ATTACH_STDOUT => request.stdout.then_some(channel::STDOUT),
                    _ => request.stderr.then_some(channel::STDERR),
                };
                if let Some(stream) = wanted {
                    let frame = channel::frame(stream, &data);
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        return Ok(());
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(message))) => match message.first() {
                    Some(&channel::STDIN)
                        if stdin_open && to_monitor.write_all(&message[1..]).await.is_err() =>
                    {
                        stdin_open = false;
                    }
                    Some(&channel::CLOSE) if v5 && message.get(1) == Some(&channel::STDIN) => {
                        let _ = to_monitor.shutdown().await;
                        stdin_open = false;
                    }
                    Some(&channel::RESIZE) => {
                        if let (Some(socket), Some((width, height))) =
                            (resize.as_mut(), channel::terminal_size(&message[1..]))
                        {
                            let line = format!("{width} {height}\n");
                            if socket.write_all(line.as_bytes()).await.is_err() {
                                resize = None;
                            }
                        }
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                // The client went away; the container goes on.
                None | Some(Err(_)) => return Ok(()),
            },
        }
    }
}

/// Runs the command, pumping the streams, then sends the exit status and closes.
async fn run(runtime: Arc<Runtime>, request: PendingExec, socket: WebSocket, v5: bool) {
    let mut socket = socket;
    let status = match pump(&runtime, &request, &mut socket, v5).await {
        Ok(code) => channel::exit_status(&request.cmd, code),
        Err(e) => {
            tracing::warn!(container = %request.container_id, tty = request.tty, error = %e, "exec failed");
            channel::internal_error(&e.to_string())
        }
    };
    finish(socket, status).await
}

/// Sends the final status, closes, and waits for the client's close.
async fn finish(mut socket: WebSocket, status: serde_json::Value) {
    let message = channel::frame(channel::ERROR, status.to_string().as_bytes());
    let _ = socket.send(Message::Binary(message.into())).await;
    // A normal closure (1000): kubectl reads the error stream to its end, and takes a
    // close without a code as a broken stream.
    let close = axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
    // Wait for the client's close, reading what it still sends (terminal resizes, stdin):
    // a connection closed with unread input is reset, and a reset can make the client
    // drop the status and close frames before it reads them.
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// How long an exec's connection waits for the client to answer its close.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);

async fn pump(
    runtime: &Runtime,
    request: &PendingExec,
    socket: &mut WebSocket,
    v5: bool,
) -> Result<i32> {
    let prepared = runtime
        .prepare_exec(&request.container_id, request.cmd.clone(), request.tty)
        .await?;
    let result = if request.tty {
        pump_terminal(runtime, &prepared, request, socket).await
    } else {
        pump_pipes(runtime, &prepared, request, socket, v5).await
    };
    runtime.finish_exec(&prepared);
    result
}

/// A command with plain pipes: stdout and stderr apart, stdin closed when the client
/// says so.
async fn pump_pipes(
    runtime: &Runtime,
    prepared: &crate::runtime::PreparedExec,
    request: &PendingExec,
    socket: &mut WebSocket,
    v5: bool,
) -> Result<i32> {
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
    exit_code(&mut child).await
}

async fn exit_code(child: &mut tokio::process::Child) -> Result<i32> {
    let status = child
        .wait()
        .await
        .map_err(|e| Error::Internal(format!("runc exec: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1))
}

/// A command on a terminal. runc, not detached, makes the container's terminal and
/// copies between it and its own stdio; its stdio is a terminal of ours, so that it
/// copies raw bytes and follows our size (it re-reads it on SIGWINCH). The terminal's
/// output goes out as stdout, stdin goes in, resize messages set the size.
async fn pump_terminal(
    runtime: &Runtime,
    prepared: &crate::runtime::PreparedExec,
    request: &PendingExec,
    socket: &mut WebSocket,
) -> Result<i32> {
    let terminal =
        nix::pty::openpty(None, None).map_err(|e| Error::Internal(format!("openpty: {e}")))?;
    let slave = |what: &str| {
        terminal
            .slave
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| Error::Internal(format!("terminal {what}: {e}")))
    };
    let mut child = runtime
        .runc
        .command()
        .arg("exec")
        .arg("--tty")
        .arg("--process")
        .arg(&prepared.process_json)
        .arg(&prepared.container_id)
        .stdin(slave("stdin")?)
        .stdout(slave("stdout")?)
        .stderr(slave("stderr")?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Internal(format!("runc exec: {e}")))?;
    drop(terminal.slave);
    let master = terminal.master;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&master);
    let runc_pid = child.id();
    let mut output = tokio::fs::File::from_std(std::fs::File::from(
        master
            .try_clone()
            .map_err(|e| Error::Internal(format!("terminal: {e}")))?,
    ));
    let mut input = tokio::fs::File::from_std(std::fs::File::from(master));
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            read = output.read(&mut buf) => match read {
                // EIO once runc and the command have gone.
                Ok(n) if n > 0 => {
                    if request.stdout {
                        let frame = channel::frame(channel::STDOUT, &buf[..n]);
                        if socket.send(Message::Binary(frame.into())).await.is_err() {
                            break;
                        }
                    }
                }
                _ => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&channel::STDIN) => {
                        let _ = input.write_all(&data[1..]).await;
                        let _ = input.flush().await;
                    }
                    Some(&channel::RESIZE) => {
                        if let (Some((width, height)), Some(pid)) =
                            (channel::terminal_size(&data[1..]), runc_pid)
                        {
                            crate::sys::set_window_size(raw, width, height);
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGWINCH,
                            );
                        }
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    let _ = child.start_kill();
                    break;
                }
            },
        }
    }
    exit_code(&mut child).await
}
