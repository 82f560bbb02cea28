//! `agnhost serve-hostname`: the hostname over HTTP on any path (the default), or raw:
//! written to each TCP connection, sent back for each UDP datagram. As upstream, raw
//! serving needs `--http=false` beside `--tcp` or `--udp`.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;

use crate::flags::Flags;
use crate::http::{self, Response};

pub const BOOLEAN_FLAGS: &[&str] = &["tcp", "udp", "http", "close"];

pub fn run(flags: Flags) -> Result<(), String> {
    let port = flags.int("port", 9376)?;
    let port = u16::try_from(port).map_err(|_| format!("--port: {port} is not a port"))?;
    let (tcp, udp) = (flags.bool("tcp", false)?, flags.bool("udp", false)?);
    let serve_http = flags.bool("http", true)?;
    let _ = flags.bool("close", false)?; // every answer closes its connection here
    if serve_http && (tcp || udp) {
        return Err("Can't serve TCP/UDP mode and HTTP mode at the same time".to_string());
    }
    let hostname = crate::hostname();
    if serve_http {
        return http::serve(port, Arc::new(move |_| Response::ok(hostname.clone())));
    }
    let mut servers = Vec::new();
    if udp {
        let socket = UdpSocket::bind(("0.0.0.0", port))
            .map_err(|e| format!("listening for UDP on port {port}: {e}"))?;
        let name = hostname.clone();
        servers.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut buffer = [0u8; 1024];
            loop {
                let (_, client) = socket.recv_from(&mut buffer)?;
                socket.send_to(name.as_bytes(), client)?;
            }
        }));
    }
    if tcp {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| format!("listening for TCP on port {port}: {e}"))?;
        servers.push(std::thread::spawn(move || -> std::io::Result<()> {
            for mut stream in listener.incoming().flatten() {
                // A client gone early is its own business.
                let _ = stream.write_all(hostname.as_bytes());
            }
            Ok(())
        }));
    }
    crate::log(&format!("Serving the hostname on port {port}"));
    for server in servers {
        match server.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("a server thread panicked".to_string()),
        }
    }
    Ok(())
}
