//! The hickory request handler: one question in, the view's answer (or the upstream's)
//! out, with the header bits an authoritative-and-recursive server sets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use crate::forward::Forwarder;
use crate::lookup::{lookup, Answer, Outcome, Zone};
use crate::metrics::Metrics;
use crate::view::SharedView;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The DNS server's state: what the handler reads for every question.
#[derive(Clone)]
pub struct Dns {
    pub(crate) view: SharedView,
    pub(crate) zone: Zone,
    pub(crate) forwarder: Forwarder,
    pub(crate) metrics: Metrics,
}

impl Dns {
    /// A server over `view` (fed by [`crate::watch`], or by hand in tests).
    pub fn new(view: SharedView, zone: Zone, forwarder: Forwarder) -> Dns {
        Dns {
            view,
            zone,
            forwarder,
            metrics: Metrics::new(),
        }
    }

    pub fn view(&self) -> &SharedView {
        &self.view
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves DNS on already-bound sockets until the process ends (or a socket fails).
    pub async fn serve(self, udp: UdpSocket, tcp: TcpListener) -> Result<(), crate::Error> {
        let mut server = hickory_server::Server::new(Handler(Arc::new(self)));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 64);
        server
            .block_until_done()
            .await
            .map_err(|e| crate::Error::Serve(e.to_string()))
    }

    /// The answer to one question, as the lookup and the forwarder give it.
    async fn resolve(&self, query: &Query) -> Resolved {
        let outcome = {
            let view = self.view.read().unwrap_or_else(|p| p.into_inner());
            lookup(&view, &self.zone, query.name(), query.query_type())
        };
        match outcome {
            Outcome::Answer(mut answer) => {
                if let Some(target) = answer.chase.take() {
                    // The alias alone would leave stub resolvers without an address; a
                    // failure to resolve the target still leaves the alias to the client.
                    let mut chased = query.clone();
                    chased.set_name(target);
                    if let Ok(upstream) = self.forwarder.forward(&chased).await {
                        answer.answers.extend(upstream.answers);
                    }
                }
                Resolved::Cluster(answer)
            }
            Outcome::Forward => match self.forwarder.forward(query).await {
                Ok(message) => Resolved::Upstream(message),
                Err(error) => {
                    tracing::debug!(name = %query.name(), %error, "forwarding failed");
                    self.metrics.forward_failed();
                    Resolved::Failed
                }
            },
        }
    }
}

enum Resolved {
    Cluster(Box<Answer>),
    Upstream(Message),
    Failed,
}

struct Handler(Arc<Dns>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let dns = &self.0;
        // Clients that speak EDNS get it back, with at least the classic 512 bytes.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;

        let query = match request.request_info() {
            Ok(info)
                if request.metadata.message_type == MessageType::Query
                    && request.metadata.op_code == OpCode::Query =>
            {
                info.query.original().clone()
            }
            Ok(_) => {
                metadata.response_code = ResponseCode::NotImp;
                return send(
                    &mut response_handle,
                    builder.build_no_records(metadata),
                    request,
                )
                .await;
            }
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                return send(
                    &mut response_handle,
                    builder.build_no_records(metadata),
                    request,
                )
                .await;
            }
        };
        let qtype = query.query_type();

        let (info, source) = match dns.resolve(&query).await {
            Resolved::Cluster(answer) => {
                metadata.authoritative = true;
                metadata.response_code = answer.rcode;
                let response = builder.build(
                    metadata,
                    answer.answers.iter(),
                    std::iter::empty::<&Record>(),
                    answer.soa.iter(),
                    answer.additionals.iter(),
                );
                (
                    send(&mut response_handle, response, request).await,
                    "cluster",
                )
            }
            Resolved::Upstream(message) => {
                metadata.response_code = message.metadata.response_code;
                let response = builder.build(
                    metadata,
                    message.answers.iter(),
                    message.authorities.iter(),
                    std::iter::empty::<&Record>(),
                    message.additionals.iter(),
                );
                (
                    send(&mut response_handle, response, request).await,
                    "forward",
                )
            }
            Resolved::Failed => {
                metadata.response_code = ResponseCode::ServFail;
                (
                    send(
                        &mut response_handle,
                        builder.build_no_records(metadata),
                        request,
                    )
                    .await,
                    "forward",
                )
            }
        };
        dns.metrics.observe(
            &record_type_name(qtype),
            &rcode_name(info.response_code),
            source,
            started.elapsed(),
        );
        info
    }
}

fn record_type_name(qtype: RecordType) -> String {
    qtype.to_string()
}

/// The mnemonic dig prints and CoreDNS's metrics use (hickory's own names are prose).
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    let metadata = *response.metadata();
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, client = %request.src(), "could not send a DNS response");
            let mut failed = metadata;
            failed.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata: failed,
                counts: Default::default(),
            })
        }
    }
}
