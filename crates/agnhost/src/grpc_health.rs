//! `grpc-health-checking`: the standard gRPC health service (`grpc.health.v1.Health`)
//! on `--port` (5000), for gRPC probes, and an HTTP control server on `--http-port`
//! (8080): `/make-serving` and `/make-not-serving` set the answer. It answers SERVING
//! for the first `--delay-unhealthy-sec` seconds (always, when negative; never, when 0)
//! and NOT_SERVING after, unless told otherwise; a service other than `--service` is
//! NOT_FOUND, as upstream's agnhost does.
//!
//! The gRPC side speaks just enough HTTP/2 (cleartext, prior knowledge, as gRPC
//! clients and the kubelet's prober connect) for unary calls: every call on a
//! connection is answered as `Check`, whose request is read from the call's message
//! (field 1, the service name); the request's headers are not decoded, so no HPACK
//! decoder is needed, and the answers' headers are literals that need no table.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flags::Flags;
use crate::http::{self, Response};

/// What the health service answers (`HealthCheckResponse.ServingStatus`).
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;
/// Not told yet: the delay decides.
const UNSET: u8 = 0;

/// gRPC's status code for an unknown service.
const GRPC_NOT_FOUND: u8 = 5;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 frame types and flags (RFC 9113, section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;

/// The answer the health service gives now.
struct Health {
    service: String,
    started: Instant,
    /// `None`: always SERVING unless told.
    unhealthy_after: Option<Duration>,
    /// What `/make-serving` or `/make-not-serving` set last.
    told: AtomicU8,
}

impl Health {
    fn status(&self) -> u8 {
        match self.told.load(Ordering::Relaxed) {
            UNSET => match self.unhealthy_after {
                Some(delay) if self.started.elapsed() >= delay => NOT_SERVING,
                _ => SERVING,
            },
            told => told,
        }
    }
}

pub fn run(flags: Flags) -> Result<(), String> {
    let port = flags.int("port", 5000)?;
    let http_port = flags.int("http-port", 8080)?;
    let delay = flags.int("delay-unhealthy-sec", -1)?;
    let health = Arc::new(Health {
        service: flags.string("service", ""),
        started: Instant::now(),
        unhealthy_after: u64::try_from(delay).ok().map(Duration::from_secs),
        told: AtomicU8::new(UNSET),
    });
    let port = u16::try_from(port).map_err(|_| format!("invalid --port {port}"))?;
    let http_port =
        u16::try_from(http_port).map_err(|_| format!("invalid --http-port {http_port}"))?;
    let control = health.clone();
    std::thread::spawn(move || {
        let handler: http::Handler = Arc::new(move |request| {
            let (status, said) = match request.path.as_str() {
                "/make-serving" => (SERVING, "Mark as serving"),
                "/make-not-serving" => (NOT_SERVING, "Mark as unhealthy"),
                _ => return Response::with_status(404, "404 page not found\n"),
            };
            control.told.store(status, Ordering::Relaxed);
            eprintln!("{said}");
            Response::ok("")
        });
        if let Err(error) = http::serve(http_port, handler) {
            eprintln!("agnhost grpc-health-checking: {error}");
            std::process::exit(1);
        }
    });
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| format!("listen on gRPC port {port}: {e}"))?;
    eprintln!("gRPC server starting to listen on :{port}");
    for connection in listener.incoming().flatten() {
        let health = health.clone();
        std::thread::spawn(move || {
            let _ = serve_connection(connection, &health);
        });
    }
    Ok(())
}

