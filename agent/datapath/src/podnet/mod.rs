//! Pod addressing: each pod gets an address from the node's pod CIDR ([`ipam`]), and a veth pair whose
//! pod end is `eth0` in the pod's network namespace.
//!
//! Routed, not bridged (see ARCHITECTURE.md, "Pod addressing"): the pod holds its address as a /32 and
//! a default route via the node's gateway address (the CIDR's `.1`), which the host side of every pod's
//! veth holds; the host routes each pod's /32 to its veth. No bridge, no shared L2 domain between pods:
//! every packet a pod sends enters berth's TC program on its own veth, which is where the data plane
//! decides (Service, local pod, overlay, stack), and a pod cannot ARP-spoof its neighbours.
//!
//! `add` and `del` are idempotent (a runtime may retry them) and safe to run while the agent runs: the
//! agent picks the records up and programs delivery into the pod ([`crate::datapath::endpoints`]).

pub mod ipam;
pub mod subnet;

use std::{net::Ipv4Addr, path::Path};

use serde::Serialize;
use thiserror::Error;

use crate::{
    net::format_mac,
    netlink::{self, NetlinkError},
};
pub use ipam::{Ipam, IpamError, PodRecord};
pub use subnet::{Subnet, SubnetError};

/// Errors of wiring or unwiring a pod.
#[derive(Debug, Error)]
pub enum PodNetError {
    /// The node's subnet is not known yet.
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    /// Address allocation failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// Creating or configuring the veth pair failed (the address is released again).
    #[error(transparent)]
    Link(#[from] NetlinkError),
    /// The pod's network namespace does not exist.
    #[error("network namespace {0:?} does not exist (create it first, e.g. `ip netns add`)")]
    NoNetns(String),
    /// The pod's interface MAC could not be read back.
    #[error("cannot read the MAC of {0} in the pod's namespace")]
    Mac(String),
}

/// The result of wiring a pod (printed as JSON by `berth-agent pod-net add`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodAddress {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub host_if: String,
    pub pod_mac: String,
    pub mtu: u32,
}

/// Name of the host side of a pod's veth: `vp` + 10 hex digits of a hash of the pod id (stable, so
/// a retried `add` finds the pair it made; 12 characters, under IFNAMSIZ).
pub fn host_if_name(pod: &str) -> String {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("vp{:010x}", h & 0xff_ffff_ffff)
}

/// Gives `pod` an address and a veth pair into the network namespace `netns` (an `ip netns` name or
/// the path of a pinned namespace),
/// with `ifname` inside. Run in the node's network namespace.
pub fn add(state_dir: &Path, pod: &str, netns: &str, ifname: &str) -> Result<PodAddress, PodNetError> {
    if !crate::netns::path(netns).exists() {
        return Err(PodNetError::NoNetns(netns.to_string()));
    }
    let subnet = Subnet::read(state_dir)?;
    let ipam = Ipam::open(state_dir, subnet.node)?;
    let addr = ipam.allocate(pod, netns)?;
    match wire(&subnet, pod, netns, ifname, addr) {
        Ok(wired) => {
            ipam.update(
                addr,
                &PodRecord {
                    pod: pod.to_string(),
                    netns: netns.to_string(),
                    host_if: wired.host_if.clone(),
                    pod_mac: wired.pod_mac.clone(),
                },
            )?;
            Ok(wired)
        }
        Err(e) => {
            // Leave nothing half-made: the pair (if any) and the address go.
            let _ = remove_pair(&host_if_name(pod));
            let _ = ipam.release(pod);
            Err(e)
        }
    }
}

fn wire(
    subnet: &Subnet,
    pod: &str,
    netns: &str,
    ifname: &str,
    addr: Ipv4Addr,
) -> Result<PodAddress, PodNetError> {
    let host_if = host_if_name(pod);
    let gateway = subnet.gateway();
    let mtu = subnet.mtu;
    let ns_path = crate::netns::path(netns);
    let ns_file = std::fs::File::open(&ns_path).map_err(|_| PodNetError::NoNetns(netns.to_string()))?;
    let ns_fd = std::os::fd::AsRawFd::as_raw_fd(&ns_file);
    // The node's side: the pair (a retried add finds the first attempt's and starts over), the gateway
    // address on the host end, the pod's /32 routed to it.
    netlink::run(None, |nl| {
        let host_if = host_if.clone();
        async move {
            if let Some(old) = nl.link(&host_if).await? {
                nl.del_link(old.index).await?;
            }
            nl.add_veth(&host_if, ifname, ns_fd, mtu).await?;
            let host = nl.require(&host_if).await?;
            nl.set_link(host.index, true, None, None).await?;
            nl.add_addr(host.index, gateway, 32).await?;
            nl.replace_route(addr, 32, host.index, Some(gateway), None).await
        }
    })?;
    // The pod's side: its /32, a default route via the gateway on-link, loopback up.
    let pod_mac = netlink::run(Some(netns), |nl| async move {
        let lo = nl.require("lo").await?;
        nl.set_link(lo.index, true, None, None).await?;
        let dev = nl.require(ifname).await?;
        nl.add_addr(dev.index, addr, 32).await?;
        nl.set_link(dev.index, true, None, None).await?;
        nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, dev.index, None, Some(gateway))
            .await?;
        Ok(dev.mac)
    })?
    .map(|m| format_mac(&m))
    .ok_or_else(|| PodNetError::Mac(ifname.into()))?;
    drop(ns_file);
    tracing::info!(pod, %addr, host_if, "pod wired");
    Ok(PodAddress {
        ip: addr,
        gateway,
        host_if,
        pod_mac,
        mtu: subnet.mtu,
    })
}

/// Deletes the host end of a pod's veth pair (the pod end goes with it), if it exists.
fn remove_pair(host_if: &str) -> Result<(), PodNetError> {
    netlink::run(None, |nl| async move {
        if let Some(link) = nl.link(host_if).await? {
            nl.del_link(link.index).await?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Removes the veth pair of `pod` and releases its address; returns the address it had. Deleting a pod
/// that has nothing is not an error (the runtime may retry).
pub fn del(state_dir: &Path, pod: &str) -> Result<Option<Ipv4Addr>, PodNetError> {
    let subnet = Subnet::read(state_dir)?;
    let ipam = Ipam::open(state_dir, subnet.node)?;
    remove_pair(&host_if_name(pod))?;
    Ok(ipam.release(pod)?.map(|(addr, _)| addr))
}

#[cfg(test)]
mod tests {
    use super::host_if_name;

    #[test]
    fn host_interface_names_are_stable_and_short() {
        let a = host_if_name("default/web-1");
        assert_eq!(a, host_if_name("default/web-1"));
        assert_ne!(a, host_if_name("default/web-2"));
        assert!(a.len() <= 15 && a.starts_with("vp"), "{a}");
    }
}
