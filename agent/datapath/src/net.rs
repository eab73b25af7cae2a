//! Addresses of the pod network in the data plane's terms: pod CIDRs, overlay peers, MACs.

use std::net::Ipv4Addr;

/// The VNI flannel's VXLAN backend uses by default, and berth's wire format.
pub const VNI: u32 = 1;

/// An IPv4 prefix such as a node's `podCIDR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodCidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl std::str::FromStr for PodCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{s:?}: not an IPv4 address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
        if prefix_len > 32 {
            return Err(format!("{s:?}: prefix length over 32"));
        }
        let unmasked = PodCidr {
            network: addr,
            prefix_len,
        };
        Ok(PodCidr {
            network: Ipv4Addr::from(u32::from(addr) & u32::from(unmasked.mask())),
            prefix_len,
        })
    }
}

impl PodCidr {
    /// The netmask.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        })
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.mask()) == u32::from(self.network)
    }
}

impl std::fmt::Display for PodCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// How to reach one remote node's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub pod_cidr: PodCidr,
    /// Where VXLAN packets go (flannel's `public-ip`, else the node's InternalIP).
    pub underlay: Ipv4Addr,
    /// Destination MAC of inner frames (the remote VTEP device's MAC).
    pub vtep_mac: [u8; 6],
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC the way flannel writes it (`aa:bb:cc:dd:ee:ff`).
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
