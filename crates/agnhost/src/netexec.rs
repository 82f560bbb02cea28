//! `agnhost netexec`: the HTTP server whose endpoints upstream's network tests call
//! (`/dial` makes this pod reach another over HTTP or UDP and reports what answered),
//! and the UDP server answering `hostname`, `echo <msg>` and `clientip`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::flags::Flags;
use crate::http::{self, Request, Response};
use crate::json;

/// How long `/dial` waits for each answer, as upstream's client does.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(flags: Flags) -> Result<(), String> {
    let http_port = port(flags.int("http-port", 8080)?, "http-port")?;
    let udp_port = flags.int("udp-port", 8081)?;
    if flags.int("sctp-port", -1)? != -1 {
        return Err("--sctp-port: SCTP is not served by this agnhost".to_string());
    }
    // Ready once a UDP server listens, as upstream's `/healthz` reports.
    let ready = Arc::new(AtomicBool::new(false));
    if udp_port != -1 {
        let udp_port = port(udp_port, "udp-port")?;
        let addresses = flags.string("udp-listen-addresses", "");
        let addresses: Vec<&str> = if addresses.is_empty() {
            vec!["0.0.0.0"]
        } else {
            addresses.split(',').collect()
        };
        for address in addresses {
            let ip: std::net::IpAddr = address
                .parse()
                .map_err(|_| format!("--udp-listen-addresses: invalid address {address:?}"))?;
            let socket = UdpSocket::bind((ip, udp_port))
                .map_err(|e| format!("listening for UDP on {address}:{udp_port}: {e}"))?;
            crate::log(&format!("Started UDP server on port {address} {udp_port}"));
            ready.store(true, Ordering::SeqCst);
            let ready = ready.clone();
            std::thread::spawn(move || {
                let outcome = serve_udp(&socket);
                ready.store(false, Ordering::SeqCst);
                crate::log(&format!("UDP server exited: {outcome:?}"));
            });
        }
    }
    http::serve(http_port, Arc::new(move |request| route(request, &ready)))
}

fn port(value: i32, flag: &str) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("--{flag}: {value} is not a port"))
}

fn route(request: &Request, ready: &AtomicBool) -> Response {
    crate::log(&format!("{} {}", request.method, request.path));
    match request.path.as_str() {
        "/clientip" => Response::ok(request.peer.to_string()),
        "/dial" => dial(request),
        "/echo" => echo(request),
        "/exit" => exit(request),
        "/healthz" if ready.load(Ordering::SeqCst) => Response::ok(""),
        "/healthz" => Response::with_status(412, ""),
        "/hostname" | "/hostName" => Response::ok(crate::hostname()),
        "/redirect" => redirect(request),
        "/shell" => shell(request),
        "/shutdown" => std::process::exit(0),
        // Every other path is the root's, as with Go's ServeMux.
        _ => Response::ok(format!("NOW: {}", now())),
    }
}

fn echo(request: &Request) -> Response {
    let msg = request.param("msg");
    // Upstream's line, which the lifecycle hook tests look for in the log.
    crate::log(&format!(
        "GET /echo?msg={msg}&code={}",
        request.param("code")
    ));
    match request.param("code") {
        "" => Response::ok(msg),
        code => match code.parse() {
            Ok(code) => Response::with_status(code, msg),
            Err(_) => Response::ok(format!(
                "argument 'code' must be an integer or empty, got {code:?}\n"
            )),
        },
    }
}

fn redirect(request: &Request) -> Response {
    let code = match request.param("code") {
        "" => 302,
        code => match code.parse() {
            Ok(code) => code,
            Err(_) => {
                return Response::ok(format!(
                    "argument 'code' must be an integer or empty, got {code:?}\n"
                ))
            }
        },
    };
    Response {
        location: Some(request.param("location").to_string()),
        ..Response::with_status(code, "")
    }
}

