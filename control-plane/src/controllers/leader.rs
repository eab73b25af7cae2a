//! Leader election over a Lease, as kube-controller-manager and kube-scheduler do it
//! (`kube-system/berth-controller-manager`): the holder renews it every couple of seconds; another
//! control plane takes it over once it has seen no renewal for the lease duration. Every write is a
//! compare-and-swap on the Lease's resourceVersion, so two candidates cannot both win. Expiry is
//! judged by when this process last saw the record change, not by the timestamps in it, so clocks
//! need not agree.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    api::{
        objects::{self, Part},
        resources,
        typed::FieldValidation,
    },
    store::Store,
};

/// The Lease the controllers elect their leader with.
pub const LEASE: &str = "berth-controller-manager";

pub struct Elector {
    identity: String,
    duration: Duration,
    renew_every: Duration,
    /// The last record seen (holder, renewTime) and when it was first seen.
    observed: Option<(Value, Instant)>,
    leading: bool,
    last_attempt: Option<Instant>,
}

impl Elector {
    /// `identity` must differ between control planes (host name and process id).
    pub fn new(identity: &str, duration: Duration) -> Elector {
        Elector {
            identity: identity.to_string(),
            duration,
            renew_every: (duration / 5).max(Duration::from_millis(200)),
            observed: None,
            leading: false,
            last_attempt: None,
        }
    }

    /// Whether this process leads now; renews or tries to acquire when it is time.
    pub fn leading(&mut self, store: &Store) -> bool {
        if self.last_attempt.is_some_and(|t| t.elapsed() < self.renew_every) {
            return self.leading;
        }
        self.last_attempt = Some(Instant::now());
        let was = self.leading;
        self.leading = self.try_acquire_or_renew(store);
        if self.leading != was {
            tracing::info!(identity = %self.identity, leading = self.leading, "controller leadership changed");
        }
        self.leading
    }

    fn try_acquire_or_renew(&mut self, store: &Store) -> bool {
        let Some(leases) = resources::by_plural("leases") else {
            return false;
        };
        let now = crate::api::times::now_micro_rfc3339();
        let secs = self.duration.as_secs().max(1);
        let current = objects::get(store, leases, Some("kube-system"), LEASE).ok();
        let Some(lease) = current else {
            let body = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": "kube-system"},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": secs, "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
            });
            return objects::create(
                store,
                leases,
                Some("kube-system"),
                body.to_string().as_bytes(),
                FieldValidation::Strict,
            )
            .is_ok();
        };
        let holder = lease
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let record = json!([holder, lease.pointer("/spec/renewTime")]);
        let since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record, Instant::now()));
                Instant::now()
            }
        };
        let rv = lease
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let change = if holder == self.identity {
            json!({"metadata": {"resourceVersion": rv}, "spec": {"renewTime": now}})
        } else if holder.is_empty() || since.elapsed() > self.duration {
            let transitions = lease
                .pointer("/spec/leaseTransitions")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            json!({"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": secs, "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}})
        } else {
            return false;
        };
        objects::patch(
            store,
            leases,
            Some("kube-system"),
            LEASE,
            objects::PatchKind::Merge,
            change.to_string().as_bytes(),
            FieldValidation::Strict,
            Part::Main,
        )
        .is_ok()
    }
}
