//! Ending connected UDP sockets whose socket-LB backend went away, as Cilium's socket termination does.
//!
//! The socket LB translates a UDP socket's `connect()` once: the socket then holds the backend's
//! address for the rest of its life, and a DNS client would keep sending to a deleted pod (nothing
//! answers, or worse, a new pod reusing the address does). Such a socket is aborted with sock_diag's
//! `SOCK_DESTROY`: its owner's next receive fails with `ECONNABORTED` (a send, with `EDESTADDRREQ`: the
//! socket is disconnected), and a resolver opens a new socket, which the socket LB balances anew.
//!
//! Sockets live in their owners' network namespaces, so the namespaces of the processes in the socket
//! LB's cgroup subtree (the only sockets it translates) are visited, each on a short-lived thread of its
//! own (setns(2) moves only that thread). Only a socket the socket LB connected from the departed
//! frontend to the departed backend is ended: its reverse-translation entry (keyed by the socket
//! cookie, which sock_diag reports) says so. A socket an application connected to a pod's address
//! itself is left alone.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use thiserror::Error;
use tracing::debug;

use crate::{netns, service::Departure};

/// Errors of ending sockets.
#[derive(Debug, Error)]
pub enum UdpSocketsError {
    /// The sock_diag netlink socket could not be opened or used.
    #[error("sock_diag: {0}")]
    Diag(#[source] std::io::Error),
    /// The kernel cannot destroy sockets (built without `CONFIG_INET_DIAG_DESTROY`).
    #[error("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY): {0}")]
    Unsupported(#[source] std::io::Error),
    /// A network namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// The per-namespace thread died.
    #[error("the socket thread for {0} panicked")]
    Thread(PathBuf),
}

/// `NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY`, `SOCK_DESTROY` (linux/sock_diag.h).
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
/// `TCP_ESTABLISHED`: the state sock_diag reports for a connected UDP socket.
const TCP_ESTABLISHED: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;

/// `struct inet_diag_sockid`: ports and addresses in network order, the cookie as two host-order
/// halves.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagRequest {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// The start of `struct inet_diag_msg` (what follows the socket id is not needed).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagMsgHead {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
}

/// One connected UDP socket of a namespace.
#[derive(Clone, Copy)]
struct Connected {
    id: SockId,
    cookie: u64,
    peer: SocketAddrV4,
}

/// Ends the sockets the socket LB connected through a departed (frontend, backend) pair, in every
/// network namespace of the processes in `cgroup`'s subtree. `translated_from(cookie, backend)` is
/// the frontend the socket LB translated that socket from (its reverse-translation entry), if any.
/// Returns how many sockets were ended.
pub fn end_departed(
    cgroup: &Path,
    departures: &[Departure],
    translated_from: &(dyn Fn(u64, SocketAddrV4) -> Option<SocketAddrV4> + Sync),
) -> Result<usize, UdpSocketsError> {
    let departed: HashSet<(SocketAddrV4, SocketAddrV4)> =
        departures.iter().map(|d| (d.frontend, d.backend)).collect();
    let backends: HashSet<SocketAddrV4> = departures.iter().map(|d| d.backend).collect();
    let mut ended = 0;
    for ns in namespaces(cgroup) {
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                netns::enter(&ns.display().to_string())?;
                let diag = Diag::open()?;
                let mut n = 0;
                for sock in diag.connected_udp()? {
                    if !backends.contains(&sock.peer) {
                        continue;
                    }
                    let Some(frontend) = translated_from(sock.cookie, sock.peer) else {
                        continue;
                    };
                    if departed.contains(&(frontend, sock.peer)) && diag.destroy(&sock.id)? {
                        debug!(netns = %ns.display(), %frontend, backend = %sock.peer, "ended a connected UDP socket");
                        n += 1;
                    }
                }
                Ok::<usize, UdpSocketsError>(n)
            })
            .join()
            .map_err(|_| UdpSocketsError::Thread(ns.clone()))?
        });
        match result {
            Ok(n) => ended += n,
            // The process (and its namespace) may be gone since it was listed.
            Err(UdpSocketsError::Netns(e)) => debug!(error = %e, "namespace gone"),
            Err(e) => return Err(e),
        }
    }
    Ok(ended)
}

