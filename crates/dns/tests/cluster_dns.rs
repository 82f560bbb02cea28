//! The DNS server against a real API server: objects written with the real kubectl,
//! answers read with real DNS queries over UDP and TCP on loopback.
//!
//! There is no endpoints controller in this setup: the test writes EndpointSlices itself,
//! as that controller would.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use skiff_dns::{Dns, DnsArgs};
use skiff_e2e::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(3);

/// A stand-in for the node's resolver: answers every A question with 192.0.2.7, except
/// names starting with `missing`, which do not exist.
async fn fake_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
    let address = socket.local_addr().expect("upstream address");
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let Ok(request) = Message::from_vec(&buffer[..n]) else {
                continue;
            };
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_available = true;
            for query in &request.queries {
                response.add_query(query.clone());
                if query.name().to_ascii().starts_with("missing") {
                    response.metadata.response_code = ResponseCode::NXDomain;
                } else if query.query_type() == RecordType::A {
                    response.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::A(A::new(192, 0, 2, 7)),
                    ));
                }
            }
            let _ = socket
                .send_to(&response.to_vec().expect("encode"), from)
                .await;
        }
    });
    address
}

fn request(name: &str, qtype: RecordType) -> Message {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    request
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    skiff_dns::bench::query_udp(server, name, qtype, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("UDP query {name} {qtype}: {e}"))
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let request = request(name, qtype);
    let bytes = request.to_vec().expect("encode");
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let length = stream.read_u16().await?;
        let mut answer = vec![0u8; usize::from(length)];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("TCP answer in time")
        .expect("TCP exchange");
    let answer = Message::from_vec(&answer).expect("decode");
    assert_eq!(answer.metadata.id, request.metadata.id);
    answer
}

