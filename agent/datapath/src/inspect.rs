//! `berth-agent lb list` / `ct list`: the pinned maps in words, the way `cilium bpf lb list` shows them.
//! Reads the pins only; works whether or not the agent runs.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use berth_common::{
    BACKEND_F_LOCAL, CT_F_CLOSING, CT_F_MASQ, CT_F_NH_PEER, CT_F_NODEPORT, CT_F_REPLY, CT_F_SNAT,
    FrontendHeader, INLINE_SLOTS, SVC_F_AFFINITY, SVC_F_LOCAL_DROP, SVC_F_MAGLEV, SVC_F_NODEPORT, SVC_F_SNAT,
    be_to_ipv4, be_to_port, counter,
};

use crate::{
    maps::{LbMaps, MapsError},
    monotonic_ns,
    service::Protocol,
};

fn endpoint(addr: u32, port: u16) -> String {
    format!("{}:{}", Ipv4Addr::from(be_to_ipv4(addr)), be_to_port(port))
}

fn proto(p: u8) -> String {
    Protocol::from_number(p).map_or_else(|| p.to_string(), |p| p.to_string())
}

fn service_flags(v: &FrontendHeader) -> String {
    let mut f = vec![
        if v.flags & SVC_F_NODEPORT != 0 {
            "NodePort"
        } else {
            "ClusterIP"
        }
        .to_string(),
    ];
    if v.flags & SVC_F_SNAT != 0 {
        f.push("snat".into());
    }
    if v.flags & SVC_F_LOCAL_DROP != 0 {
        f.push("local-drop".into());
    }
    if v.flags & SVC_F_MAGLEV != 0 {
        f.push("maglev".into());
    }
    if v.flags & SVC_F_AFFINITY != 0 {
        f.push(format!("affinity={}s", v.affinity_timeout));
    }
    f.join(",")
}