/// One frame's header and payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn read_frame(stream: &mut impl Read) -> std::io::Result<Frame> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload)?;
    Ok(Frame {
        kind: header[3],
        flags: header[4],
        stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload,
    })
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal, not Huffman-coded (the answers' strings are all short).
fn hpack_string(out: &mut Vec<u8>, text: &str) {
    debug_assert!(text.len() < 127);
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// An HPACK header field "literal without indexing" with a new name, which leaves the
/// peer's decoding table as it is.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_string(out, name);
    hpack_string(out, value);
}

/// `:status: 200` (static table entry 8) and gRPC's content type.
fn response_headers() -> Vec<u8> {
    let mut block = vec![0x88];
    hpack_literal(&mut block, "content-type", "application/grpc");
    block
}

fn trailers(grpc_status: u8, message: &str) -> Vec<u8> {
    let mut block = Vec::new();
    hpack_literal(&mut block, "grpc-status", &grpc_status.to_string());
    if !message.is_empty() {
        hpack_literal(&mut block, "grpc-message", message);
    }
    block
}

/// The service a `HealthCheckRequest` names: its field 1 (a string), if any.
fn requested_service(message: &[u8]) -> String {
    // The gRPC message prefix: a compression flag and a 4-byte length.
    let body = message.get(5..).unwrap_or_default();
    match body {
        [0x0a, length, rest @ ..] if (*length as usize) <= rest.len() && *length < 0x80 => {
            String::from_utf8_lossy(&rest[..*length as usize]).into_owned()
        }
        _ => String::new(),
    }
}

/// The frames answering one call for `service`.
fn answer(stream: u32, service: &str, health: &Health) -> Vec<u8> {
    if service != health.service {
        // A trailers-only answer, as gRPC servers give an error.
        let mut block = response_headers();
        block.extend(trailers(GRPC_NOT_FOUND, "unknown service"));
        return frame(HEADERS, END_HEADERS | END_STREAM, stream, &block);
    }
    let mut out = frame(HEADERS, END_HEADERS, stream, &response_headers());
    // HealthCheckResponse { status }, behind the gRPC message prefix.
    let message = [0, 0, 0, 0, 2, 0x08, health.status()];
    out.extend(frame(DATA, 0, stream, &message));
    out.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &trailers(0, ""),
    ));
    out
}

fn serve_connection(mut connection: TcpStream, health: &Health) -> std::io::Result<()> {
    connection.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut preface = [0u8; PREFACE.len()];
    connection.read_exact(&mut preface)?;
    if preface != PREFACE {
        return Ok(());
    }
    connection.write_all(&frame(SETTINGS, 0, 0, &[]))?;
    // Each open call's message so far.
    let mut calls: HashMap<u32, Vec<u8>> = HashMap::new();
    loop {
        let frame_in = read_frame(&mut connection)?;
        match frame_in.kind {
            SETTINGS if frame_in.flags & ACK == 0 => {
                connection.write_all(&frame(SETTINGS, ACK, 0, &[]))?;
            }
            PING if frame_in.flags & ACK == 0 => {
                connection.write_all(&frame(PING, ACK, 0, &frame_in.payload))?;
            }
            GOAWAY => return Ok(()),
            HEADERS => {
                calls.entry(frame_in.stream).or_default();
            }
            DATA => {
                let payload = if frame_in.flags & PADDED != 0 {
                    let pad = usize::from(*frame_in.payload.first().unwrap_or(&0));
                    let end = frame_in.payload.len().saturating_sub(pad);
                    frame_in.payload.get(1..end).unwrap_or_default().to_vec()
                } else {
                    frame_in.payload
                };
                calls.entry(frame_in.stream).or_default().extend(payload);
            }
            _ => {}
        }
        if matches!(frame_in.kind, HEADERS | DATA) && frame_in.flags & END_STREAM != 0 {
            let message = calls.remove(&frame_in.stream).unwrap_or_default();
            let service = requested_service(&message);
            connection.write_all(&answer(frame_in.stream, &service, health))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(delay: Option<u64>) -> Health {
        Health {
            service: String::new(),
            started: Instant::now(),
            unhealthy_after: delay.map(Duration::from_secs),
            told: AtomicU8::new(UNSET),
        }
    }

    #[test]
    fn serving_until_the_delay_then_as_told() {
        let always = health(None);
        assert_eq!(always.status(), SERVING);
        let at_once = health(Some(0));
        assert_eq!(at_once.status(), NOT_SERVING);
        at_once.told.store(SERVING, Ordering::Relaxed);
        assert_eq!(at_once.status(), SERVING);
        let later = health(Some(3600));
        assert_eq!(later.status(), SERVING);
    }

    #[test]
    fn the_service_comes_from_the_request_message() {
        assert_eq!(requested_service(&[0, 0, 0, 0, 0]), "");
        assert_eq!(
            requested_service(&[0, 0, 0, 0, 6, 0x0a, 4, b's', b'i', b'c', b'k']),
            "sick"
        );
    }

    #[test]
    fn frames_carry_length_type_flags_and_stream() {
        let out = frame(DATA, END_STREAM, 3, b"abc");
        assert_eq!(
            out,
            [0, 0, 3, DATA, END_STREAM, 0, 0, 0, 3, b'a', b'b', b'c']
        );
        let parsed = read_frame(&mut &out[..]).expect("a frame");
        assert_eq!(
            (parsed.kind, parsed.flags, parsed.stream, parsed.payload),
            (DATA, END_STREAM, 3, b"abc".to_vec())
        );
    }
}
