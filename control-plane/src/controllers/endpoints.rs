//! Endpoints and EndpointSlices of Services with a selector: the selected pods that have an address,
//! ready or not, with terminating pods marked (`terminating: true` in slices, left out of the
//! Endpoints object as kube-controller-manager does), target ports resolved (named ports through the
//! pods' container ports). Slices hold at most 100 endpoints, are named `<service>-<n>`, carry
//! `kubernetes.io/service-name` and are owned by the Service, so they go with it.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::{
    Change, Controller, ControllerError, Ctx,
    cache::{Cache, PodInfo, str_at},
};
use crate::api::objects::{DeleteOptions, Part};

const MAX_PER_SLICE: usize = 100;
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

#[derive(Default)]
pub struct EndpointsController {
    /// Selectors of Services, by key, to find which Services a pod change concerns.
    selectors: HashMap<String, BTreeMap<String, String>>,
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Service port's target on one pod (`None`: a named port the pod does not have).
fn target_port(port: &Value, pod: Option<&Value>) -> Option<i64> {
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => pod?
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_i64)),
        _ => port.get("port").and_then(Value::as_i64),
    }
}

impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "services" => {
                match change.new {
                    Some(svc) => {
                        let sel: BTreeMap<String, String> = svc
                            .pointer("/spec/selector")
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect();
                        self.selectors.insert(change.key.to_string(), sel);
                    }
                    None => {
                        self.selectors.remove(change.key);
                    }
                }
                keys.push(change.key.to_string());
            }
            "pods" => {
                let pods: Vec<&PodInfo> = [change.old_pod, change.new_pod].into_iter().flatten().collect();
                // Only what endpoints show matters: labels, address, node, readiness, deletion.
                if let [old, new] = pods.as_slice()
                    && (old.labels == new.labels
                        && old.ip == new.ip
                        && old.node == new.node
                        && old.ready == new.ready
                        && old.deleting == new.deleting
                        && old.phase == new.phase)
                {
                    return;
                }
                let Some(ns) = pods.first().map(|p| p.namespace.clone()) else {
                    return;
                };
                let prefix = format!("/registry/services/{ns}/");
                for (key, sel) in &self.selectors {
                    if key.starts_with(&prefix) && pods.iter().any(|p| selects(sel, &p.labels)) {
                        keys.push(key.clone());
                    }
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some((_, Some(ns), name)) = super::parse_key(key) else {
            return Ok(());
        };
        let (ns, name) = (ns.to_string(), name.to_string());
        let svc = super::read(ctx.store, key);
        let selector = self.selectors.get(key).cloned().unwrap_or_default();
        let Some(svc) = svc.filter(|_| !selector.is_empty()) else {
            // Gone, or without a selector (its endpoints are someone else's): remove what this
            // controller made.
            if super::read(ctx.store, key).is_none() {
                let managed = super::read(ctx.store, &format!("/registry/endpoints/{ns}/{name}"))
                    .is_some_and(|e| {
                        e.pointer("/metadata/labels/endpointslice.kubernetes.io~1skip-mirror")
                            .is_none()
                    });
                if managed {
                    super::delete(
                        ctx.store,
                        "endpoints",
                        Some(&ns),
                        &name,
                        &DeleteOptions::default(),
                    )?;
                }
            }
            return Ok(());
        };
        let ports: Vec<Value> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let named = ports
            .iter()
            .any(|p| p.get("targetPort").is_some_and(Value::is_string));
        let mut pods: Vec<PodInfo> = ctx
            .cache
            .pods_in(&ns)
            .filter(|p| selects(&selector, &p.labels) && !p.ip.is_empty() && !p.node.is_empty() && p.active())
            .cloned()
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        // (pod, resolved ports)
        let mut resolved: Vec<(PodInfo, Vec<Value>)> = Vec::new();
        for p in pods {
            let obj = if named {
                super::read(ctx.store, &p.key)
            } else {
                None
            };
            let ps: Vec<Value> = ports
                .iter()
                .filter_map(|port| {
                    target_port(port, obj.as_ref()).map(|t| {
                        let mut out = json!({"port": t, "protocol": port.get("protocol").cloned().unwrap_or(json!("TCP"))});
                        if let Some(n) = port.get("name").filter(|n| n.as_str().is_some_and(|s| !s.is_empty())) {
                            out["name"] = n.clone();
                        }
                        out
                    })
                })
                .collect();
            resolved.push((p, ps));
        }
        self.write_endpoints(ctx, &ns, &name, &resolved)?;
        self.write_slices(ctx, &svc, &ns, &name, &resolved)
    }
}