/// `/exit?code=&wait=&timeout=`: exits with the code after `wait`; with a `timeout`,
/// after answering (the graceful shutdown upstream's server does), else at once.
fn exit(request: &Request) -> Response {
    let parsed = (|| -> Result<(i32, Duration, Duration), String> {
        let code = match request.param("code") {
            "" => 0,
            code => code.parse().map_err(|_| {
                format!("argument 'code' must be an integer [0-127] or empty, got {code:?}\n")
            })?,
        };
        let wait = duration(request.param("wait")).map_err(|_| {
            format!(
                "argument 'wait' must be a valid golang duration or empty, got {:?}\n",
                request.param("wait")
            )
        })?;
        let timeout = duration(request.param("timeout")).map_err(|_| {
            format!(
                "argument 'timeout' must be a valid golang duration or empty, got {:?}\n",
                request.param("timeout")
            )
        })?;
        Ok((code, wait, timeout))
    })();
    let (code, wait, timeout) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return Response::ok(message),
    };
    crate::log(&format!(
        "Will begin shutdown in {wait:?}, allowing {timeout:?} for connections to close, then will exit with {code}"
    ));
    std::thread::sleep(wait);
    if timeout.is_zero() {
        std::process::exit(code);
    }
    std::thread::spawn(move || {
        // Long enough for this answer to leave.
        std::thread::sleep(timeout.min(Duration::from_millis(200)));
        std::process::exit(code);
    });
    Response::ok("")
}

/// A Go duration (`1.5s`, `300ms`, `1m30s`); empty is zero.
fn duration(text: &str) -> Result<Duration, ()> {
    if text.is_empty() || text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(())?;
        let value: f64 = rest[..number_end].parse().map_err(|_| ())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(()),
        };
        total += value * seconds;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// `/shell?shellCommand=` (or `cmd=`): `{"output": …, "error": …}`, each when present.
fn shell(request: &Request) -> Response {
    let command = match request.param("shellCommand") {
        "" => request.param("cmd"),
        command => command,
    };
    let outcome = std::process::Command::new("/bin/sh")
        .args(["-c", command])
        .output();
    let (output, error) = match outcome {
        Ok(done) => {
            let mut output = done.stdout;
            output.extend_from_slice(&done.stderr);
            let error = match done.status.code() {
                Some(0) => String::new(),
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_string(),
            };
            (String::from_utf8_lossy(&output).into_owned(), error)
        }
        Err(e) => (String::new(), e.to_string()),
    };
    let fields = [("output", output.as_str()), ("error", error.as_str())];
    Response::ok(json::object(
        fields.into_iter().filter(|(_, value)| !value.is_empty()),
    ))
}

/// `/dial?request=&protocol=http|udp&host=&port=&tries=`: `{"responses": […],
/// "errors": […]}`. As upstream, `responses` is there only when the last try answered.
fn dial(request: &Request) -> Response {
    let tries = match request.param("tries") {
        "" => 1,
        tries => match tries.parse::<u32>() {
            Ok(tries) => tries,
            Err(e) => {
                return Response::with_status(400, format!("tries parameter is invalid. {e}\n"))
            }
        },
    };
    let what = request.param("request");
    if what.is_empty() {
        return Response::with_status(400, "request parameter not specified. <nil>\n");
    }
    let host = request.param("host");
    let port = match request.param("port").parse::<u16>() {
        Ok(port) => port,
        Err(e) => {
            return Response::with_status(400, format!("host and/or port param are invalid. {e}\n"))
        }
    };
    let protocol = request.param("protocol").to_ascii_lowercase();
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    let mut last_answered = false;
    for _ in 0..tries {
        let answer = match protocol.as_str() {
            "" | "http" => http::get(host, port, what, DIAL_TIMEOUT),
            "udp" => dial_udp(host, port, what),
            other => return Response::with_status(400, format!("unsupported protocol. {other}\n")),
        };
        last_answered = matches!(&answer, Ok(text) if !text.is_empty());
        match answer {
            Ok(text) => responses.push(text),
            Err(error) => errors.push(error),
        }
    }
    let mut fields = Vec::new();
    if last_answered {
        fields.push(("responses", responses.as_slice()));
    }
    if !errors.is_empty() {
        fields.push(("errors", errors.as_slice()));
    }
    Response::ok(json::object(fields))
}

