//! Conntrack garbage collection: the LRU map evicts under pressure, but idle flows must go on time too
//! (a reused client port must not inherit an old backend). Timeouts follow Cilium's defaults.

use std::time::Duration;

use std::collections::HashMap;

use berth_common::{CT_F_CLOSING, CT_F_RST, CtEntry, CtKey, PROTO_TCP, names};

use super::{
    maps::{MapsError, ServiceMaps, op_err},
    monotonic_ns,
};

/// Idle timeouts by flow state.
#[derive(Clone, Copy, Debug)]
pub struct CtTimeouts {
    /// Established TCP.
    pub tcp: Duration,
    /// TCP after FIN or RST.
    pub closing: Duration,
    /// UDP.
    pub udp: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp: Duration::from_secs(21_600),
            closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
        }
    }
}

/// Whether a flow (its two entries, `b` absent if already gone) has been idle past its timeout. The
/// flow is judged as a whole: the newest packet of either direction counts, and it is closing only when
/// both directions sent a FIN or either sent a RST (a half-closed connection keeps the long timeout).
fn flow_expired(k: &CtKey, a: &CtEntry, b: Option<&CtEntry>, now: u64, t: &CtTimeouts) -> bool {
    let last = b.map_or(a.last_seen_ns, |b| a.last_seen_ns.max(b.last_seen_ns));
    let rst = a.flags & CT_F_RST != 0 || b.is_some_and(|b| b.flags & CT_F_RST != 0);
    let fin_both = a.flags & CT_F_CLOSING != 0 && b.is_none_or(|b| b.flags & CT_F_CLOSING != 0);
    let timeout = if k.proto != PROTO_TCP {
        t.udp
    } else if rst || fin_both {
        t.closing
    } else {
        t.tcp
    };
    now.saturating_sub(last) > timeout.as_nanos() as u64
}

/// Removes expired flows (both entries together); returns (entries seen, entries removed). An entry
/// refreshed by a packet between the walk and the delete is kept.
pub fn collect(maps: &mut ServiceMaps, timeouts: &CtTimeouts) -> Result<(usize, usize), MapsError> {
    let now = monotonic_ns();
    let entries: HashMap<CtKey, CtEntry> = maps.conntrack.iter().flatten().collect();
    let mut stale = Vec::new();
    for (k, v) in &entries {
        let partner_key = k.partner(v);
        let partner = entries.get(&partner_key);
        if flow_expired(k, v, partner, now, timeouts) {
            stale.push((*k, v.last_seen_ns));
        }
    }
    let mut removed = 0;
    for (k, seen) in &stale {
        // Re-read: skip an entry that saw traffic since the walk.
        match maps.conntrack.get(k, 0) {
            Ok(current) if current.last_seen_ns == *seen => {}
            _ => continue,
        }
        match maps.conntrack.remove(k) {
            Ok(()) => removed += 1,
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(op_err("delete", names::CONNTRACK)(e)),
        }
    }
    Ok((entries.len(), removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_needs_both_fins_or_a_reset() {
        let t = CtTimeouts::default();
        let tcp = CtKey {
            proto: PROTO_TCP,
            ..Default::default()
        };
        let udp = CtKey {
            proto: berth_common::PROTO_UDP,
            ..Default::default()
        };
        let now = 100 * 1_000_000_000_000;
        let idle_30s = CtEntry {
            last_seen_ns: now - 30_000_000_000,
            ..Default::default()
        };
        let fin = CtEntry {
            flags: CT_F_CLOSING,
            ..idle_30s
        };
        let rst = CtEntry {
            flags: CT_F_CLOSING | CT_F_RST,
            ..idle_30s
        };
        assert!(
            !flow_expired(&tcp, &idle_30s, Some(&idle_30s), now, &t),
            "established"
        );
        assert!(
            !flow_expired(&tcp, &fin, Some(&idle_30s), now, &t),
            "half-closed keeps the long timeout"
        );
        assert!(flow_expired(&tcp, &fin, Some(&fin), now, &t), "both FINs");
        assert!(
            flow_expired(&tcp, &idle_30s, Some(&rst), now, &t),
            "a reset closes"
        );
        assert!(!flow_expired(&udp, &idle_30s, None, now, &t));
        let idle_90s = CtEntry {
            last_seen_ns: now - 90_000_000_000,
            ..Default::default()
        };
        assert!(flow_expired(&udp, &idle_90s, None, now, &t));
        // The flow's newest packet counts: a busy reply direction keeps an idle forward entry.
        assert!(!flow_expired(&udp, &idle_90s, Some(&idle_30s), now, &t));
    }
}