fn answers(message: &Message) -> BTreeSet<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Polls until `check` holds for the UDP answer, for at most `deadline`.
async fn eventually(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    deadline: Duration,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let until = Instant::now() + deadline;
    loop {
        let answer = udp(server, name, qtype).await;
        if check(&answer) {
            return answer;
        }
        if Instant::now() > until {
            panic!("{name} {qtype} never became as expected; last answer:\n{answer}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a DNS server on loopback, port 0, fed from `client`; returns its UDP and TCP
/// addresses.
async fn start_dns(client: kube::Client, args: DnsArgs) -> (SocketAddr, SocketAddr, Dns) {
    let dns = args.build().expect("dns config");
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let addresses = (
        udp.local_addr().expect("udp address"),
        tcp.local_addr().expect("tcp address"),
    );
    let (watchers, mut synced) = skiff_dns::watch(client, dns.view().clone());
    tokio::spawn(watchers);
    assert!(synced.wait(Duration::from_secs(30)).await, "watches listed");
    let serving = dns.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.serve(udp, tcp).await {
            panic!("DNS server failed: {e}");
        }
    });
    (addresses.0, addresses.1, dns)
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: peer, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: peer, port: 15432, protocol: TCP}]
endpoints:
- {addresses: [10.1.0.1], hostname: db-0, conditions: {ready: true}}
- {addresses: [10.1.0.2], hostname: db-1}
- {addresses: [10.1.0.3], hostname: db-2, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: example.test
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_cluster_from_a_real_api_server() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("server");
    let client = server.client().await;
    let upstream = fake_upstream().await;
    let args = DnsArgs {
        dns_upstream: vec![upstream.to_string()],
        ..DnsArgs::default()
    };
    let (dns_udp, dns_tcp, dns) = start_dns(client.clone(), args).await;

    let ns = server.namespace("dns");
    server.ok_with_input(&["apply", "-n", &ns, "-f", "-"], OBJECTS);
    let cluster_ip = server.ok(&[
        "get",
        "svc",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let cluster_ip = cluster_ip.trim().to_string();
    assert!(!cluster_ip.is_empty(), "web got a cluster IP");

    // A ClusterIP Service, over UDP and TCP.
    let web = format!("web.{ns}.svc.cluster.local.");
    let a = eventually(dns_udp, &web, RecordType::A, Duration::from_secs(5), |m| {
        !m.answers.is_empty()
    })
    .await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(a.metadata.message_type, MessageType::Response);
    assert_eq!(answers(&a), set(&[&cluster_ip]));
    assert_eq!(a.answers[0].ttl, 5);
    let over_tcp = tcp(dns_tcp, &web.to_uppercase(), RecordType::A).await;
    assert_eq!(answers(&over_tcp), set(&[&cluster_ip]), "TCP, any case");

    // SRV of the named port.
    let srv = udp(dns_udp, &format!("_http._tcp.{web}"), RecordType::SRV).await;
    assert_eq!(answers(&srv), set(&[&format!("0 100 80 {web}")]));

    // A headless Service: its ready endpoints; each has its own name.
    let db = format!("db.{ns}.svc.cluster.local.");
    let headless = eventually(dns_udp, &db, RecordType::A, Duration::from_secs(5), |m| {
        m.answers.len() == 2
    })
    .await;
    assert_eq!(answers(&headless), set(&["10.1.0.1", "10.1.0.2"]));
    let host = udp(dns_udp, &format!("db-1.{db}"), RecordType::A).await;
    assert_eq!(answers(&host), set(&["10.1.0.2"]));
    let not_ready = udp(dns_udp, &format!("db-2.{db}"), RecordType::A).await;
    assert_eq!(not_ready.metadata.response_code, ResponseCode::NXDomain);
    let srv = tcp(dns_tcp, &format!("_peer._tcp.{db}"), RecordType::SRV).await;
    assert_eq!(
        answers(&srv),
        set(&[
            &format!("0 50 15432 db-0.{db}"),
            &format!("0 50 15432 db-1.{db}"),
        ])
    );
    let glue: BTreeSet<String> = srv
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        glue,
        set(&[
            &format!("db-0.{db} 10.1.0.1"),
            &format!("db-1.{db} 10.1.0.2")
        ])
    );

    // ExternalName: the alias, and its target resolved upstream.
    let ext = udp(
        dns_udp,
        &format!("ext.{ns}.svc.cluster.local."),
        RecordType::A,
    )
    .await;
    assert_eq!(answers(&ext), set(&["example.test.", "192.0.2.7"]));

    // Pods, PTR, the spec's version.
    let pod = udp(
        dns_udp,
        &format!("10-244-0-9.{ns}.pod.cluster.local."),
        RecordType::A,
    )
    .await;
    assert_eq!(answers(&pod), set(&["10.244.0.9"]));
    let reversed: Vec<&str> = cluster_ip.split('.').rev().collect();
    let ptr = udp(
        dns_udp,
        &format!("{}.in-addr.arpa.", reversed.join(".")),
        RecordType::PTR,
    )
    .await;
    assert_eq!(answers(&ptr), set(&[&web]));
    let version = udp(dns_udp, "dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(answers(&version), set(&["1.1.0"]));

    // A name that does not exist: NXDOMAIN, with the zone's SOA for negative caching.
    let missing = udp(
        dns_udp,
        &format!("nope.{ns}.svc.cluster.local."),
        RecordType::A,
    )
    .await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(missing.authorities.len(), 1);
    match &missing.authorities[0].data {
        RData::SOA(soa) => assert_eq!(soa.minimum, 5),
        other => panic!("authority is not an SOA: {other:?}"),
    }
    // A name that exists, without the type asked: NODATA, with the SOA.
    let nodata = udp(dns_udp, &web, RecordType::AAAA).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities.len(), 1);

    // Changes show within seconds: one more ready endpoint, then one fewer.
    server.ok(&[
        "patch",
        "endpointslice",
        "db-1",
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/endpoints/2/conditions/ready","value":true},
            {"op":"replace","path":"/endpoints/0/conditions/ready","value":false}]"#,
    ]);
    eventually(dns_udp, &db, RecordType::A, Duration::from_secs(5), |m| {
        answers(m) == set(&["10.1.0.2", "10.1.0.3"])
    })
    .await;
    server.ok(&["delete", "svc", "web", "-n", &ns]);
    eventually(dns_udp, &web, RecordType::A, Duration::from_secs(5), |m| {
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await;

    // Outside the zone: the upstream's answer, relayed, over both transports.
    let forwarded = udp(dns_udp, "www.example.test.", RecordType::A).await;
    assert_eq!(forwarded.metadata.response_code, ResponseCode::NoError);
    assert!(!forwarded.metadata.authoritative);
    assert_eq!(answers(&forwarded), set(&["192.0.2.7"]));
    let forwarded = tcp(dns_tcp, "www.example.test.", RecordType::A).await;
    assert_eq!(answers(&forwarded), set(&["192.0.2.7"]));
    let absent = udp(dns_udp, "missing.example.test.", RecordType::A).await;
    assert_eq!(absent.metadata.response_code, ResponseCode::NXDomain);

    // The entry point the binary calls, on fixed ports, with its metrics endpoint.
    let bind: SocketAddr = format!("127.0.0.1:{}", skiff_e2e::free_port())
        .parse()
        .expect("address");
    let metrics_address: SocketAddr = format!("127.0.0.1:{}", skiff_e2e::free_port())
        .parse()
        .expect("address");
    let run_args = DnsArgs {
        dns_bind_address: bind,
        dns_upstream: vec![upstream.to_string()],
        dns_metrics_address: Some(metrics_address),
        ..DnsArgs::default()
    };
    tokio::spawn(skiff_dns::run(client.clone(), run_args));
    let until = Instant::now() + Duration::from_secs(10);
    let headless = loop {
        if let Ok(answer) = skiff_dns::bench::query_udp(bind, &db, RecordType::A, TIMEOUT).await {
            break answer;
        }
        assert!(Instant::now() < until, "run() never answered on {bind}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answers(&headless), set(&["10.1.0.2", "10.1.0.3"]));
    let exposition = http_get(metrics_address, "/metrics").await;
    assert!(exposition.starts_with("HTTP/1.1 200"), "{exposition}");
    assert!(
        exposition.contains(r#"skiff_dns_requests_total{type="A",rcode="NOERROR"} "#),
        "{exposition}"
    );

    // The metrics counted what was asked.
    let metrics = dns.metrics().render();
    assert!(
        metrics.contains(r#"skiff_dns_requests_total{type="A",rcode="NOERROR"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"skiff_dns_requests_total{type="A",rcode="NXDOMAIN"}"#),
        "{metrics}"
    );
}

async fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("HTTP answer in time")
        .expect("read");
    response
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    use skiff_dns::view::{EndpointInfo, ServiceInfo, ServiceKind, SliceInfo};
    let dns = DnsArgs {
        dns_upstream: vec!["127.0.0.1:9".into()],
        ..DnsArgs::default()
    }
    .build()
    .expect("dns config");
    {
        let mut view = dns.view().write().expect("view");
        let headless = ServiceInfo {
            kind: ServiceKind::Headless,
            ports: vec![],
        };
        view.apply_service("big", "many", headless);
        let endpoints = (1..=100u8)
            .map(|n| EndpointInfo {
                addresses: vec![[10, 9, 0, n].into()],
                hostname: None,
                ready: true,
            })
            .collect();
        let slice = SliceInfo {
            service: "many".into(),
            ports: vec![],
            endpoints,
        };
        view.apply_slice("big", "many-1", slice);
    }
    let udp_socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let tcp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let (udp_address, tcp_address) = (
        udp_socket.local_addr().expect("address"),
        tcp_listener.local_addr().expect("address"),
    );
    tokio::spawn(dns.serve(udp_socket, tcp_listener));
    let name = "many.big.svc.cluster.local.";
    // 100 A records do not fit the 512 bytes of a client without EDNS.
    let over_udp = udp(udp_address, name, RecordType::A).await;
    assert!(over_udp.metadata.truncation, "TC set");
    assert!(over_udp.answers.len() < 100);
    let over_tcp = tcp(tcp_address, name, RecordType::A).await;
    assert!(!over_tcp.metadata.truncation);
    assert_eq!(over_tcp.answers.len(), 100);
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    // A UDP port nobody listens on: the upstream refuses at once.
    let dead = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("address")
    };
    let args = DnsArgs {
        dns_upstream: vec![dead.to_string()],
        dns_upstream_timeout: 1,
        ..DnsArgs::default()
    };
    let dns = args.build().expect("dns config");
    let udp_socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let tcp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let address = udp_socket.local_addr().expect("address");
    tokio::spawn(dns.serve(udp_socket, tcp_listener));
    let answer = udp(address, "www.example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}