impl EndpointsController {
    fn write_endpoints(
        &self,
        ctx: &Ctx<'_>,
        ns: &str,
        name: &str,
        pods: &[(PodInfo, Vec<Value>)],
    ) -> Result<(), ControllerError> {
        // One subset per distinct port list.
        let mut subsets: Vec<(Vec<Value>, Vec<Value>, Vec<Value>)> = Vec::new();
        for (p, ports) in pods.iter().filter(|(p, _)| !p.deleting) {
            let address = json!({"ip": p.ip, "nodeName": p.node, "targetRef": {"kind": "Pod", "namespace": p.namespace, "name": p.name, "uid": p.uid}});
            let idx = match subsets.iter().position(|(ps, _, _)| ps == ports) {
                Some(i) => i,
                None => {
                    subsets.push((ports.clone(), Vec::new(), Vec::new()));
                    subsets.len() - 1
                }
            };
            if p.ready {
                subsets[idx].1.push(address);
            } else {
                subsets[idx].2.push(address);
            }
        }
        let subsets: Vec<Value> = subsets
            .into_iter()
            .filter(|(ports, _, _)| !ports.is_empty())
            .map(|(ports, ready, not_ready)| {
                let mut s = json!({"ports": ports});
                if !ready.is_empty() {
                    s["addresses"] = json!(ready);
                }
                if !not_ready.is_empty() {
                    s["notReadyAddresses"] = json!(not_ready);
                }
                s
            })
            .collect();
        let key = format!("/registry/endpoints/{ns}/{name}");
        match super::read(ctx.store, &key) {
            Some(current) if current.get("subsets").cloned().unwrap_or(json!([])) == json!(subsets) => Ok(()),
            Some(_) => {
                super::patch(
                    ctx.store,
                    "endpoints",
                    Some(ns),
                    name,
                    &json!({"subsets": subsets}),
                    Part::Main,
                )?;
                Ok(())
            }
            None => {
                let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": subsets});
                super::create(ctx.store, "endpoints", Some(ns), &ep)?;
                Ok(())
            }
        }
    }

    fn write_slices(
        &self,
        ctx: &Ctx<'_>,
        svc: &Value,
        ns: &str,
        name: &str,
        pods: &[(PodInfo, Vec<Value>)],
    ) -> Result<(), ControllerError> {
        // Endpoints grouped by port list, 100 to a slice.
        let mut groups: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
        for (p, ports) in pods {
            let endpoint = json!({
                "addresses": [p.ip],
                "conditions": {"ready": p.ready && !p.deleting, "serving": p.ready, "terminating": p.deleting},
                "nodeName": p.node,
                "targetRef": {"kind": "Pod", "namespace": p.namespace, "name": p.name, "uid": p.uid},
            });
            match groups
                .iter_mut()
                .find(|(ps, eps)| ps == ports && eps.len() < MAX_PER_SLICE)
            {
                Some((_, eps)) => eps.push(endpoint),
                None => groups.push((ports.clone(), vec![endpoint])),
            }
        }
        if groups.is_empty() {
            // A Service with no endpoints still has one (empty) slice, as kube-controller-manager keeps.
            groups.push((Vec::new(), Vec::new()));
        }
        let existing: Vec<Value> = super::list(ctx.store, "endpointslices", Some(ns))?
            .into_iter()
            .filter(|s| {
                s.pointer("/metadata/labels/kubernetes.io~1service-name")
                    .and_then(Value::as_str)
                    == Some(name)
                    && s.pointer("/metadata/labels/endpointslice.kubernetes.io~1managed-by")
                        .and_then(Value::as_str)
                        == Some(MANAGED_BY)
            })
            .collect();
        let owner = super::controller_ref("v1", "Service", svc);
        let mut wanted = Vec::new();
        for (i, (ports, endpoints)) in groups.iter().enumerate() {
            let slice_name = format!("{name}-{i}");
            wanted.push(slice_name.clone());
            let key = format!("/registry/endpointslices/{ns}/{slice_name}");
            match super::read(ctx.store, &key) {
                Some(current)
                    if current.get("endpoints").cloned().unwrap_or(json!([])) == json!(endpoints)
                        && current.get("ports").cloned().unwrap_or(json!([])) == json!(ports) => {}
                Some(_) => {
                    super::patch(
                        ctx.store,
                        "endpointslices",
                        Some(ns),
                        &slice_name,
                        &json!({"endpoints": endpoints, "ports": ports}),
                        Part::Main,
                    )?;
                }
                None => {
                    let slice = json!({
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {
                            "name": slice_name,
                            "namespace": ns,
                            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                            "ownerReferences": [owner.clone()],
                        },
                        "addressType": "IPv4",
                        "endpoints": endpoints,
                        "ports": ports,
                    });
                    super::create(ctx.store, "endpointslices", Some(ns), &slice)?;
                }
            }
        }
        for s in existing {
            let n = str_at(&s, "/metadata/name");
            if !wanted.contains(&n) {
                super::delete(
                    ctx.store,
                    "endpointslices",
                    Some(ns),
                    &n,
                    &DeleteOptions::default(),
                )?;
            }
        }
        Ok(())
    }
}
