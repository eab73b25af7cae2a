//! Addresses and ports the cluster hands out: Service ClusterIPs (10.96.0.0/12), NodePorts
//! (30000-32767) and Node podCIDRs (/24s of 10.244.0.0/16).
//!
//! Each handed-out value is a reservation key in the store (`/registry/allocations/<pool>/<value>`,
//! holding its owner), taken with the store's create-if-absent. So two writers, in one process or in
//! several control planes over one etcd, never get the same value, with no lock beyond the store's.
//! A reservation whose object never got written (a failed create, a crash in between) is found by
//! [`repair`] at start, which is what kube-apiserver's repair controllers do for its bitmaps.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::status::ApiError;
use crate::store::{Store, StoreError};

/// A range of values handed out one at a time.
#[derive(Debug)]
pub struct Pool {
    /// Store folder of the reservations.
    pub name: &'static str,
    /// Lowest and highest value handed out (inclusive).
    pub first: u32,
    pub last: u32,
    /// Start looking at a random value (addresses and ports, as kube-apiserver does) or at the lowest
    /// (pod CIDRs, as the node IPAM controller does).
    pub random_start: bool,
    /// How values are written in objects.
    pub format: fn(u32) -> String,
    /// How objects' values are read back (`None`: not of this pool).
    pub parse: fn(&str) -> Option<u32>,
}

fn ip_format(v: u32) -> String {
    Ipv4Addr::from(v).to_string()
}

fn ip_parse(s: &str) -> Option<u32> {
    s.parse::<Ipv4Addr>().ok().map(u32::from)
}

fn port_format(v: u32) -> String {
    v.to_string()
}

fn port_parse(s: &str) -> Option<u32> {
    s.parse().ok()
}

fn cidr_format(v: u32) -> String {
    format!("10.244.{v}.0/24")
}

fn cidr_parse(s: &str) -> Option<u32> {
    let third = s.strip_prefix("10.244.")?.strip_suffix(".0/24")?;
    third.parse().ok().filter(|v: &u32| *v < 256)
}

/// The address of the `kubernetes` Service: the first of the range, as every cluster has it.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// ClusterIPs: 10.96.0.0/12 without its network and broadcast addresses.
pub const CLUSTER_IPS: Pool = Pool {
    name: "clusterips",
    first: 0x0a60_0001,
    last: 0x0a6f_fffe,
    random_start: true,
    format: ip_format,
    parse: ip_parse,
};

/// NodePorts: 30000-32767, kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORTS: Pool = Pool {
    name: "nodeports",
    first: 30000,
    last: 32767,
    random_start: true,
    format: port_format,
    parse: port_parse,
};

/// Pod CIDRs: the 256 /24s of flannel's 10.244.0.0/16.
pub const POD_CIDRS: Pool = Pool {
    name: "podcidrs",
    first: 0,
    last: 255,
    random_start: false,
    format: cidr_format,
    parse: cidr_parse,
};

fn reservation_key(pool: &Pool, value: u32) -> String {
    format!("/registry/allocations/{}/{value}", pool.name)
}

fn owner_of(store: &Store, pool: &Pool, value: u32) -> Option<String> {
    let kv = store.get(&reservation_key(pool, value))?;
    let doc: Value = serde_json::from_slice(&kv.value).ok()?;
    doc.get("owner").and_then(Value::as_str).map(str::to_string)
}

fn random_u32() -> u32 {
    u32::from_le_bytes(super::names::random_bytes::<4>())
}

