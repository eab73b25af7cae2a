//! The agent's subsystems, one tokio task each (as Cilium's agent and kubelet's managers are): each
//! reads its inputs ([`crate::source`] feeds, or what another subsystem publishes through a `watch`
//! channel), recomputes its desired state with a pure function and diffs it into the maps that it alone
//! opens. Map writes inside a task are synchronous and ordered (ARCHITECTURE.md, "Update ordering");
//! tasks only yield between whole applies, so a shutdown never interrupts one halfway.
//!
//! - [`services`]: Service load balancing (`BERTH_FRONTENDS` and friends) and conntrack garbage collection.
//! - [`health_checks`]: the health-check node ports of LoadBalancer Services with local traffic.
//! - [`peers`]: overlay peers (`BERTH_OVERLAY`) from Node objects.
//! - [`pod_network`]: this node's pod CIDR: `subnet.env`, the masquerade rule, the host's route.
//! - [`endpoints`]: local pods for direct delivery (`BERTH_ENDPOINTS`).
//! - [`interfaces`]: TC attachment to the uplink, the overlay device and pod interfaces.

pub mod endpoints;
pub mod health_checks;
pub mod interfaces;
pub mod peers;
pub mod pod_network;
pub mod services;

use std::time::Duration;

/// How long a failed apply waits before it is retried (the inputs may not change again soon).
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);
