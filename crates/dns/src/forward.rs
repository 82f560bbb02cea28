//! Questions outside the cluster zone go to the node's resolvers: one query over UDP,
//! again over TCP when the answer comes back truncated, each upstream in turn.
//!
//! A plain forwarder rather than hickory's resolver: the client must see the upstream's
//! answer as it is (its rcode, its authority section), not a resolver's interpretation.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The largest UDP answer asked of upstreams (the DNS flag day's safe size).
const UDP_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("upstream {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {upstream}: {message}")]
    Protocol {
        upstream: SocketAddr,
        message: String,
    },
}

#[derive(Clone, Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The first upstream's answer to `query` (recursion desired); the last error if none
    /// answers.
    pub async fn forward(&self, query: &Query) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for upstream in &self.upstreams {
            match self.ask(*upstream, query).await {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    tracing::debug!(%upstream, %error, "upstream failed");
                    last = error;
                }
            }
        }
        Err(last)
    }

    async fn ask(&self, upstream: SocketAddr, query: &Query) -> Result<Message, ForwardError> {
        let mut request = Message::query();
        request.metadata.recursion_desired = true;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        request.set_edns(edns);
        let bytes = request.to_vec().map_err(|e| ForwardError::Protocol {
            upstream,
            message: e.to_string(),
        })?;
        let id = request.metadata.id;
        let answer = tokio::time::timeout(self.timeout, udp_exchange(upstream, &bytes, id))
            .await
            .map_err(|_| ForwardError::Timeout(upstream))??;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        tokio::time::timeout(self.timeout, tcp_exchange(upstream, &bytes, id))
            .await
            .map_err(|_| ForwardError::Timeout(upstream))?
    }
}

fn io(upstream: SocketAddr) -> impl Fn(std::io::Error) -> ForwardError {
    move |source| ForwardError::Io { upstream, source }
}

fn decode(upstream: SocketAddr, bytes: &[u8]) -> Result<Message, ForwardError> {
    Message::from_vec(bytes).map_err(|e| ForwardError::Protocol {
        upstream,
        message: e.to_string(),
    })
}

async fn udp_exchange(
    upstream: SocketAddr,
    request: &[u8],
    id: u16,
) -> Result<Message, ForwardError> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io(upstream))?;
    socket.connect(upstream).await.map_err(io(upstream))?;
    socket.send(request).await.map_err(io(upstream))?;
    let mut buffer = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buffer).await.map_err(io(upstream))?;
        // A stray or spoofed datagram with another id is not the answer; keep waiting.
        match decode(upstream, &buffer[..n]) {
            Ok(answer) if answer.metadata.id == id => return Ok(answer),
            Ok(_) => continue,
            Err(error) => tracing::debug!(%error, "undecodable upstream datagram"),
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    request: &[u8],
    id: u16,
) -> Result<Message, ForwardError> {
    let mut stream = TcpStream::connect(upstream).await.map_err(io(upstream))?;
    let length = u16::try_from(request.len()).map_err(|_| ForwardError::Protocol {
        upstream,
        message: "request too long".into(),
    })?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).await.map_err(io(upstream))?;
    let length = stream.read_u16().await.map_err(io(upstream))?;
    let mut buffer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buffer).await.map_err(io(upstream))?;
    let answer = decode(upstream, &buffer)?;
    if answer.metadata.id != id {
        return Err(ForwardError::Protocol {
            upstream,
            message: "answer id does not match the query".into(),
        });
    }
    Ok(answer)
}

/// The `nameserver` lines of a resolv.conf, on port 53.
pub fn resolv_conf_nameservers(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_resolv_conf(&text))
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (`fe80::1%eth0`) cannot be a SocketAddr; skip it.
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers() {
        let text = "# comment\nsearch example.org\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.2:53".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }
}

#[cfg(test)]
mod exchange_tests {
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use tokio::net::TcpListener;

    use super::*;

    fn answer_to(request: &Message, truncated: bool) -> Vec<u8> {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.add_queries(request.queries.clone());
        response.metadata.truncation = truncated;
        if !truncated {
            for n in 1..=3 {
                response.add_answer(Record::from_rdata(
                    request.queries[0].name().clone(),
                    30,
                    RData::A(A::new(192, 0, 2, n)),
                ));
            }
        }
        response.to_vec().expect("encode")
    }

    /// An upstream whose UDP answers are truncated (no records, TC set) and whose TCP
    /// answers are whole, on the same port as real resolvers use.
    async fn truncating_upstream() -> SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let address = tcp.local_addr().expect("address");
        let udp = UdpSocket::bind(address).await.expect("bind udp");
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buffer).await {
                if let Ok(request) = Message::from_vec(&buffer[..n]) {
                    let _ = udp.send_to(&answer_to(&request, true), from).await;
                }
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let Ok(length) = stream.read_u16().await else {
                    continue;
                };
                let mut request = vec![0u8; usize::from(length)];
                if stream.read_exact(&mut request).await.is_err() {
                    continue;
                }
                let Ok(request) = Message::from_vec(&request) else {
                    continue;
                };
                let answer = answer_to(&request, false);
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                let _ = stream.write_all(&framed).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let upstream = truncating_upstream().await;
        let forwarder = Forwarder::new(vec![upstream], Duration::from_secs(2));
        let query = Query::query(
            Name::from_ascii("big.example.").expect("name"),
            RecordType::A,
        );
        let answer = forwarder.forward(&query).await.expect("answer");
        assert!(!answer.metadata.truncation);
        assert_eq!(answer.answers.len(), 3);
    }

    #[tokio::test]
    async fn the_next_upstream_answers_when_the_first_is_silent() {
        // Bound but never read: the query times out there.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let upstream = truncating_upstream().await;
        let forwarder = Forwarder::new(
            vec![silent.local_addr().expect("address"), upstream],
            Duration::from_millis(300),
        );
        let query = Query::query(
            Name::from_ascii("big.example.").expect("name"),
            RecordType::A,
        );
        assert_eq!(
            forwarder
                .forward(&query)
                .await
                .expect("answer")
                .answers
                .len(),
            3
        );
    }
}
