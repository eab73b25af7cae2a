//! The Service load balancer's task: Services and EndpointSlices in, `BERTH_FRONTENDS`, `BERTH_SLOTS`,
//! `BERTH_BACKENDS`, reverse NAT, Maglev and affinity maps out (through [`ServiceProgrammer`], which owns them), conntrack
//! garbage collection on a timer.
//!
//! Nothing is applied before both kinds are listed: the maps restored from the pins keep serving until
//! the source has said what exists. After that every change recomputes the frontends of the Services
//! it touched ([`IncrementalState`]) and the programmer writes only the difference; changes arriving
//! while an apply runs are coalesced into the next one.

use std::{net::SocketAddrV4, path::PathBuf, time::Instant};

use berth_common::{SockRevKey, be_to_ipv4, be_to_port, ipv4_to_be, port_to_be};
use berth_datapath::{
    conntrack::{self, CtTimeouts},
    programmer::ServiceProgrammer,
    udp_sockets,
};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::RETRY_INTERVAL;
use crate::{
    events::{EventSink, ServiceWarning},
    lb::{NodeInfo, incremental::IncrementalState},
    source::Inputs,
};

/// The outcome of one attempt to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// The maps hold the desired state.
    Applied,
    /// Some write failed: retried after [`RETRY_INTERVAL`].
    Failed,
    /// An input has not delivered its initial list: nothing was changed.
    NotListed,
}

/// What the Service task needs besides its inputs.
pub struct ServiceLb {
    pub programmer: ServiceProgrammer,
    pub node: NodeInfo,
    /// The desired frontends, recomputed per changed Service.
    pub state: IncrementalState,
    /// Where Warning Events about Services not programmed go (with an API server).
    pub events: Option<EventSink>,
    pub ct_gc_interval: std::time::Duration,
    pub ct_timeouts: CtTimeouts,
    /// Written after every apply (`generation frontends`), once interfaces have been scanned.
    pub status_file: Option<PathBuf>,
    /// Set by the interface task after its first scan.
    pub interfaces_scanned: watch::Receiver<bool>,
    /// Set once a complete list has been programmed (the node's Ready condition).
    pub synced: watch::Sender<bool>,
    /// The socket LB's cgroup: connected UDP sockets of its processes whose backend left are ended.
    pub sock_lb_cgroup: Option<PathBuf>,
}

impl ServiceLb {
    /// Runs forever.
    pub async fn run(mut self, mut inputs: Inputs) {
        let mut generation = 0u64;
        let mut dirty = true;
        let mut waiting_logged = false;
        let mut gc = tokio::time::interval(self.ct_gc_interval);
        gc.tick().await;
        loop {
            if dirty {
                match self.sync(&mut inputs) {
                    Sync::Applied => {
                        dirty = false;
                        generation += 1;
                        self.synced.send_replace(true);
                        self.write_status(generation).await;
                    }
                    Sync::Failed => {}
                    Sync::NotListed => {
                        if !waiting_logged {
                            info!(
                                "Services wait for the initial list; the pinned maps keep serving meanwhile"
                            );
                            waiting_logged = true;
                        }
                        dirty = false;
                    }
                }
            }
            let retry = tokio::time::sleep(RETRY_INTERVAL);
            tokio::select! {
                _ = inputs.services.changed() => dirty = true,
                _ = inputs.endpoint_slices.changed() => dirty = true,
                _ = retry, if dirty => {}
                _ = gc.tick() => self.collect_conntrack(),
            }
        }
    }

    /// One apply of the whole desired state.
    fn sync(&mut self, inputs: &mut Inputs) -> Sync {
        let (Some(services), Some(slices)) = (inputs.services.snapshot(), inputs.endpoint_slices.snapshot())
        else {
            return Sync::NotListed;
        };
        let computing = Instant::now();
        let (recomputed, skipped) = self.state.update(services, slices, &self.node);
        let desired = self.state.desired();
        for s in skipped {
            warn!(service = %s.service, reason = %s.reason, "Service not programmed");
            if let Some(events) = &self.events {
                events.warn_service(ServiceWarning {
                    service: s.service,
                    message: s.reason,
                });
            }
        }
        let compute_ms = computing.elapsed().as_millis() as u64;
        let started = Instant::now();
        match self.programmer.apply(desired, true) {
            Ok(stats) => {
                info!(
                    frontends = desired.frontends.len(),
                    written = stats.frontends_written,
                    removed = stats.frontends_removed,
                    backends_added = stats.backends_added,
                    backends_removed = stats.backends_removed,
                    recomputed,
                    compute_ms,
                    took_ms = started.elapsed().as_millis() as u64,
                    "Services synced"
                );
                if stats.frontends_written + stats.frontends_removed > 1000 {
                    // A large apply (the initial list, a relist) leaves freed parsing and
                    // computation buffers behind: hand them back to the system.
                    // SAFETY: malloc_trim only releases free memory of the allocator.
                    unsafe { libc::malloc_trim(0) };
                }
                self.end_departed_udp_sockets();
                Sync::Applied
            }
            Err(e) => {
                error!(error = %e, "Service maps not fully written; retrying");
                Sync::Failed
            }
        }
    }

    /// Ends the socket LB's connected UDP sockets to backends that left their frontend (a DNS client
    /// would otherwise keep asking a deleted pod). Runs after the maps no longer offer those backends,
    /// so a client's new socket cannot pick one again.
    fn end_departed_udp_sockets(&mut self) {
        let departures = self.programmer.take_departures();
        let Some(cgroup) = &self.sock_lb_cgroup else {
            return;
        };
        if departures.is_empty() {
            return;
        }
        let sock_rev = &self.programmer.maps().sock_rev;
        let translated_from = |cookie: u64, backend: SocketAddrV4| {
            let key = SockRevKey {
                cookie,
                addr: ipv4_to_be(backend.ip().octets()),
                port: port_to_be(backend.port()),
                pad: 0,
            };
            sock_rev
                .get(&key, 0)
                .ok()
                .map(|r| SocketAddrV4::new(be_to_ipv4(r.addr).into(), be_to_port(r.port)))
        };
        match udp_sockets::end_departed(cgroup, &departures, &translated_from) {
            Ok(0) => {}
            Ok(ended) => info!(ended, "ended connected UDP sockets of departed backends"),
            Err(e) => warn!(error = %e, "cannot end connected UDP sockets of departed backends"),
        }
    }

    fn collect_conntrack(&mut self) {
        match conntrack::collect(self.programmer.maps(), &self.ct_timeouts) {
            Ok((seen, removed)) if removed > 0 => info!(seen, removed, "conntrack GC"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "conntrack GC failed"),
        }
    }

    /// The status tells tests (and operators) that the state is live: written after attachments.
    async fn write_status(&mut self, generation: u64) {
        let Some(path) = &self.status_file else {
            return;
        };
        if self.interfaces_scanned.wait_for(|s| *s).await.is_err() {
            return;
        }
        let tmp = path.with_extension("tmp");
        let body = format!("{generation} {}\n", self.programmer.frontend_count());
        if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path)) {
            warn!(path = %path.display(), error = %e, "cannot write status file");
        }
    }
}
