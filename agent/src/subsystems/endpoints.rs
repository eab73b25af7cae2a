//! Local pods for direct delivery: `BERTH_ENDPOINTS` (through [`EndpointProgrammer`], which owns it)
//! from the pod address allocations of this node's pod CIDR and the interfaces present. Re-read when the
//! allocation directory changes, when interfaces come and go, or when the pod CIDR changes.

use std::{path::PathBuf, time::SystemTime};

use berth_datapath::{
    endpoints::{self, EndpointProgrammer},
    net::PodCidr,
    podnet::Ipam,
};
use tokio::sync::watch;
use tracing::{info, warn};

/// Keeps the local endpoints in step with the pods wired on this node.
pub struct LocalEndpoints {
    pub programmer: EndpointProgrammer,
    pub state_dir: PathBuf,
    /// How often the allocation directory is looked at.
    pub poll_interval: std::time::Duration,
}

impl LocalEndpoints {
    /// Runs forever.
    pub async fn run(
        mut self,
        mut pod_cidr: watch::Receiver<Option<PodCidr>>,
        mut interfaces: watch::Receiver<u64>,
    ) {
        let mut stamp: Option<SystemTime> = None;
        let mut force = true;
        let mut poll = tokio::time::interval(self.poll_interval);
        loop {
            tokio::select! {
                _ = pod_cidr.changed() => force = true,
                _ = interfaces.changed() => force = true,
                _ = poll.tick() => {}
            }
            let Some(cidr) = *pod_cidr.borrow_and_update() else {
                continue;
            };
            if let Some(s) = self.sync(cidr, stamp, force) {
                stamp = s;
                force = false;
            }
        }
    }

    /// Returns the allocation directory's stamp once synced (`None` if it must be retried).
    fn sync(&mut self, cidr: PodCidr, last: Option<SystemTime>, force: bool) -> Option<Option<SystemTime>> {
        let ipam = match Ipam::open(&self.state_dir, cidr) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "pod address store unreadable");
                return None;
            }
        };
        let stamp = std::fs::metadata(ipam.dir()).and_then(|m| m.modified()).ok();
        if !force && stamp.is_some() && stamp == last {
            return Some(stamp);
        }
        let records = match ipam.allocations() {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "pod address store unreadable");
                return None;
            }
        };
        match self.programmer.apply(endpoints::desired(&records)) {
            Ok((written, removed)) => {
                if written + removed > 0 {
                    info!(written, removed, "local pod endpoints synced");
                }
                Some(stamp)
            }
            Err(e) => {
                warn!(error = %e, "local pod endpoints not synced; retrying");
                None
            }
        }
    }
}
