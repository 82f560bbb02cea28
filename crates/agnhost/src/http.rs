//! A small HTTP/1.1 server (a thread per connection, one request each, then closed)
//! and the GET client `/dial` uses. Enough for test traffic; nothing more.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub peer: SocketAddr,
    /// The request's body (up to its `Content-Length`), as text.
    pub body: String,
}

impl Request {
    pub fn param(&self, name: &str) -> &str {
        self.query.get(name).map(String::as_str).unwrap_or("")
    }
}

pub struct Response {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    pub content_type: &'static str,
}

impl Response {
    pub fn ok(body: impl Into<String>) -> Response {
        Response::with_status(200, body)
    }

    pub fn with_status(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            body: body.into(),
            location: None,
            content_type: "text/plain; charset=utf-8",
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves `handler` on every address on `port`, forever.
pub fn serve(port: u16, handler: Handler) -> Result<(), String> {
    serve_on(port, handler, "HTTP", |tcp| Ok(Box::new(tcp)))
}

/// [`serve`] over TLS with `config`.
pub fn serve_tls(
    port: u16,
    handler: Handler,
    config: Arc<rustls::ServerConfig>,
) -> Result<(), String> {
    serve_on(port, handler, "HTTPS", move |tcp| {
        let connection = rustls::ServerConnection::new(config.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Box::new(rustls::StreamOwned::new(connection, tcp)))
    })
}

/// A connection to answer on: plain TCP or TLS over it.
trait Connection: Read + Write + Send {}
impl<T: Read + Write + Send> Connection for T {}

fn serve_on(
    port: u16,
    handler: Handler,
    what: &str,
    wrap: impl Fn(TcpStream) -> std::io::Result<Box<dyn Connection>> + Send + Sync + 'static,
) -> Result<(), String> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| format!("listening for {what} on port {port}: {e}"))?;
    crate::log(&format!("Started {what} server on port {port}"));
    let wrap = Arc::new(wrap);
    for stream in listener.incoming().flatten() {
        let (handler, wrap) = (handler.clone(), wrap.clone());
        std::thread::spawn(move || {
            let answered = stream
                .peer_addr()
                .and_then(|peer| {
                    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                    Ok((peer, wrap(stream)?))
                })
                .and_then(|(peer, connection)| answer(connection, peer, handler.as_ref()));
            if let Err(e) = answered {
                crate::log(&format!("HTTP connection: {e}"));
            }
        });
    }
    Ok(())
}

fn answer(
    mut stream: Box<dyn Connection>,
    peer: SocketAddr,
    handler: &(dyn Fn(&Request) -> Response + Send + Sync),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(()); // not HTTP; nothing to answer
    };
    let mut body_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                body_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    // Read whole, so that a client that sent one never sees its connection reset.
    let mut body = Vec::new();
    reader
        .by_ref()
        .take(body_length as u64)
        .read_to_end(&mut body)?;
    drop(reader);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: method.to_string(),
        path: decode(path),
        query: parse_query(query),
        peer,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let response = handler(&request);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if let Some(location) = &response.location {
        head.push_str(&format!("Location: {location}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if request.method != "HEAD" {
        stream.write_all(response.body.as_bytes())?;
    }
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        412 => "Precondition Failed",
        417 => "Expectation Failed",
        500 => "Internal Server Error",
        _ => "",
    }
}

pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// Percent-decoding, with `+` as a space (form encoding, as Go's `FormValue` reads).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let escaped = bytes.get(i + 1..i + 3).and_then(|pair| {
                    let high = char::from(pair[0]).to_digit(16)?;
                    let low = char::from(pair[1]).to_digit(16)?;
                    u8::try_from(high * 16 + low).ok()
                });
                match escaped {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET http://<addr>/<path>`; the body, if the answer came within `timeout`.
pub fn get(host: &str, port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let addr = resolve(host, port)?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let path = path.trim_start_matches('/');
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: agnhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => Err(format!("{addr} sent no HTTP answer")),
    }
}

/// An address for `host`: an IP as is; a name through the C library's resolver, which
/// a statically linked binary may not have (tests dial addresses).
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded_as_forms_are() {
        let query = parse_query("msg=hello+world%21&code=&request=%2Fecho%3Fmsg%3Dx&bad=%zz%4");
        assert_eq!(query["msg"], "hello world!");
        assert_eq!(query["code"], "");
        assert_eq!(query["request"], "/echo?msg=x");
        assert_eq!(query["bad"], "%zz%4");
    }
}
