//! Conntrack garbage collection: the LRU map evicts under pressure, but idle flows must go on time too
//! (a reused client port must not inherit an old backend). Timeouts follow Cilium's defaults.

use std::time::Duration;

use berth_common::{CT_F_CLOSING, CtEntry, CtKey, PROTO_TCP, names};

use super::{
    maps::{LbMaps, MapsError, op_err},
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

fn expired(k: &CtKey, v: &CtEntry, now: u64, t: &CtTimeouts) -> bool {
    let timeout = if k.proto != PROTO_TCP {
        t.udp
    } else if v.flags & CT_F_CLOSING != 0 {
        t.closing
    } else {
        t.tcp
    };
    now.saturating_sub(v.last_seen_ns) > timeout.as_nanos() as u64
}

/// Removes expired entries; returns (entries seen, entries removed).
pub fn collect(maps: &mut LbMaps, timeouts: &CtTimeouts) -> Result<(usize, usize), MapsError> {
    let now = monotonic_ns();
    let mut seen = 0;
    let mut stale = Vec::new();
    for item in maps.conntrack.iter() {
        let Ok((k, v)) = item else { continue }; // an entry evicted mid-walk
        seen += 1;
        if expired(&k, &v, now, timeouts) {
            stale.push(k);
        }
    }
    for k in &stale {
        match maps.conntrack.remove(k) {
            Ok(()) => {}
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(op_err("delete", names::CONNTRACK)(e)),
        }
    }
    Ok((seen, stale.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_tcp_expires_sooner_than_established() {
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
        assert!(!expired(&tcp, &idle_30s, now, &t));
        assert!(expired(
            &tcp,
            &CtEntry {
                flags: CT_F_CLOSING,
                ..idle_30s
            },
            now,
            &t
        ));
        assert!(!expired(&udp, &idle_30s, now, &t));
        let idle_90s = CtEntry {
            last_seen_ns: now - 90_000_000_000,
            ..Default::default()
        };
        assert!(expired(&udp, &idle_90s, now, &t));
    }
}
