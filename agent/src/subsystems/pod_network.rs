//! This node's pod CIDR and what follows from it: `subnet.env` (read when pods are wired), the
//! masquerade rule for pod egress, and the host's route to other nodes' pods through the VXLAN device.
//! The CIDR is the own Node's `spec.podCIDR` (allocated by the control plane at registration), else
//! `--pod-cidr` (standalone mode). It is published to the other subsystems through a `watch` channel.

use berth_datapath::{masquerade, net::PodCidr, overlay, podnet::Subnet};
use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::RETRY_INTERVAL;
use crate::source::Feed;

/// Configures the node's pod network whenever its pod CIDR changes.
pub struct PodNetwork {
    pub node_name: String,
    /// `--pod-cidr`: used while the own Node gives none.
    pub configured: Option<PodCidr>,
    pub cluster_cidr: PodCidr,
    pub state_dir: std::path::PathBuf,
    /// MTU of pod interfaces (the overlay device's, else the uplink's).
    pub pod_mtu: u32,
    pub masquerade: bool,
    /// The overlay's UDP port (exempt from connection tracking).
    pub vxlan_port: u16,
    /// The VXLAN device, when the overlay is on.
    pub overlay_dev: Option<String>,
    /// The pod CIDR as applied, for the other subsystems.
    pub applied: watch::Sender<Option<PodCidr>>,
}

impl PodNetwork {
    /// Runs forever.
    pub async fn run(self, mut nodes: Feed<Node>) {
        let mut pending = true;
        loop {
            if pending {
                let wanted = self.own_pod_cidr(&mut nodes).or(self.configured);
                pending = match wanted {
                    Some(cidr) if *self.applied.borrow() != Some(cidr) => !self.apply(cidr),
                    _ => false,
                };
            }
            let retry = tokio::time::sleep(RETRY_INTERVAL);
            tokio::select! {
                _ = nodes.changed() => pending = true,
                _ = retry, if pending => {}
            }
        }
    }

    fn own_pod_cidr(&self, nodes: &mut Feed<Node>) -> Option<PodCidr> {
        let all = nodes.snapshot()?;
        let own = all
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.node_name.as_str()))?;
        let text = own.spec.as_ref()?.pod_cidr.as_deref()?;
        match text.parse::<PodCidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, "own Node object has a bad podCIDR; ignored");
                None
            }
        }
    }

    /// Applies a new pod CIDR; returns whether all of it took (else it is retried).
    fn apply(&self, cidr: PodCidr) -> bool {
        let subnet = Subnet {
            cluster: self.cluster_cidr,
            node: cidr,
            mtu: self.pod_mtu,
            masquerade: self.masquerade,
        };
        if let Err(e) = subnet.write(&self.state_dir) {
            error!(error = %e, "cannot write subnet.env; pods cannot be wired");
            return false;
        }
        let rule = if self.masquerade {
            masquerade::install(cidr, self.cluster_cidr, self.vxlan_port)
        } else {
            masquerade::remove()
        };
        if let Err(e) = rule {
            error!(error = %e, "pod egress masquerade not applied");
            return false;
        }
        if let Some(dev) = &self.overlay_dev
            && let Err(e) = overlay::route_host_traffic(dev, cidr, self.cluster_cidr)
        {
            error!(error = %e, "the host cannot reach other nodes' pods");
            return false;
        }
        info!(pod_cidr = %cidr, masquerade = self.masquerade, "pod network configured");
        self.applied.send_replace(Some(cidr));
        true
    }
}
