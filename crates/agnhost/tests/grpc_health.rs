//! `agnhost grpc-health-checking` answers a real gRPC client (tonic's, which the
//! kubelet's prober uses) as the standard health service does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Agnhost(Child);

impl Drop for Agnhost {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(port: u16) -> HealthClient<tonic::transport::Channel> {
    for _ in 0..100 {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint");
        if let Ok(channel) = endpoint.connect().await {
            return HealthClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agnhost's gRPC port {port} never answered");
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|status| status.code())
}

/// GET on the control port, as `curl` would.
fn control(port: u16, path: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("control port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn answers_checks_as_the_standard_health_service() {
    let (port, http_port) = (free_port(), free_port());
    let _agnhost = Agnhost(
        Command::new(env!("CARGO_BIN_EXE_agnhost"))
            .args(["grpc-health-checking", "--port", &port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .spawn()
            .expect("start agnhost"),
    );
    let mut client = connect(port).await;
    assert_eq!(
        check(&mut client, "").await,
        Ok(ServingStatus::Serving as i32)
    );
    assert_eq!(
        check(&mut client, "elsewhere").await,
        Err(tonic::Code::NotFound)
    );
    control(http_port, "/make-not-serving");
    assert_eq!(
        check(&mut client, "").await,
        Ok(ServingStatus::NotServing as i32)
    );
    control(http_port, "/make-serving");
    // A new connection, as each probe makes.
    let mut again = connect(port).await;
    assert_eq!(
        check(&mut again, "").await,
        Ok(ServingStatus::Serving as i32)
    );
}
