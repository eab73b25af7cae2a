//! Synthetic Service sets, the same for every data plane under test.

use std::net::Ipv4Addr;

/// ClusterIP of Service `i` (10.96.0.0/12, never .0).
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = 0x0a60_0000u32 + 1 + i as u32;
    Ipv4Addr::from(n)
}

/// Service port used by every synthetic Service.
pub const SERVICE_PORT: u16 = 80;
