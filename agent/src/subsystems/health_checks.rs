//! The health-check node ports' task: from Services and EndpointSlices ([`health_checks::desired`])
//! to one HTTP listener per port, answering kube-proxy's JSON with 200 while this node has ready
//! endpoints of the Service and 503 when it has none. Listeners open and close as Services come and
//! go; the answer changes in place.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use super::RETRY_INTERVAL;
use crate::{
    lb::health_checks::{self, HealthCheck},
    source::Inputs,
};

/// Connections answered at once per port; more wait in the listen backlog.
const CONCURRENT_ANSWERS: usize = 64;

/// How long a client may take to send its request and read the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request head read (a health checker's GET is a few hundred bytes).
const MAX_REQUEST: usize = 4096;

/// One served port.
struct Listener {
    answer: watch::Sender<HealthCheck>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The health-check node ports of this node.
pub struct HealthChecks {
    /// `spec.nodeName` of this node's endpoints.
    pub node_name: String,
    /// Where the ports listen (all addresses, as kube-proxy's default).
    pub bind: Ipv4Addr,
    listeners: BTreeMap<u16, Listener>,
    /// Ports that could not be opened, warned about once.
    refused: BTreeSet<u16>,
    /// The Services asking for a health check, recomputed when Services change: while none asks,
    /// EndpointSlice changes cost nothing here.
    asking: health_checks::Asking,
}

impl HealthChecks {
    pub fn new(node_name: String, bind: Ipv4Addr) -> Self {
        HealthChecks {
            node_name,
            bind,
            listeners: BTreeMap::new(),
            refused: BTreeSet::new(),
            asking: health_checks::Asking::new(),
        }
    }

    /// Runs forever.
    pub async fn run(mut self, mut inputs: Inputs) {
        let mut services_changed = true;
        loop {
            let complete = self.sync(&mut inputs, services_changed);
            services_changed = false;
            let retry = tokio::time::sleep(RETRY_INTERVAL * 10);
            tokio::select! {
                _ = inputs.services.changed() => services_changed = true,
                _ = inputs.endpoint_slices.changed() => {}
                _ = retry, if !complete => {}
            }
        }
    }

    /// Opens, updates and closes listeners; `false` when a port could not be opened (retried).
    fn sync(&mut self, inputs: &mut Inputs, services_changed: bool) -> bool {
        if services_changed {
            let Some(services) = inputs.services.snapshot() else {
                return true;
            };
            self.asking = health_checks::asking(&services);
        }
        if self.asking.is_empty() && self.listeners.is_empty() {
            return true;
        }
        let Some(slices) = inputs.endpoint_slices.snapshot() else {
            return true;
        };
        let wanted = health_checks::answers(&self.asking, &slices, &self.node_name);
        self.listeners.retain(|port, _| wanted.contains_key(port));
        self.refused.retain(|port| wanted.contains_key(port));
        let mut complete = true;
        for (port, check) in wanted {
            if let Some(listener) = self.listeners.get(&port) {
                listener.answer.send_if_modified(|current| {
                    let changed = *current != check;
                    *current = check;
                    changed
                });
                continue;
            }
            match open(self.bind, port) {
                Ok(socket) => {
                    info!(port, service = %format!("{}/{}", check.namespace, check.name), "health-check node port open");
                    self.refused.remove(&port);
                    let (answer, current) = watch::channel(check);
                    let task = tokio::spawn(serve(socket, current));
                    self.listeners.insert(port, Listener { answer, task });
                }
                Err(e) => {
                    if self.refused.insert(port) {
                        warn!(port, error = %e, "cannot open a health-check node port; retrying");
                    }
                    complete = false;
                }
            }
        }
        complete
    }
}

fn open(bind: Ipv4Addr, port: u16) -> std::io::Result<TcpListener> {
    let socket = std::net::TcpListener::bind((bind, port))?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket)
}

/// Accepts connections and answers each with the port's current health.
async fn serve(socket: TcpListener, current: watch::Receiver<HealthCheck>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_ANSWERS));
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!(error = %e, "health-check accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let check = current.borrow().clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(stream, &check)).await;
            drop(slot);
        });
    }
}

/// Reads the request head and writes the answer (whatever was asked: any path is the health check,
/// as kube-proxy's).
async fn answer(mut stream: TcpStream, check: &HealthCheck) -> std::io::Result<()> {
    let mut head = vec![0u8; MAX_REQUEST];
    let mut read = 0;
    while read < head.len() {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
        if head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let body = check.body();
    let (code, reason) = check.status();
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        check.local_endpoints,
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
