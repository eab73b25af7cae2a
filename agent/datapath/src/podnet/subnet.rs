//! The node's share of the pod network, written by the agent once it knows its pod CIDR and read when a
//! pod is wired. The file is flannel's `subnet.env` (same keys, same meaning), so tooling written for
//! flannel's CNI setup reads berth's too.

use std::{net::Ipv4Addr, path::Path};

use thiserror::Error;

use crate::net::PodCidr;

/// Errors of reading or writing `subnet.env`.
#[derive(Debug, Error)]
pub enum SubnetError {
    /// The file is missing or unreadable: the agent has not learned its pod CIDR yet.
    #[error(
        "{path}: {source} (the agent writes it once the node has a pod CIDR: is `berth-agent run` up, with --pod-cidr or a Node object with spec.podCIDR?)"
    )]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key is missing or malformed.
    #[error("{path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
}

/// What a pod needs to know about its node's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// The cluster's pod network (`FLANNEL_NETWORK`).
    pub cluster: PodCidr,
    /// This node's pod CIDR (`FLANNEL_SUBNET` gives its gateway address with the prefix length).
    pub node: PodCidr,
    /// MTU of pod interfaces (`FLANNEL_MTU`): the overlay device's MTU.
    pub mtu: u32,
    /// Whether pod egress to outside the cluster is masqueraded (`FLANNEL_IPMASQ`).
    pub masquerade: bool,
}

/// The file name inside the state directory.
pub const FILE: &str = "subnet.env";

impl Subnet {
    /// The gateway of the node's pods: the first host address of its CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.node.network) + 1)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.cluster,
            self.gateway(),
            self.node.prefix_len,
            self.mtu,
            self.masquerade
        )
    }

    /// Writes `state_dir/subnet.env` atomically if its content differs; returns whether it changed.
    pub fn write(&self, state_dir: &Path) -> Result<bool, SubnetError> {
        let path = state_dir.join(FILE);
        let text = self.render();
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(false);
        }
        let tmp = state_dir.join(format!(".{FILE}.tmp"));
        std::fs::create_dir_all(state_dir)
            .and_then(|()| std::fs::write(&tmp, &text))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| SubnetError::Write { path, source })?;
        Ok(true)
    }

    /// Reads `state_dir/subnet.env`.
    pub fn read(state_dir: &Path) -> Result<Subnet, SubnetError> {
        let path = state_dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SubnetError::Read {
            path: path.clone(),
            source,
        })?;
        Subnet::parse(&text).map_err(|message| SubnetError::Invalid { path, message })
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .ok_or_else(|| format!("{key} missing"))
        };
        let cluster: PodCidr = get("FLANNEL_NETWORK")?.parse()?;
        let node: PodCidr = get("FLANNEL_SUBNET")?.parse()?;
        let mtu = get("FLANNEL_MTU")?
            .parse()
            .map_err(|e| format!("FLANNEL_MTU: {e}"))?;
        let masquerade = get("FLANNEL_IPMASQ").is_ok_and(|v| v == "true");
        Ok(Subnet {
            cluster,
            node,
            mtu,
            masquerade,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_flannel_format() {
        let s = Subnet {
            cluster: "10.244.0.0/16".parse().expect("cidr"),
            node: "10.244.3.0/24".parse().expect("cidr"),
            mtu: 1450,
            masquerade: true,
        };
        let text = s.render();
        assert!(text.contains("FLANNEL_SUBNET=10.244.3.1/24\n"), "{text}");
        assert_eq!(Subnet::parse(&text), Ok(s));
        assert!(Subnet::parse("FLANNEL_NETWORK=10.244.0.0/16\n").is_err());
    }
}
