//! `/portForward/NAMESPACE/POD`: kubelet's port forwarding (`portforward.k8s.io`), what
//! `kubectl port-forward` becomes through the API server.
//!
//! The client opens two SPDY streams per forwarded connection, both with headers `port` and
//! `requestID`: `streamType: error` (the agent writes a message there if the connection fails) and
//! `streamType: data` (the connection's bytes, both ways). As kubelet does, the agent connects to
//! `localhost:PORT` inside the pod's network namespace, so ports a container binds to its loopback
//! are reachable too. The SPDY session runs on the upgraded connection (`Upgrade: SPDY/3.1`, kubectl
//! before 1.31) or inside a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
use tracing::debug;

use super::spdy::{Decoder, Encoder, Frame, PROTOCOL_ERROR};

/// The WebSocket subprotocol of kubectl 1.31+ (SPDY tunnelled in binary messages).
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol of the SPDY upgrade (`X-Stream-Protocol-Version`).
pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes per data frame towards the client.
const CHUNK: usize = 32 * 1024;

/// The upgraded connection a session runs on.
pub enum Transport {
    /// SPDY frames inside WebSocket binary messages.
    WebSocket,
    /// SPDY frames directly on the connection.
    Spdy,
}

/// What the session needs of the pod.
pub struct Target {
    /// `namespace/name`, for messages.
    pub pod: String,
    /// The pod's pinned network namespace.
    pub netns: PathBuf,
}

/// The client's streams of one forwarded connection, while they last.
struct Forward {
    /// Bytes from the client for the pod (`None`: the client closed its side).
    to_pod: mpsc::Sender<Option<Vec<u8>>>,
    task: JoinHandle<()>,
}

