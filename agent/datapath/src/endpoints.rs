//! Keeps `BERTH_ENDPOINTS` (pod address -> host veth ifindex, pod MAC, host MAC) equal to the pods
//! wired on this node, read from the allocation records ([`crate::podnet::ipam`]) and the interfaces
//! that exist. A record whose veth is gone (pod being torn down) has no entry: its packets take the
//! stack, which drops them as it would for any unknown address.

use std::{collections::BTreeMap, net::Ipv4Addr};

use berth_common::{LocalEndpoint, ipv4_to_be, names};

use aya::maps::{HashMap, MapData};

use super::{
    PinDir,
    maps::{MapsError, op_err, open_typed},
};
use crate::{net::parse_mac, podnet::PodRecord};

/// Reads an interface's ifindex and MAC in the current network namespace (ioctl, so it is right after
/// setns, unlike sysfs, which shows the namespace it was mounted in).
pub fn interface_mac(name: &str) -> Option<(u32, [u8; 6])> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 || name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain socket for the ioctl; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: zeroed ifreq with a NUL-terminated name that fits (checked above).
    let mac = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
        let data = req.ifr_ifru.ifru_hwaddr.sa_data;
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(data.iter()) {
            *dst = *src as u8;
        }
        mac
    };
    Some((ifindex, mac))
}

/// The map entries the records call for: records whose veth exists, with a readable pod MAC.
pub fn desired(records: &[(Ipv4Addr, PodRecord)]) -> BTreeMap<Ipv4Addr, LocalEndpoint> {
    let mut out = BTreeMap::new();
    for (addr, record) in records {
        if record.host_if.is_empty() {
            continue;
        }
        let (Some((ifindex, host_mac)), Some(pod_mac)) =
            (interface_mac(&record.host_if), parse_mac(&record.pod_mac))
        else {
            continue;
        };
        out.insert(
            *addr,
            LocalEndpoint {
                ifindex,
                pod_mac,
                host_mac,
            },
        );
    }
    out
}

/// Writes the endpoints map, which it alone opens.
pub struct EndpointProgrammer {
    map: HashMap<MapData, u32, LocalEndpoint>,
    applied: BTreeMap<Ipv4Addr, LocalEndpoint>,
}

impl EndpointProgrammer {
    /// Opens the pinned map and reads back what it holds (so a restart rewrites nothing).
    pub fn restore(pins: &PinDir) -> Result<Self, MapsError> {
        let map: HashMap<MapData, u32, LocalEndpoint> = open_typed(pins, names::ENDPOINTS)?;
        let applied = map
            .iter()
            .flatten()
            .map(|(k, v)| (Ipv4Addr::from(berth_common::be_to_ipv4(k)), v))
            .collect();
        Ok(EndpointProgrammer { map, applied })
    }

    /// Writes new and changed endpoints, removes those that went. Returns (written, removed).
    pub fn apply(&mut self, desired: BTreeMap<Ipv4Addr, LocalEndpoint>) -> Result<(usize, usize), MapsError> {
        let mut written = 0;
        for (addr, ep) in &desired {
            if self.applied.get(addr) != Some(ep) {
                self.map
                    .insert(ipv4_to_be(addr.octets()), ep, 0)
                    .map_err(op_err("update", names::ENDPOINTS))?;
                written += 1;
            }
        }
        let gone: Vec<Ipv4Addr> = self
            .applied
            .keys()
            .filter(|a| !desired.contains_key(a))
            .copied()
            .collect();
        for addr in &gone {
            let _ = self.map.remove(&ipv4_to_be(addr.octets()));
        }
        self.applied = desired;
        Ok((written, gone.len()))
    }
}
