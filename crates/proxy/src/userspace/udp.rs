//! A UDP portal: one session per client address. A client's first datagram opens a
//! socket connected to an endpoint the balancer chooses; the client's datagrams go out
//! on it, and the endpoint's answers come back from the portal's socket with the source
//! address the client's datagram was sent to after its redirect (so that the kernel's
//! NAT turns it back into the Service's address). A session ends after the idle timeout
//! (`--udp-timeout`) without a datagram either way, and is moved to another endpoint
//! when its endpoint stops serving the Service.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::Shared;
use crate::model::Endpoint;

/// The most a datagram carries.
const MAX_DATAGRAM: usize = 65_535;

struct Session {
    endpoint: Endpoint,
    socket: Arc<UdpSocket>,
    /// When the client last sent; the session ends an idle timeout after the later of
    /// this and the endpoint's last answer.
    last_sent: Arc<Mutex<Instant>>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddrV4, Session>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the socket report each datagram's destination address, which [`serve`] answers
/// from.
pub(super) fn prepare(socket: &UdpSocket) -> io::Result<()> {
    setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)
}

/// Serves one listener until its task is aborted (the portal went away); the sessions'
/// tasks end by themselves within the idle timeout.
pub(super) async fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client, local) = match receive(&socket, &mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(portal = %shared.label, %error, "receiving a datagram failed");
                continue;
            }
        };
        let upstream = {
            let mut sessions = lock(&sessions);
            match sessions.get(&client) {
                Some(s) if shared.serves(&s.endpoint) => {
                    *lock(&s.last_sent) = Instant::now();
                    Some(s.socket.clone())
                }
                Some(_) => {
                    // Its endpoint went: the next datagram starts over elsewhere.
                    sessions.remove(&client);
                    None
                }
                None => None,
            }
        };
        let upstream = match upstream {
            Some(upstream) => upstream,
            None => match open(&socket, &sessions, client, local, &shared).await {
                Ok(Some(upstream)) => upstream,
                Ok(None) => {
                    shared.count("udp", "no_endpoints");
                    continue;
                }
                Err(error) => {
                    shared.count("udp", "error");
                    tracing::debug!(portal = %shared.label, %client, %error, "no UDP session");
                    continue;
                }
            },
        };
        if let Err(error) = upstream.send(&buffer[..len]).await {
            tracing::debug!(portal = %shared.label, %client, %error, "forwarding a datagram failed");
        }
    }
}

/// Opens a session for `client` (whose datagrams arrive at `local`): `None` without
/// endpoints.
async fn open(
    listener: &Arc<UdpSocket>,
    sessions: &Sessions,
    client: SocketAddrV4,
    local: Ipv4Addr,
    shared: &Arc<Shared>,
) -> io::Result<Option<Arc<UdpSocket>>> {
    let Some(endpoint) = shared.choose((*client.ip()).into(), false) else {
        return Ok(None);
    };
    let addr = SocketAddr::from((endpoint.ip, endpoint.port));
    let upstream = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    upstream
        .connect(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("connecting to {addr}: {e}")))?;
    let upstream = Arc::new(upstream);
    let last_sent = Arc::new(Mutex::new(Instant::now()));
    lock(sessions).insert(
        client,
        Session {
            endpoint,
            socket: upstream.clone(),
            last_sent: last_sent.clone(),
        },
    );
    shared.count("udp", "ok");
    if let Some(m) = &shared.metrics {
        m.userspace_udp_sessions.inc();
    }
    let (listener, sessions, shared) = (listener.clone(), sessions.clone(), shared.clone());
    let session_socket = upstream.clone();
    tokio::spawn(async move {
        answer(
            &listener,
            &session_socket,
            client,
            local,
            &last_sent,
            &shared,
        )
        .await;
        let mut sessions = lock(&sessions);
        if sessions
            .get(&client)
            .is_some_and(|s| Arc::ptr_eq(&s.socket, &session_socket))
        {
            sessions.remove(&client);
        }
        if let Some(m) = &shared.metrics {
            m.userspace_udp_sessions.dec();
        }
    });
    Ok(Some(upstream))
}

/// Relays the endpoint's answers to the client until the session is idle for the
/// timeout, or the endpoint refuses.
async fn answer(
    listener: &UdpSocket,
    upstream: &UdpSocket,
    client: SocketAddrV4,
    local: Ipv4Addr,
    last_sent: &Mutex<Instant>,
    shared: &Shared,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut last_answer = Instant::now();
    loop {
        let idle_since = last_answer.max(*lock(last_sent));
        let deadline = idle_since + shared.udp_timeout;
        match tokio::time::timeout_at(deadline, upstream.recv(&mut buffer)).await {
            Ok(Ok(len)) => {
                last_answer = Instant::now();
                if let Err(error) = send_from(listener, &buffer[..len], client, local).await {
                    tracing::debug!(portal = %shared.label, %client, %error, "answering failed");
                }
            }
            Ok(Err(error)) => {
                // ICMP unreachable from the endpoint, typically: the session is over.
                tracing::debug!(portal = %shared.label, %client, %error, "endpoint refused");
                return;
            }
            Err(_) if Instant::now() >= lock(last_sent).max(last_answer) + shared.udp_timeout => {
                return
            }
            // The client sent meanwhile: wait on.
            Err(_) => {}
        }
    }
}

/// One datagram: its length, sender, and the (local) address it was sent to.
async fn receive(
    socket: &UdpSocket,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddrV4, Ipv4Addr)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buffer)];
            let mut cmsgs = nix::cmsg_space!(nix::libc::in_pktinfo);
            let msg = recvmsg::<SockaddrIn>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsgs),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let sender = msg
                .address
                .map(SocketAddrV4::from)
                .ok_or_else(|| io::Error::other("a datagram without a sender"))?;
            let mut local = None;
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::Ipv4PacketInfo(info) = cmsg {
                    local = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                }
            }
            let local = local.ok_or_else(|| io::Error::other("no destination address"))?;
            Ok((msg.bytes, sender, local))
        })
        .await
}

/// Sends `data` to `client` from `local`, whatever address the routing would pick.
async fn send_from(
    socket: &UdpSocket,
    data: &[u8],
    client: SocketAddrV4,
    local: Ipv4Addr,
) -> io::Result<()> {
    let info = nix::libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: nix::libc::in_addr {
            s_addr: u32::from(local).to_be(),
        },
        ipi_addr: nix::libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrIn::from(client);
    socket
        .async_io(Interest::WRITABLE, || {
            sendmsg(
                socket.as_raw_fd(),
                &[IoSlice::new(data)],
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )
            .map(drop)
            .map_err(io::Error::from)
        })
        .await
}
