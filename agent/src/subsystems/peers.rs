//! The overlay peers' task: Node objects in, `BERTH_OVERLAY` out (through [`OverlayProgrammer`], which
//! owns it). Nothing is written before Nodes are listed, so a restart never drops a peer whose Node the
//! source has not delivered yet.

use berth_datapath::overlay::OverlayProgrammer;
use tracing::{info, warn};

use super::{RETRY_INTERVAL, services::Sync};
use crate::source::{Feed, Inputs};
use k8s_openapi::api::core::v1::Node;

/// Keeps the overlay map equal to the other nodes' pod CIDRs.
pub struct OverlayPeers {
    pub programmer: OverlayProgrammer,
    /// This node's name (its own Node is not a peer).
    pub node_name: String,
}

impl OverlayPeers {
    /// Runs forever.
    pub async fn run(mut self, inputs: Inputs) {
        let mut nodes = inputs.nodes;
        let mut dirty = true;
        loop {
            if dirty {
                dirty = self.sync(&mut nodes) == Sync::Failed;
            }
            let retry = tokio::time::sleep(RETRY_INTERVAL);
            tokio::select! {
                _ = nodes.changed() => dirty = true,
                _ = retry, if dirty => {}
            }
        }
    }

    fn sync(&mut self, nodes: &mut Feed<Node>) -> Sync {
        let Some(nodes) = nodes.snapshot() else {
            return Sync::NotListed;
        };
        let (peers, skipped) = crate::overlay::peers(nodes.iter().map(AsRef::as_ref), &self.node_name);
        for s in skipped {
            warn!(node = %s.node, reason = %s.reason, "node not in the overlay");
        }
        match self.programmer.apply(&peers) {
            Ok((written, removed)) => {
                if written + removed > 0 {
                    info!(peers = peers.len(), written, removed, "overlay peers synced");
                }
                Sync::Applied
            }
            Err(e) => {
                warn!(error = %e, "overlay peers not written; retrying");
                Sync::Failed
            }
        }
    }
}