fn dial_udp(host: &str, port: u16, request: &str) -> Result<String, String> {
    let addr = http::resolve(host, port)?;
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local)
        .and_then(|socket| socket.connect(addr).map(|()| socket))
        .map_err(|e| format!("udp dial failed. err:{e}"))?;
    socket
        .send(request.as_bytes())
        .map_err(|e| format!("udp connection write failed. err:{e}"))?;
    socket
        .set_read_timeout(Some(DIAL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 2048];
    match socket.recv(&mut buffer) {
        Ok(count) if count > 0 => Ok(String::from_utf8_lossy(&buffer[..count]).into_owned()),
        Ok(_) => Err("reading from udp connection failed. err:'<nil>'".to_string()),
        Err(e) => Err(format!("reading from udp connection failed. err:'{e}'")),
    }
}

fn serve_udp(socket: &UdpSocket) -> std::io::Result<()> {
    let mut buffer = [0u8; 2048];
    loop {
        let (count, client) = socket.recv_from(&mut buffer)?;
        let text = String::from_utf8_lossy(&buffer[..count])
            .trim()
            .to_lowercase();
        let answer = match text.as_str() {
            "hostname" => Some(crate::hostname()),
            "clientip" => Some(client.to_string()),
            _ => text.strip_prefix("echo ").map(str::to_string),
        };
        match answer {
            Some(answer) => {
                socket.send_to(answer.as_bytes(), client)?;
            }
            None if !text.is_empty() => crate::log(&format!(
                "Unknown UDP command received from {client}: {text}"
            )),
            None => {}
        }
    }
}

/// The time as Go prints a `time.Time` in UTC (upstream's `/` answers with it).
fn now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09} +0000 UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(duration(""), Ok(Duration::ZERO));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("5"), Err(()));
        assert_eq!(duration("5x"), Err(()));
    }

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_428), (2025, 12, 6));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn the_udp_server_answers_its_three_commands() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = server.local_addr().expect("addr").port();
        std::thread::spawn(move || serve_udp(&server));
        assert_eq!(
            dial_udp("127.0.0.1", port, "echo Hello"),
            Ok("hello".to_string())
        );
        assert_eq!(
            dial_udp("127.0.0.1", port, "hostname\n"),
            Ok(crate::hostname())
        );
        let client = dial_udp("127.0.0.1", port, "clientip").expect("clientip");
        assert!(client.starts_with("127.0.0.1:"), "{client}");
    }

    #[test]
    fn dial_reaches_an_http_server_and_reports_failures() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let ready = Arc::new(AtomicBool::new(true));
        std::thread::spawn(move || http::serve(port, Arc::new(move |r| route(r, &ready))));
        let answer = crate::tests::eventually(|| {
            http::get("127.0.0.1", port, "echo?msg=hi", DIAL_TIMEOUT).ok()
        });
        assert_eq!(answer, "hi");
        let dialed = http::get(
            "127.0.0.1",
            port,
            &format!("dial?request=hostname&protocol=http&host=127.0.0.1&port={port}&tries=2"),
            DIAL_TIMEOUT,
        )
        .expect("dial");
        let name = json::string(&crate::hostname());
        assert_eq!(dialed, format!("{{\"responses\":[{name},{name}]}}"));
        let refused = http::get(
            "127.0.0.1",
            port,
            "dial?request=hostname&protocol=udp&host=127.0.0.1&port=1",
            DIAL_TIMEOUT,
        )
        .expect("dial");
        assert!(
            refused.starts_with("{\"errors\":[\"reading from udp connection failed."),
            "{refused}"
        );
        let bad = http::get(
            "127.0.0.1",
            port,
            "dial?request=x&host=h&port=p",
            DIAL_TIMEOUT,
        );
        assert!(bad
            .expect("answer")
            .starts_with("host and/or port param are invalid."));
    }
}