/// Runs a port-forwarding session until the client leaves.
pub async fn session(upgraded: Upgraded, transport: Transport, target: Target) {
    let io = TokioIo::new(upgraded);
    let (to_client, mut outgoing) = mpsc::channel::<Frame>(64);
    let (chunks_tx, mut chunks) = mpsc::channel::<Vec<u8>>(16);
    // The transport's two directions: bytes in (as chunks), frames out.
    let (reader, writer): (JoinHandle<()>, JoinHandle<()>) = match transport {
        Transport::WebSocket => {
            let ws = WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let (mut sink, mut stream) = ws.split();
            let reader = tokio::spawn(async move {
                let chunks_tx = chunks_tx;
                while let Some(Ok(m)) = stream.next().await {
                    match m {
                        Message::Binary(b) if chunks_tx.send(b.to_vec()).await.is_err() => return,
                        Message::Close(_) => return,
                        _ => {}
                    }
                }
            });
            let writer = tokio::spawn(async move {
                let Ok(mut encoder) = Encoder::new() else { return };
                while let Some(frame) = outgoing.recv().await {
                    let Ok(bytes) = encoder.encode(&frame) else {
                        continue;
                    };
                    if sink.send(Message::Binary(bytes.into())).await.is_err() {
                        return;
                    }
                }
                let _ = sink.close().await;
            });
            (reader, writer)
        }
        Transport::Spdy => {
            let (mut r, mut w) = tokio::io::split(io);
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if chunks_tx.send(buf[..n].to_vec()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let writer = tokio::spawn(async move {
                let Ok(mut encoder) = Encoder::new() else { return };
                while let Some(frame) = outgoing.recv().await {
                    let Ok(bytes) = encoder.encode(&frame) else {
                        continue;
                    };
                    if w.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                let _ = w.shutdown().await;
            });
            (reader, writer)
        }
    };

    let mut decoder = Decoder::default();
    let mut forwards: HashMap<u32, Forward> = HashMap::new();
    // Error streams by request id, until their data stream arrives.
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    'session: while let Some(chunk) = chunks.recv().await {
        decoder.feed(&chunk);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    debug!(pod = %target.pod, error = %e, "port-forward session ended: bad frame");
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { stream, headers, .. } => {
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let reply = Frame::SynReply {
                        stream,
                        fin: false,
                        headers: vec![],
                    };
                    if to_client.send(reply).await.is_err() {
                        break 'session;
                    }
                    let request = header("requestid");
                    match header("streamtype").as_str() {
                        "error" => {
                            error_streams.insert(request, stream);
                        }
                        "data" => {
                            let error_stream = error_streams.remove(&request);
                            let (to_pod, from_client) = mpsc::channel(16);
                            let task = tokio::spawn(forward(
                                header("port"),
                                target.pod.clone(),
                                target.netns.clone(),
                                stream,
                                error_stream,
                                from_client,
                                to_client.clone(),
                            ));
                            forwards.insert(stream, Forward { to_pod, task });
                        }
                        other => {
                            debug!(pod = %target.pod, stream_type = other, "unknown port-forward stream");
                            let _ = to_client
                                .send(Frame::RstStream {
                                    stream,
                                    status: PROTOCOL_ERROR,
                                })
                                .await;
                        }
                    }
                }
                Frame::Data { stream, fin, data } => {
                    if let Some(f) = forwards.get(&stream) {
                        if !data.is_empty() {
                            let _ = f.to_pod.send(Some(data)).await;
                        }
                        if fin {
                            let _ = f.to_pod.send(None).await;
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    if let Some(f) = forwards.remove(&stream) {
                        f.task.abort();
                    }
                }
                Frame::Ping { id } => {
                    let _ = to_client.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                _ => {}
            }
            forwards.retain(|_, f| !f.task.is_finished());
        }
    }
    for f in forwards.into_values() {
        f.task.abort();
    }
    reader.abort();
    drop(to_client);
    let _ = writer.await;
}

/// One forwarded connection: connects to the pod's port and copies both ways; a failure goes to the
/// error stream as kubelet words it.
async fn forward(
    port: String,
    pod: String,
    netns: PathBuf,
    data_stream: u32,
    error_stream: Option<u32>,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    to_client: mpsc::Sender<Frame>,
) {
    let fin = |stream| Frame::Data {
        stream,
        fin: true,
        data: vec![],
    };
    let connected = match port.parse::<u16>() {
        Ok(p) if p > 0 => connect_in(&netns, p).await.map_err(|e| e.to_string()),
        _ => Err(format!("invalid port {port:?}")),
    };
    let tcp = match connected {
        Ok(t) => t,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod}: {e}");
            debug!(%pod, %port, error = %e, "port-forward connection failed");
            if let Some(es) = error_stream {
                let _ = to_client
                    .send(Frame::Data {
                        stream: es,
                        fin: true,
                        data: message.into_bytes(),
                    })
                    .await;
            }
            let _ = to_client.send(fin(data_stream)).await;
            return;
        }
    };
    let (mut r, mut w) = tcp.into_split();
    let up = async move {
        while let Some(Some(bytes)) = from_client.recv().await {
            if w.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let down = {
        let to_client = to_client.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame = Frame::Data {
                            stream: data_stream,
                            fin: false,
                            data: buf[..n].to_vec(),
                        };
                        if to_client.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = to_client.send(fin(data_stream)).await;
        }
    };
    tokio::join!(up, down);
    if let Some(es) = error_stream {
        let _ = to_client.send(fin(es)).await;
    }
}

/// A TCP connection to `localhost:port` made inside the network namespace at `netns`, on a thread
/// of its own (a namespace switch is per thread, and this one ends with the connection made).
async fn connect_in(netns: &Path, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let _ = tx.send(connect_blocking(&netns, port));
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

fn connect_blocking(netns: &Path, port: u16) -> std::io::Result<std::net::TcpStream> {
    let ns = std::fs::File::open(netns)?;
    // SAFETY: setns on this thread only, with a namespace descriptor opened above.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e| {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
    })
}
