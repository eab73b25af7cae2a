//! Static pods published in the API as mirror pods, as kubelet does: a copy of each static pod bound
//! to this node and marked `kubernetes.io/config.mirror: HASH`, which `kubectl get pods` shows and the
//! pod workers report status to. The API cannot change a static pod: a mirror pod that is deleted, or
//! that is of an older content, is replaced; one whose static pod is gone is deleted.
//!
//! Level-triggered: every look at the sources compares the static pods with the mirror pods the API
//! has and starts what is missing, one task per pod, never two at once for the same pod.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams, Preconditions},
};
use tracing::{info, warn};

use crate::source::static_pods::{CONFIG_HASH, CONFIG_MIRROR};

/// (namespace, name)
type Key = (String, String);

fn key(pod: &Pod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn annotation<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(name).map(String::as_str)
}

/// The mirror pods this node keeps.
pub struct Mirrors {
    client: Client,
    /// Pods with a change in flight.
    busy: Arc<Mutex<HashSet<Key>>>,
}

/// What one mirror pod needs.
enum Change {
    Create(Pod),
    /// Delete this mirror pod (by uid), then create the static pod's, if any.
    Replace {
        old: Arc<Pod>,
        new: Option<Pod>,
    },
}

impl Mirrors {
    pub fn new(client: Client) -> Self {
        Mirrors {
            client,
            busy: Arc::default(),
        }
    }

    /// Starts the changes that make the API's mirror pods match the static pods.
    pub fn reconcile(&mut self, static_pods: &[Arc<Pod>], mirrors: &[Arc<Pod>]) {
        for change in plan(static_pods, mirrors) {
            let k = match &change {
                Change::Create(p) => key(p),
                Change::Replace { old, .. } => key(old),
            };
            let Ok(mut busy) = self.busy.lock() else {
                return;
            };
            if !busy.insert(k.clone()) {
                continue;
            }
            let (client, busy) = (self.client.clone(), Arc::clone(&self.busy));
            tokio::spawn(async move {
                apply(client, change).await;
                if let Ok(mut b) = busy.lock() {
                    b.remove(&k);
                }
            });
        }
    }
}

/// The changes that take `mirrors` to one current mirror per static pod.
fn plan(static_pods: &[Arc<Pod>], mirrors: &[Arc<Pod>]) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut wanted = HashSet::new();
    for s in static_pods {
        let k = key(s);
        wanted.insert(k.clone());
        let hash = annotation(s, CONFIG_HASH).unwrap_or_default();
        let new = mirror_of(s);
        match mirrors.iter().find(|m| key(m) == k) {
            None => changes.push(Change::Create(new)),
            Some(m)
                if annotation(m, CONFIG_MIRROR) != Some(hash) || m.metadata.deletion_timestamp.is_some() =>
            {
                changes.push(Change::Replace {
                    old: Arc::clone(m),
                    new: Some(new),
                })
            }
            Some(_) => {}
        }
    }
    for m in mirrors.iter().filter(|m| !wanted.contains(&key(m))) {
        changes.push(Change::Replace {
            old: Arc::clone(m),
            new: None,
        });
    }
    changes
}

/// The API object for static pod `s`: its name, labels and annotations (with the mirror mark) and
/// spec; the API server gives it a uid of its own.
fn mirror_of(s: &Pod) -> Pod {
    let mut annotations = s.metadata.annotations.clone().unwrap_or_default();
    let hash = annotations.get(CONFIG_HASH).cloned().unwrap_or_default();
    annotations.insert(CONFIG_MIRROR.into(), hash);
    Pod {
        metadata: ObjectMeta {
            name: s.metadata.name.clone(),
            namespace: s.metadata.namespace.clone(),
            labels: s.metadata.labels.clone(),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: s.spec.clone(),
        status: None,
    }
}

async fn apply(client: Client, change: Change) {
    let create = match change {
        Change::Create(p) => Some(p),
        Change::Replace { old, new } => {
            let (ns, name) = key(&old);
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: old.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => info!(pod = %format!("{ns}/{name}"), "mirror pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    warn!(pod = %format!("{ns}/{name}"), error = %e, "mirror pod not deleted; retrying");
                    return;
                }
            }
            new
        }
    };
    let Some(pod) = create else {
        return;
    };
    let (ns, name) = key(&pod);
    let api: Api<Pod> = Api::namespaced(client, &ns);
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => info!(pod = %format!("{ns}/{name}"), "mirror pod created"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => warn!(pod = %format!("{ns}/{name}"), error = %e, "mirror pod not created; retrying"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::static_pods::as_static;

    fn static_pod(args: &str) -> Arc<Pod> {
        let pod: Pod = serde_norway::from_str(&format!(
            "metadata: {{name: web, labels: {{app: web}}}}\nspec: {{containers: [{{name: c, image: b, args: [{args}]}}]}}"
        ))
        .expect("pod");
        Arc::new(as_static(pod, "/pods/web.yaml", "n1").expect("static"))
    }

    fn in_api(mut p: Pod, uid: &str) -> Arc<Pod> {
        p.metadata.uid = Some(uid.into());
        Arc::new(p)
    }

    #[test]
    fn mirrors_follow_the_static_pods() {
        let s = static_pod("a");
        let changes = plan(std::slice::from_ref(&s), &[]);
        let [Change::Create(m)] = changes.as_slice() else {
            panic!("one create");
        };
        assert_eq!(m.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(m.metadata.uid, None, "the API server gives the uid");
        assert_eq!(annotation(m, CONFIG_MIRROR), annotation(&s, CONFIG_HASH));
        assert_eq!(m.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("n1"));
        let current = in_api(m.clone(), "api-1");
        assert!(
            plan(std::slice::from_ref(&s), std::slice::from_ref(&current)).is_empty(),
            "up to date"
        );

        // Edited: the old mirror is replaced.
        let edited = static_pod("b");
        let changes = plan(&[edited], std::slice::from_ref(&current));
        assert!(
            matches!(changes.as_slice(), [Change::Replace { old, new: Some(_) }] if old.metadata.uid.as_deref() == Some("api-1"))
        );

        // Deleted through the API: recreated.
        let mut deleting = (*current).clone();
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let changes = plan(std::slice::from_ref(&s), &[Arc::new(deleting)]);
        assert!(matches!(
            changes.as_slice(),
            [Change::Replace { new: Some(_), .. }]
        ));

        // The static pod is gone: its mirror goes.
        let changes = plan(&[], &[current]);
        assert!(matches!(changes.as_slice(), [Change::Replace { new: None, .. }]));
    }
}
