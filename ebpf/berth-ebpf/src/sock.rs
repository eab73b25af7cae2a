//! Socket-level load balancing (cgroup/connect4, sendmsg4, recvmsg4, getpeername4).
//!
//! A pod's connect() to a Service frontend is rewritten to the chosen backend before the kernel routes
//! anything, so the connection's packets carry real addresses and need no per-packet NAT or conntrack.
//! The socket remembers the frontend (by socket cookie and backend in `BERTH_SOCK_REV`), so
//! getpeername() and recvmsg() (UDP replies) report the Service address, as the application expects.
//! With no backend, connect()/sendmsg() fails at once (EPERM).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use berth_common::{AFFINITY_NETNS_BIT, FrontendKey, RevNat, SockFwdKey, SockFwdValue, SockRevKey, counter};

use crate::{
    maps::{FRONTENDS, SOCK_FWD, SOCK_REV, count},
    select,
};

/// Return value of a cgroup sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;
/// Return value that fails the call with EPERM.
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn berth_connect4(ctx: SockAddrContext) -> i32 {
    translate(&ctx, false)
}

/// Unconnected UDP: every datagram passes here; the socket keeps the backend it got first (as a
/// conntrack entry would keep it for kube-proxy), until the agent forgets it with the backend.
#[cgroup_sock_addr(sendmsg4)]
pub fn berth_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate(&ctx, true)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn berth_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn berth_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx)
}

#[inline(always)]
fn translate(ctx: &SockAddrContext, sticky: bool) -> i32 {
    // SAFETY: the context pointer is valid for the program's run; the kernel allows these accesses.
    let sa = unsafe { &mut *ctx.sock_addr };
    let svc = FrontendKey {
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        proto: sa.protocol as u8,
        pad: 0,
    };
    // SAFETY: read in place; the map frees a replaced value only after an RCU grace period.
    let Some(frontend) = (unsafe { FRONTENDS.get(&svc) }) else {
        return ALLOW;
    };
    let hdr = frontend.header;
    let (cookie, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let fwd_key = SockFwdKey {
        cookie,
        addr: svc.addr,
        port: svc.port,
        proto: svc.proto,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let remembered = if sticky {
        unsafe { SOCK_FWD.get(&fwd_key) }.copied()
    } else {
        None
    };
    let choice = match remembered {
        Some(v) => select::Choice {
            backend_id: v.backend_id,
            backend: v.backend,
        },
        None => {
            let hash = select::flow_hash(
                cookie as u32,
                svc.addr,
                (cookie >> 32) as u16,
                svc.port,
                svc.proto,
            );
            let Some(choice) = select::pick(&svc, frontend, AFFINITY_NETNS_BIT | netns, hash) else {
                if hdr.count == 0 && hdr.terminating == 0 {
                    count(counter::REJECTED);
                    return DENY;
                }
                // A slot vanished between our reads (concurrent update): leave the socket
                // untranslated; its packets are then balanced per packet on the TC path.
                return ALLOW;
            };
            if sticky {
                let v = SockFwdValue {
                    backend_id: choice.backend_id,
                    rev_nat_id: hdr.rev_nat_id,
                    backend: choice.backend,
                };
                let _ = SOCK_FWD.insert(&fwd_key, &v, 0);
            }
            choice
        }
    };
    let backend = choice.backend;
    let rev_key = SockRevKey {
        cookie,
        addr: backend.addr,
        port: backend.port,
        pad: 0,
    };
    let rev = RevNat {
        addr: svc.addr,
        port: svc.port,
        pad: 0,
    };
    if SOCK_REV.insert(&rev_key, &rev, 0).is_err() {
        count(counter::ERRORS);
        return ALLOW;
    }
    sa.user_ip4 = backend.addr;
    sa.user_port = backend.port as u32;
    count(counter::SOCK_TRANSLATED);
    ALLOW
}

#[inline(always)]
fn reverse(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `translate`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevKey {
        cookie,
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(rev) = unsafe { SOCK_REV.get(&key) }.copied() {
        sa.user_ip4 = rev.addr;
        sa.user_port = rev.port as u32;
    }
    ALLOW
}