/// One `/proc/PID/ns/net` per distinct network namespace of the processes in `cgroup`'s subtree.
fn namespaces(cgroup: &Path) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter(|l| !l.is_empty()) {
                let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
                if let Ok(meta) = std::fs::metadata(&path)
                    && seen.insert((meta.dev(), meta.ino()))
                {
                    out.push(path);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// A sock_diag netlink socket of the current thread's network namespace.
struct Diag(OwnedFd);

impl Diag {
    fn open() -> Result<Self, UdpSocketsError> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(UdpSocketsError::Diag(std::io::Error::last_os_error()));
        }
        // SAFETY: socket succeeded; nobody else owns fd.
        Ok(Diag(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, kind: u16, flags: u16, req: &DiagRequest) -> Result<(), UdpSocketsError> {
        let len = NLMSG_HDRLEN + std::mem::size_of::<DiagRequest>();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        // SAFETY: DiagRequest is repr(C) plain integers without padding bytes.
        let body = unsafe {
            std::slice::from_raw_parts(
                (req as *const DiagRequest).cast::<u8>(),
                std::mem::size_of::<DiagRequest>(),
            )
        };
        buf.extend_from_slice(body);
        // SAFETY: sending an initialised buffer of the given length.
        let rc = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if rc < 0 {
            return Err(UdpSocketsError::Diag(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receives one datagram of netlink messages.
    fn recv(&self, buf: &mut [u8]) -> Result<usize, UdpSocketsError> {
        // SAFETY: receiving into a buffer of the given length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(UdpSocketsError::Diag(std::io::Error::last_os_error()));
        }
        Ok(n as usize)
    }

    /// Every connected IPv4 UDP socket of the namespace.
    fn connected_udp(&self) -> Result<Vec<Connected>, UdpSocketsError> {
        let req = DiagRequest {
            family: libc::AF_INET as u8,
            protocol: libc::IPPROTO_UDP as u8,
            states: 1 << TCP_ESTABLISHED,
            ..DiagRequest::default()
        };
        self.send(
            SOCK_DIAG_BY_FAMILY,
            (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            &req,
        )?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, body) in messages(&buf[..n]) {
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => return Err(UdpSocketsError::Diag(netlink_error(body))),
                    SOCK_DIAG_BY_FAMILY if body.len() >= std::mem::size_of::<DiagMsgHead>() => {
                        // SAFETY: length checked; DiagMsgHead is plain integers, read unaligned.
                        let head: DiagMsgHead = unsafe { std::ptr::read_unaligned(body.as_ptr().cast()) };
                        let id = head.id;
                        out.push(Connected {
                            id,
                            cookie: u64::from(id.cookie[0]) | (u64::from(id.cookie[1]) << 32),
                            peer: SocketAddrV4::new(
                                Ipv4Addr::from(u32::from_be(id.dst[0])),
                                u16::from_be(id.dport),
                            ),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Destroys the socket `id` names; `false` when it is gone already.
    fn destroy(&self, id: &SockId) -> Result<bool, UdpSocketsError> {
        let req = DiagRequest {
            family: libc::AF_INET as u8,
            protocol: libc::IPPROTO_UDP as u8,
            states: 1 << TCP_ESTABLISHED,
            id: *id,
            ..DiagRequest::default()
        };
        self.send(SOCK_DESTROY, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, &req)?;
        let mut buf = vec![0u8; 4096];
        let n = self.recv(&mut buf)?;
        for (kind, body) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                let e = netlink_error(body);
                return match e.raw_os_error() {
                    Some(0) => Ok(true),
                    Some(libc::ENOENT) => Ok(false),
                    Some(libc::EOPNOTSUPP) => Err(UdpSocketsError::Unsupported(e)),
                    _ => Err(UdpSocketsError::Diag(e)),
                };
            }
        }
        Err(UdpSocketsError::Diag(std::io::Error::other(
            "no answer to SOCK_DESTROY",
        )))
    }
}

/// The (type, payload) of each netlink message in one datagram.
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        out.push((kind, &buf[NLMSG_HDRLEN..len]));
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or_default();
    }
    out
}

/// The errno of an `NLMSG_ERROR` payload (0: an acknowledgement).
fn netlink_error(body: &[u8]) -> std::io::Error {
    let code = body
        .get(..4)
        .map_or(-libc::EPROTO, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    std::io::Error::from_raw_os_error(-code)
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn request_and_reply_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<SockId>(), 48);
        assert_eq!(std::mem::size_of::<DiagRequest>(), 56);
    }

    #[test]
    fn a_connected_socket_of_this_namespace_is_listed_with_its_cookie_and_ended() {
        // Loopback only: a socket connected to a port nobody serves sends nothing by connecting.
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.connect("127.0.0.1:9").expect("connect");
        let local = sock.local_addr().expect("local");
        let diag = Diag::open().expect("sock_diag");
        let ours: Vec<Connected> = diag
            .connected_udp()
            .expect("dump")
            .into_iter()
            .filter(|c| u16::from_be(c.id.sport) == local.port())
            .collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].peer, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
        assert_ne!(ours[0].cookie, 0);
        assert!(diag.destroy(&ours[0].id).expect("destroy"));
        // The owner learns at its next receive; the socket is disconnected, so sending fails too.
        sock.set_nonblocking(true).expect("nonblocking");
        let err = sock.recv(&mut [0u8; 16]).expect_err("an ended socket fails");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED));
        let err = sock.send(b"x").expect_err("and has no peer any more");
        assert_eq!(err.raw_os_error(), Some(libc::EDESTADDRREQ));
    }
}