/// Reserves `value` for `owner` (an object path such as `services/default/web`). Already reserved
/// for the same owner counts as reserved; for another owner it is a 422 in the API server's words.
pub fn reserve(store: &Store, pool: &Pool, value: u32, owner: &str, field: &str) -> Result<(), ApiError> {
    let shown = (pool.format)(value);
    if !(pool.first..=pool.last).contains(&value) {
        return Err(ApiError::invalid_field(
            field,
            &format!(
                "Invalid value: \"{shown}\": provided value is not in the valid range ({} - {})",
                (pool.format)(pool.first),
                (pool.format)(pool.last)
            ),
        ));
    }
    let body = json!({"owner": owner}).to_string().into_bytes();
    match store.create(&reservation_key(pool, value), body) {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) if owner_of(store, pool, value).as_deref() == Some(owner) => {
            Ok(())
        }
        Err(StoreError::AlreadyExists { .. }) => Err(ApiError::invalid_field(
            field,
            &format!(
                "Invalid value: \"{shown}\": provided {} is already allocated",
                pool.what()
            ),
        )),
        Err(e) => Err(ApiError::from_store(e, "allocations", &shown)),
    }
}

impl Pool {
    fn what(&self) -> &'static str {
        match self.name {
            "clusterips" => "IP",
            "nodeports" => "port",
            _ => "range",
        }
    }
}

/// Hands out a free value of `pool` to `owner`.
pub fn allocate(store: &Store, pool: &Pool, owner: &str, field: &str) -> Result<u32, ApiError> {
    let size = pool.last - pool.first + 1;
    let taken: std::collections::HashSet<u32> = store
        .list(&format!("/registry/allocations/{}/", pool.name), None, None, 0)
        .map_err(|e| ApiError::from_store(e, "allocations", pool.name))?
        .items
        .iter()
        .filter_map(|kv| kv.key.rsplit('/').next().and_then(|v| v.parse().ok()))
        .collect();
    let start = if pool.random_start { random_u32() % size } else { 0 };
    for i in 0..size {
        let value = pool.first + (start + i) % size;
        if taken.contains(&value) {
            continue;
        }
        // Another writer may take it between the list and here: the create decides.
        let body = json!({"owner": owner}).to_string().into_bytes();
        match store.create(&reservation_key(pool, value), body) {
            Ok(_) => return Ok(value),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, "allocations", pool.name)),
        }
    }
    Err(ApiError::invalid_field(
        field,
        &format!(
            "Internal error: range is full: no {} left in {} - {}",
            pool.what(),
            (pool.format)(pool.first),
            (pool.format)(pool.last)
        ),
    ))
}

/// Gives `value` back, if `owner` holds it.
pub fn release(store: &Store, pool: &Pool, value: u32, owner: &str) {
    if owner_of(store, pool, value).as_deref() == Some(owner) {
        let _ = store.delete(&reservation_key(pool, value), None);
    }
}

/// Drops reservations whose owner does not exist or no longer holds the value, as `holds(owner,
/// value)` tells. Returns how many went.
pub fn repair(store: &Store, pool: &Pool, holds: impl Fn(&str, &str) -> bool) -> usize {
    let Ok(page) = store.list(&format!("/registry/allocations/{}/", pool.name), None, None, 0) else {
        return 0;
    };
    let mut dropped = 0;
    for kv in page.items {
        let value = kv.key.rsplit('/').next().and_then(|v| v.parse::<u32>().ok());
        let owner = serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|d| d.get("owner").and_then(Value::as_str).map(str::to_string));
        let keep = match (value, owner) {
            (Some(v), Some(o)) => holds(&o, &(pool.format)(v)),
            _ => false,
        };
        if !keep && store.delete(&kv.key, Some(kv.mod_revision)).is_ok() {
            dropped += 1;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        for pool in [&CLUSTER_IPS, &NODE_PORTS, &POD_CIDRS] {
            for v in [pool.first, pool.last] {
                assert_eq!((pool.parse)(&(pool.format)(v)), Some(v), "{}", pool.name);
            }
        }
        assert_eq!(ip_format(CLUSTER_IPS.first), KUBERNETES_SERVICE_IP.to_string());
        assert_eq!(ip_format(CLUSTER_IPS.last), "10.111.255.254");
        assert_eq!(cidr_parse("10.245.0.0/24"), None);
    }
}