/// Services and their backends.
pub fn services(maps: &LbMaps) -> Result<String, MapsError> {
    let mut headers = BTreeMap::new();
    let mut slots: BTreeMap<(u32, u16, u8), BTreeMap<u32, u32>> = BTreeMap::new();
    for item in maps.lb.frontends.iter() {
        let (k, v) = item.map_err(crate::maps::op_err("iterate", berth_common::names::FRONTENDS))?;
        let inline = v.slots.iter().enumerate().filter(|(_, s)| s.backend_id != 0);
        slots
            .entry((k.addr, k.port, k.proto))
            .or_default()
            .extend(inline.map(|(i, s)| (i as u32 + 1, s.backend_id)));
        headers.insert((k.addr, k.port, k.proto), v.header);
    }
    for item in maps.lb.slots.iter() {
        let (k, v) = item.map_err(crate::maps::op_err("iterate", berth_common::names::SLOTS))?;
        if k.slot as usize > INLINE_SLOTS {
            let f = k.frontend;
            slots
                .entry((f.addr, f.port, f.proto))
                .or_default()
                .insert(k.slot, v.backend_id);
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<24} {:<6} {:<34} BACKENDS", "FRONTEND", "ID", "FLAGS");
    for ((addr, port, p), hdr) in &headers {
        let mut backends = Vec::new();
        for (slot, id) in slots.get(&(*addr, *port, *p)).into_iter().flatten() {
            let state = if *slot <= hdr.count as u32 {
                "active"
            } else if *slot <= hdr.count as u32 + hdr.terminating as u32 {
                "terminating"
            } else {
                "stale"
            };
            let text = match maps.lb.backends.get(id, 0) {
                Ok(b) => format!(
                    "{} ({state}{}) #{id}",
                    endpoint(b.addr, b.port),
                    if b.flags & BACKEND_F_LOCAL != 0 {
                        ", local"
                    } else {
                        ""
                    }
                ),
                Err(_) => format!("#{id} (missing)"),
            };
            backends.push(text);
        }
        if backends.is_empty() {
            backends.push("(none: new flows are refused)".into());
        }
        let _ = writeln!(
            out,
            "{:<24} {:<6} {:<34} {}",
            format!("{}/{}", endpoint(*addr, *port), proto(*p)),
            hdr.rev_nat_id,
            service_flags(hdr),
            backends.join(", ")
        );
    }
    Ok(out)
}

/// Conntrack entries (newest first) and the data-path counters.
pub fn conntrack(maps: &LbMaps) -> String {
    let now = monotonic_ns();
    let mut rows: Vec<(u64, String)> = Vec::new();
    for (k, v) in maps.lb.conntrack.iter().flatten() {
        let mut flags = Vec::new();
        for (bit, name) in [
            (CT_F_REPLY, "reply"),
            (CT_F_CLOSING, "closing"),
            (CT_F_NODEPORT, "nodeport"),
            (CT_F_SNAT, "snat"),
            (CT_F_NH_PEER, "to-pod"),
            (CT_F_MASQ, "masquerade"),
        ] {
            if v.flags & bit != 0 {
                flags.push(name);
            }
        }
        let age = now.saturating_sub(v.last_seen_ns) / 1_000_000_000;
        rows.push((
            v.last_seen_ns,
            format!(
                "{} {} -> {} => {} -> {} backend=#{} frontend=#{} idle={}s [{}]",
                proto(k.proto),
                endpoint(k.saddr, k.sport),
                endpoint(k.daddr, k.dport),
                endpoint(v.nat_saddr, v.nat_sport),
                endpoint(v.nat_daddr, v.nat_dport),
                v.backend_id,
                v.rev_nat_id,
                age,
                flags.join(",")
            ),
        ));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out = String::new();
    for (_, r) in &rows {
        let _ = writeln!(out, "{r}");
    }
    let _ = writeln!(out, "{} entries", rows.len());
    for (index, name) in [
        (counter::CT_HIT, "ct_hit"),
        (counter::NEW_FLOW, "new_flow"),
        (counter::REJECTED, "rejected"),
        (counter::SOCK_TRANSLATED, "sock_translated"),
        (counter::ERRORS, "errors"),
        (counter::LOCAL_DELIVERED, "local_delivered"),
        (counter::OVERLAY_ENCAP, "overlay_encap"),
        (counter::OVERLAY_DECAP, "overlay_decap"),
        (counter::MASQUERADED, "masqueraded"),
        (counter::HOST_REPLY, "host_reply"),
        (counter::ICMP_ERRORS, "icmp_errors"),
        (counter::OVERLAY_DECAP_GSO, "overlay_decap_gso"),
    ] {
        let _ = writeln!(out, "counter {name} = {}", maps.counter(index));
    }
    out
}

/// This node's pods as the data plane delivers to them, and the overlay peers.
pub fn pod_network(maps: &LbMaps) -> String {
    use std::fmt::Write;
    let mac = crate::net::format_mac;
    let mut out = String::new();
    let mut pods: Vec<_> = maps.endpoints.iter().flatten().collect();
    pods.sort_by_key(|(k, _)| u32::from_be(*k));
    for (addr, ep) in pods {
        let _ = writeln!(
            out,
            "pod {} ifindex={} pod-mac={} host-mac={}",
            std::net::Ipv4Addr::from(be_to_ipv4(addr)),
            ep.ifindex,
            mac(&ep.pod_mac),
            mac(&ep.host_mac)
        );
    }
    for (key, peer) in maps.overlay.iter().flatten() {
        let _ = writeln!(
            out,
            "peer {}/{} via {} vtep-mac={}",
            std::net::Ipv4Addr::from(be_to_ipv4(key.data())),
            key.prefix_len(),
            std::net::Ipv4Addr::from(be_to_ipv4(peer.underlay)),
            mac(&peer.vtep_mac)
        );
    }
    out
}
