//! `nettest`: upstream's state server, for the PreStop test: `POST /write` with
//! `{"Source": "<name>"}` counts a contact from that source; `GET /read` returns the
//! state (`Hostname`, `Sent`, `Received`, `Errors`, `Log`, `StillContactingPeers`)
//! as JSON. Upstream's peer discovery through the API server (`--service`, `--peers`)
//! is not done: this server only receives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::flags::Flags;
use crate::http::{self, Request, Response};
use crate::json;

#[derive(Default)]
struct State {
    received: BTreeMap<String, u64>,
    errors: Vec<String>,
}

pub fn run(flags: Flags) -> Result<(), String> {
    let port = flags.int("port", 8080)?;
    let port = u16::try_from(port).map_err(|_| format!("--port: {port} is not a port"))?;
    let state = Arc::new(Mutex::new(State::default()));
    http::serve(port, Arc::new(move |request| route(request, &state)))
}

fn route(request: &Request, state: &Mutex<State>) -> Response {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    match request.path.as_str() {
        "/read" => {
            crate::log("serveRead");
            Response::ok(read(&state))
        }
        "/write" => {
            crate::log("serveWrite");
            match source(&request.body) {
                Some(source) if !source.is_empty() => {
                    *state.received.entry(source).or_default() += 1;
                }
                _ => {
                    let error = format!("{}: Got request with no source", crate::hostname());
                    state.errors.push(error);
                }
            }
            let hostname = crate::hostname();
            Response::ok(format!(
                "{}\n",
                json::object([("Hostname", hostname.as_str())])
            ))
        }
        _ => Response::with_status(404, "404 page not found\n"),
    }
}

fn read(state: &State) -> String {
    let received: Vec<String> = state
        .received
        .iter()
        .map(|(source, count)| format!("{}:{count}", json::string(source)))
        .collect();
    let errors: Vec<String> = state.errors.iter().map(|e| json::string(e)).collect();
    let errors = if errors.is_empty() {
        "null".to_string()
    } else {
        format!("[{}]", errors.join(","))
    };
    format!(
        "{{\"Hostname\":{},\"Sent\":{{}},\"Received\":{{{}}},\"Errors\":{errors},\"Log\":null,\"StillContactingPeers\":false}}",
        json::string(&crate::hostname()),
        received.join(",")
    )
}

/// The `Source` string of a JSON object such as `{"Source": "prestop"}`.
fn source(body: &str) -> Option<String> {
    let at = body.find("\"Source\"")? + "\"Source\"".len();
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_by_source_and_read_back() {
        assert_eq!(
            source(r#"{"Source": "prestop"}"#).as_deref(),
            Some("prestop")
        );
        assert_eq!(source(r#"{"Dest":"x"}"#), None);
        let state = Mutex::new(State::default());
        let write = |body: &str| {
            route(
                &Request {
                    method: "POST".into(),
                    path: "/write".into(),
                    query: Default::default(),
                    peer: ([127, 0, 0, 1], 1).into(),
                    body: body.into(),
                },
                &state,
            )
        };
        assert_eq!(write(r#"{"Source": "prestop"}"#).status, 200);
        write(r#"{"Source":"prestop"}"#);
        write("{}");
        let read = read(&state.lock().expect("lock"));
        assert!(read.contains(r#""Received":{"prestop":2}"#), "{read}");
        assert!(read.contains("Got request with no source"), "{read}");
    }
}
