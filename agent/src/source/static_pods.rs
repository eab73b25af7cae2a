//! Static pods: Pod manifests in a directory of the node (kubelet's `--pod-manifest-path`), run by
//! this node alone, with or without an API server. Read as the manifests source reads its directory
//! (a file that stops parsing keeps its last good pods; YAML or JSON, several documents per file),
//! polled on a thread of its own, delivered as watcher events into a pod store of their own.
//!
//! Each pod gets what kubelet gives a static pod: the name `NAME-NODE`, the namespace `default` when
//! it names none, `spec.nodeName`, a UID hashed from the node, the file and the pod's content (an
//! edit makes a new pod, as with kubelet: the old one is stopped, the new one started), and the
//! annotations `kubernetes.io/config.source: file` and `kubernetes.io/config.hash`. With an API
//! server the pod manager publishes each as a mirror pod ([`crate::pods::mirror`]).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::{
    Feed,
    manifests::{Emitted, Key, ManifestDir, by_key},
};

/// The annotation kubelet puts on static pods and their mirror pods: the static pod's hash (its UID).
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Where a pod came from (`file` for static pods, `api` for the others).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Marks a mirror pod (the API's copy of a static pod); its value is the static pod's hash.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// The pods of `dir`, re-read every `interval`.
pub fn start(dir: PathBuf, node_name: String, interval: Duration) -> std::io::Result<Feed<Pod>> {
    let (writer, feed) = super::feed();
    std::thread::Builder::new()
        .name("static-pods".into())
        .spawn(move || {
            let mut files = ManifestDir::new(dir.clone());
            let mut emitted = Emitted::new(writer);
            let mut listed = false;
            let mut dir_error_logged = false;
            loop {
                let changed = match files.poll() {
                    Ok((changed, _rejected)) => {
                        dir_error_logged = false;
                        changed
                    }
                    Err(e) => {
                        // No directory (yet) is no static pods, as with kubelet.
                        if !dir_error_logged {
                            warn!(error = %e, "static pod directory unreadable");
                            dir_error_logged = true;
                        }
                        false
                    }
                };
                if (changed || !listed) && !files.incomplete() {
                    let pods = static_pods(&files, &node_name);
                    if listed {
                        emitted.update(pods);
                    } else {
                        info!(dir = %dir.display(), pods = pods.len(), "static pods listed");
                        emitted.list(pods);
                        listed = true;
                    }
                }
                std::thread::sleep(interval);
            }
        })?;
    Ok(feed)
}

fn static_pods(files: &ManifestDir, node_name: &str) -> BTreeMap<Key, Pod> {
    let pods = files
        .objects_by_file()
        .flat_map(|(path, objects)| objects.pods.iter().map(move |p| (path, p)))
        .filter_map(
            |(path, pod)| match as_static(pod.clone(), &path.display().to_string(), node_name) {
                Ok(p) => Some(p),
                Err(why) => {
                    warn!(file = %path.display(), error = %why, "static pod not run");
                    None
                }
            },
        )
        .collect();
    by_key(pods)
}

/// `pod` as kubelet makes a static pod of it; `Err` says why it cannot run.
pub fn as_static(mut pod: Pod, file: &str, node_name: &str) -> Result<Pod, String> {
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no name")?;
    let spec = pod.spec.as_mut().ok_or("the pod has no spec")?;
    if spec.containers.is_empty() {
        return Err("the pod has no containers".into());
    }
    if let Some(c) = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.image.as_deref().is_none_or(str::is_empty))
    {
        return Err(format!("container {:?} has no image", c.name));
    }
    spec.node_name = Some(node_name.to_string());
    // The content as written (before the node's additions) decides the identity.
    let content = serde_json::to_vec(&pod).map_err(|e| e.to_string())?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [node_name.as_bytes(), file.as_bytes(), &content] {
        hash.update(&(part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let uid: String = hash.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta = &mut pod.metadata;
    meta.name = Some(format!("{name}-{}", node_name.to_lowercase()));
    meta.namespace = Some(
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    meta.uid = Some(uid.clone());
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(CONFIG_HASH.into(), uid);
    annotations.insert(CONFIG_SOURCE.into(), "file".into());
    pod.status = None;
    Ok(pod)
}

/// Whether `pod` is a static pod of this node (not one from the API).
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE))
        .map(String::as_str)
        == Some("file")
}

/// Whether `pod`, as read from the API, is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).expect("pod")
    }

    #[test]
    fn static_pods_are_named_for_their_node_and_identified_by_content() {
        let p = pod("metadata: {name: web}\nspec: {containers: [{name: c, image: busybox}]}");
        let s = as_static(p.clone(), "/etc/pods/web.yaml", "Node-1").expect("static");
        assert_eq!(s.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            s.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("Node-1")
        );
        let uid = s.metadata.uid.clone().expect("uid");
        assert_eq!(uid.len(), 32);
        assert!(is_static(&s) && !is_mirror(&s));
        assert_eq!(
            s.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_HASH)),
            Some(&uid)
        );
        let again = as_static(p.clone(), "/etc/pods/web.yaml", "Node-1").expect("static");
        assert_eq!(
            again.metadata.uid,
            Some(uid.clone()),
            "the same content, the same pod"
        );
        let edited = pod("metadata: {name: web}\nspec: {containers: [{name: c, image: busybox, args: [x]}]}");
        let edited = as_static(edited, "/etc/pods/web.yaml", "Node-1").expect("static");
        assert_ne!(edited.metadata.uid, Some(uid.clone()), "an edit is a new pod");
        let elsewhere = as_static(p, "/etc/pods/web.yaml", "node-2").expect("static");
        assert_ne!(elsewhere.metadata.uid, Some(uid));
    }

    #[test]
    fn pods_that_cannot_run_are_refused_with_the_reason() {
        for (yaml, why) in [
            (
                "metadata: {}\nspec: {containers: [{name: c, image: x}]}",
                "no name",
            ),
            ("metadata: {name: a}", "no spec"),
            ("metadata: {name: a}\nspec: {containers: []}", "no containers"),
            ("metadata: {name: a}\nspec: {containers: [{name: c}]}", "no image"),
        ] {
            let err = as_static(pod(yaml), "f", "n").expect_err(yaml);
            assert!(err.contains(why), "{err}");
        }
    }
}
