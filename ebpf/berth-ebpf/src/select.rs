//! Backend choice for a new flow: session affinity first, then the frontend's Maglev table or a
//! uniformly random ready backend; terminating backends only when no ready backend is left.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns};
use berth_common::{
    AffinityKey, AffinityValue, Backend, FrontendHeader, FrontendKey, FrontendValue, INLINE_SLOTS,
    MAGLEV_TABLE_SIZE, SVC_F_AFFINITY, SVC_F_MAGLEV, SlotKey,
};

use crate::maps::{AFFINITY, BACKENDS, MAGLEV, SLOTS};

/// The backend picked for a flow.
#[derive(Clone, Copy)]
pub struct Choice {
    pub backend_id: u32,
    pub backend: Backend,
}

/// A 32-bit mix of the flow tuple (murmur3 finaliser steps), used to index Maglev tables so that every
/// node maps the same flow to the same backend.
#[inline(always)]
pub fn flow_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = saddr ^ daddr.rotate_left(16) ^ (((sport as u32) << 16) | dport as u32) ^ proto as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline(always)]
fn backend(id: u32) -> Option<Choice> {
    // SAFETY: the value is copied out at once; a concurrent update can only replace it whole.
    let backend = unsafe { *BACKENDS.get(id)? };
    Some(Choice {
        backend_id: id,
        backend,
    })
}

#[inline(always)]
fn affinity_hit(key: &AffinityKey, hdr: &FrontendHeader, now: u64) -> Option<Choice> {
    let entry = AFFINITY.get_ptr_mut(key)?;
    // SAFETY: pointer from a successful lookup; fields are plain integers.
    let entry = unsafe { &mut *entry };
    if now.saturating_sub(entry.last_used_ns) > hdr.affinity_timeout as u64 * 1_000_000_000 {
        return None;
    }
    let choice = backend(entry.backend_id)?;
    entry.last_used_ns = now;
    Some(choice)
}

/// Backend slot `slot` (1-based) of frontend `key` with value `value`: inline, or in `BERTH_SLOTS`.
/// `None` when it is not there (the agent shrank the frontend between our reads).
#[inline(always)]
fn slot(key: &FrontendKey, value: &FrontendValue, slot: u32) -> Option<Choice> {
    let s = if slot as usize <= INLINE_SLOTS {
        // black_box keeps the bounds check the verifier needs (LLVM could fold it with the one above).
        let i = core::hint::black_box((slot as usize).wrapping_sub(1));
        *value.slots.get(i)?
    } else {
        // SAFETY: copied out at once.
        unsafe { *SLOTS.get(&SlotKey { frontend: *key, slot })? }
    };
    if s.backend_id == 0 {
        return None;
    }
    Some(Choice {
        backend_id: s.backend_id,
        backend: s.backend,
    })
}

/// Chooses a backend for a new flow of the frontend `key` with value `value` (read in place: the map
/// frees a replaced value only after the program ends). `client` identifies the client for affinity;
/// `hash` is the flow hash for Maglev. `None`: no backend at all.
#[inline(always)]
pub fn pick(key: &FrontendKey, value: &FrontendValue, client: u64, hash: u32) -> Option<Choice> {
    let hdr = &value.header;
    let affinity = hdr.flags & SVC_F_AFFINITY != 0;
    let now = if affinity {
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        0
    };
    let aff_key = AffinityKey {
        client,
        rev_nat_id: hdr.rev_nat_id,
        pad: 0,
    };
    if affinity && let Some(choice) = affinity_hit(&aff_key, hdr, now) {
        return Some(choice);
    }

    let choice = if hdr.count > 0 && hdr.flags & SVC_F_MAGLEV != 0 {
        // SAFETY: lookup result copied field by field; the table is replaced whole by the agent.
        let table = unsafe { MAGLEV.get(hdr.rev_nat_id)? };
        // black_box keeps the bounds check: LLVM knows `% M < M` and would drop it, the verifier doesn't.
        let idx = core::hint::black_box((hash % MAGLEV_TABLE_SIZE as u32) as usize);
        if idx >= MAGLEV_TABLE_SIZE {
            return None;
        }
        backend(table.backends[idx])?
    } else {
        let (n, first) = if hdr.count > 0 {
            (hdr.count as u32, 1)
        } else if hdr.terminating > 0 {
            (hdr.terminating as u32, hdr.count as u32 + 1)
        } else {
            return None;
        };
        slot(key, value, first + unsafe { bpf_get_prandom_u32() } % n)?
    };

    if affinity {
        let value = AffinityValue {
            backend_id: choice.backend_id,
            pad: 0,
            last_used_ns: now,
        };
        let _ = AFFINITY.insert(&aff_key, &value, 0);
    }
    Some(choice)
}
