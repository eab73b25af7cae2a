//! This node's pod CIDR and what follows from it: `subnet.env` (read when pods are wired), the
//! masquerade rule for pod egress, and the host's route to other nodes' pods through the VXLAN device.
//! The CIDR is the own Node's `spec.podCIDR` (allocated by the control plane at registration), else
//! `--pod-cidr` (standalone mode). It is published to the other subsystems through a `watch` channel.

use berth_datapath::{
    masquerade::{self, MasqueradeMode, Nft},
    net::PodCidr,
    overlay,
    podnet::Subnet,
};
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
    /// Who masquerades: in eBPF mode the programs do (the agent sets their flag) and the nftables
    /// table is removed.
    pub masquerade_mode: MasqueradeMode,
    /// Applies the masquerade ruleset (`nft`; a recording in tests).
    pub nft: Box<dyn Nft>,
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
        let rule = if self.masquerade && self.masquerade_mode == MasqueradeMode::Nftables {
            masquerade::install(self.nft.as_ref(), cidr, self.cluster_cidr, self.vxlan_port)
        } else {
            masquerade::remove(self.nft.as_ref())
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
        info!(pod_cidr = %cidr, masquerade = self.masquerade, mode = ?self.masquerade_mode, "pod network configured");
        self.applied.send_replace(Some(cidr));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use berth_datapath::cmd::CmdError;

    use super::*;

    /// Records the rulesets applied; fails while `fail` is set.
    #[derive(Clone, Default)]
    struct RecordingNft {
        applied: Arc<Mutex<Vec<String>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl Nft for RecordingNft {
        fn apply(&self, ruleset: &str) -> Result<(), CmdError> {
            if *self.fail.lock().expect("lock") {
                return Err(CmdError {
                    command: "nft -f -".into(),
                    message: "Operation not permitted".into(),
                });
            }
            self.applied.lock().expect("lock").push(ruleset.to_string());
            Ok(())
        }
    }

    fn pod_network(nft: &RecordingNft, masquerade: bool, dir: &std::path::Path) -> PodNetwork {
        PodNetwork {
            node_name: "n1".into(),
            configured: None,
            cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
            state_dir: dir.to_path_buf(),
            pod_mtu: 1450,
            masquerade,
            masquerade_mode: MasqueradeMode::Nftables,
            nft: Box::new(nft.clone()),
            vxlan_port: 4789,
            overlay_dev: None,
            applied: watch::channel(None).0,
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-podnet-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_new_pod_cidr_replaces_the_masquerade_rule_for_it() {
        let dir = scratch("masq");
        let nft = RecordingNft::default();
        let net = pod_network(&nft, true, &dir);
        assert!(net.apply("10.244.3.0/24".parse().expect("cidr")));
        assert!(net.apply("10.244.7.0/24".parse().expect("cidr")));
        let applied = nft.applied.lock().expect("lock").clone();
        assert_eq!(applied.len(), 2);
        for (ruleset, cidr) in applied.iter().zip(["10.244.3.0/24", "10.244.7.0/24"]) {
            // Replaced in one transaction: the old table goes in the same ruleset.
            assert!(ruleset.contains("delete table ip berth"), "{ruleset}");
            assert!(
                ruleset.contains(&format!("ip saddr {cidr} ip daddr != 10.244.0.0/16")),
                "{ruleset}"
            );
            assert!(ruleset.contains("udp dport 4789 notrack"), "{ruleset}");
        }
        assert_eq!(
            *net.applied.borrow(),
            Some("10.244.7.0/24".parse().expect("cidr"))
        );
        let env = std::fs::read_to_string(dir.join("subnet.env")).expect("subnet.env");
        assert!(env.contains("FLANNEL_SUBNET=10.244.7.1/24"), "{env}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn without_masquerade_the_table_is_removed() {
        let dir = scratch("nomasq");
        let nft = RecordingNft::default();
        let net = pod_network(&nft, false, &dir);
        assert!(net.apply("10.244.3.0/24".parse().expect("cidr")));
        let applied = nft.applied.lock().expect("lock").clone();
        assert_eq!(
            applied,
            vec!["table ip berth {}\ndelete table ip berth\n".to_string()]
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn with_ebpf_masquerade_the_table_is_removed() {
        let dir = scratch("ebpfmasq");
        let nft = RecordingNft::default();
        let net = PodNetwork {
            masquerade_mode: MasqueradeMode::Ebpf,
            ..pod_network(&nft, true, &dir)
        };
        assert!(net.apply("10.244.3.0/24".parse().expect("cidr")));
        let applied = nft.applied.lock().expect("lock").clone();
        assert_eq!(
            applied,
            vec!["table ip berth {}\ndelete table ip berth\n".to_string()]
        );
        let env = std::fs::read_to_string(dir.join("subnet.env")).expect("subnet.env");
        assert!(env.contains("FLANNEL_IPMASQ=true"), "{env}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failed_rule_is_not_reported_applied_so_it_is_retried() {
        let dir = scratch("fail");
        let nft = RecordingNft::default();
        *nft.fail.lock().expect("lock") = true;
        let net = pod_network(&nft, true, &dir);
        assert!(!net.apply("10.244.3.0/24".parse().expect("cidr")));
        assert_eq!(
            *net.applied.borrow(),
            None,
            "other subsystems must not see it yet"
        );
        *nft.fail.lock().expect("lock") = false;
        assert!(net.apply("10.244.3.0/24".parse().expect("cidr")));
        assert_eq!(nft.applied.lock().expect("lock").len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}
