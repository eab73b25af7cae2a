//! The standalone source of cluster state: a directory of ordinary Kubernetes manifests (YAML or JSON,
//! several documents per file, `kind: List` too), re-read when a file changes, the way kubelet reads
//! static pod manifests, and delivered as watcher events like an API server's ([`super`]).
//!
//! A file that fails to parse keeps its last good content (and the error is logged with the file and
//! document), so a typo never withdraws Services that were working. While some file has never parsed
//! since the agent started, the initial list is withheld (no `InitDone`): its objects are unknown, and
//! the maps, which may still serve them from before a restart, must not lose them. Write files
//! atomically (write a temporary file, then rename) to avoid reading one half-written.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Deserialize;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::model::{EndpointSlice, Service, Trim};

use super::{Event, FeedWriter, InputWriters, Inputs, Object, inputs};

/// Errors of reading a manifest directory.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The directory cannot be listed.
    #[error("cannot read manifest directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML, or not a valid object of its kind.
    #[error("{path}, document {index}: {message}")]
    Parse {
        path: PathBuf,
        index: usize,
        message: String,
    },
}

/// The objects berth uses, from all files.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    /// Read from a static pods directory ([`super::static_pods`]); the cluster-state source ignores
    /// them.
    pub pods: Vec<Pod>,
}

impl Objects {
    fn extend(&mut self, other: &Objects) {
        self.services.extend(other.services.iter().cloned());
        self.endpoint_slices.extend(other.endpoint_slices.iter().cloned());
        self.nodes.extend(other.nodes.iter().cloned());
        self.pods.extend(other.pods.iter().cloned());
    }
}

/// What identifies a file's content cheaply: a rewrite changes at least one of these (the inode changes
/// with an atomic rename even when size and mtime do not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

struct FileState {
    stamp: Stamp,
    objects: Objects,
    /// The file's content parsed at least once (its objects are the last good ones).
    ever_parsed: bool,
}

/// A watched manifest directory.
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

fn parse_value(
    value: serde_norway::Value,
    path: &Path,
    index: usize,
    out: &mut Objects,
) -> Result<(), ManifestError> {
    let err = |message: String| ManifestError::Parse {
        path: path.into(),
        index,
        message,
    };
    if value.is_null() {
        return Ok(()); // empty document (e.g. a trailing `---`)
    }
    let meta: TypeMeta =
        serde_norway::from_value(value.clone()).map_err(|e| err(format!("not a Kubernetes object: {e}")))?;
    match (meta.api_version.as_str(), meta.kind.as_str()) {
        ("v1", "Service") => {
            let mut svc: Service =
                serde_norway::from_value(value).map_err(|e| err(format!("invalid Service: {e}")))?;
            // As `kubectl apply` would place it.
            svc.metadata.namespace.get_or_insert_with(|| "default".into());
            svc.trim();
            out.services.push(svc);
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let mut slice: EndpointSlice =
                serde_norway::from_value(value).map_err(|e| err(format!("invalid EndpointSlice: {e}")))?;
            slice.metadata.namespace.get_or_insert_with(|| "default".into());
            slice.trim();
            out.endpoint_slices.push(slice);
        }
        ("v1", "Node") => {
            let mut node: Node =
                serde_norway::from_value(value).map_err(|e| err(format!("invalid Node: {e}")))?;
            node.trim();
            out.nodes.push(node);
        }
        ("v1", "Pod") => {
            let pod: Pod = serde_norway::from_value(value).map_err(|e| err(format!("invalid Pod: {e}")))?;
            out.pods.push(pod);
        }
        ("v1", "List") => {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for item in items {
                parse_value(item, path, index, out)?;
            }
        }
        (_, "") => return Err(err("missing `kind`".into())),
        (api, kind) => {
            debug!(path = %path.display(), api, kind, "ignoring object of a kind berth does not use here")
        }
    }
    Ok(())
}

/// Parses every document of one manifest file.
pub fn parse_file(path: &Path, text: &str) -> Result<Objects, ManifestError> {
    let mut out = Objects::default();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(doc).map_err(|e| ManifestError::Parse {
            path: path.into(),
            index,
            message: e.to_string(),
        })?;
        parse_value(value, path, index, &mut out)?;
    }
    Ok(out)
}

impl ManifestDir {
    /// Watches `dir` (read on the first [`poll`](Self::poll)).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    /// Re-reads changed, new and removed files. Returns whether anything changed, and the errors of
    /// files that kept their previous content.
    pub fn poll(&mut self) -> Result<(bool, Vec<ManifestError>), ManifestError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| ManifestError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut present = HashSet::new();
        let mut changed = false;
        let mut errors = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_manifest(&path) {
                continue;
            }
            // Follow symlinks: a ConfigMap volume swaps a `..data` link behind the visible names.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                inode: std::os::unix::fs::MetadataExt::ino(&meta),
            };
            present.insert(path.clone());
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|source| ManifestError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| parse_file(&path, &text));
            match parsed {
                Ok(objects) => {
                    self.files.insert(
                        path,
                        FileState {
                            stamp,
                            objects,
                            ever_parsed: true,
                        },
                    );
                    changed = true;
                }
                Err(e) => {
                    warn!(error = %e, "manifest not applied; keeping its previous content");
                    // Remember the stamp so the same broken content is not re-parsed every poll.
                    let (objects, ever_parsed) = self
                        .files
                        .remove(&path)
                        .map(|f| (f.objects, f.ever_parsed))
                        .unwrap_or_default();
                    self.files.insert(
                        path,
                        FileState {
                            stamp,
                            objects,
                            ever_parsed,
                        },
                    );
                    errors.push(e);
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| present.contains(p));
        changed |= self.files.len() != before;
        Ok((changed, errors))
    }

    /// Whether some file has never parsed since the agent started: its objects are unknown, so
    /// nothing may be removed on the strength of their absence (after a restart the maps may still
    /// serve them).
    pub fn incomplete(&self) -> bool {
        self.files.values().any(|f| !f.ever_parsed)
    }

    /// Each file's objects, by file.
    pub fn objects_by_file(&self) -> impl Iterator<Item = (&Path, &Objects)> {
        self.files.iter().map(|(p, f)| (p.as_path(), &f.objects))
    }

    /// All objects of all files.
    pub fn objects(&self) -> Objects {
        let mut all = Objects::default();
        for f in self.files.values() {
            all.extend(&f.objects);
        }
        all
    }
}

/// Identity of an object within its kind: (namespace, name).
pub(super) type Key = (Option<String>, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone(), meta.name.clone().unwrap_or_default())
}

/// What one kind's store was last told, to turn the directory's new content into events.
pub(super) struct Emitted<K: Object> {
    objects: BTreeMap<Key, K>,
    writer: FeedWriter<K>,
}

impl<K: Object + PartialEq> Emitted<K> {
    pub(super) fn new(writer: FeedWriter<K>) -> Self {
        Emitted {
            objects: BTreeMap::new(),
            writer,
        }
    }

    /// The initial list: `Init`, an `InitApply` per object, `InitDone`.
    pub(super) fn list(&mut self, objects: BTreeMap<Key, K>) {
        self.writer.apply(&Event::Init);
        for o in objects.values() {
            self.writer.apply(&Event::InitApply(o.clone()));
        }
        self.writer.apply(&Event::InitDone);
        self.objects = objects;
    }

    /// `Apply` for new and changed objects, `Delete` for those gone.
    pub(super) fn update(&mut self, objects: BTreeMap<Key, K>) {
        self.apply_changed(&objects);
        self.delete_gone(objects);
    }

    /// `Apply` for new and changed objects of `objects` (the directory's new content).
    pub(super) fn apply_changed(&mut self, objects: &BTreeMap<Key, K>) {
        for (k, o) in objects {
            if self.objects.get(k) != Some(o) {
                self.writer.apply(&Event::Apply(o.clone()));
                self.objects.insert(k.clone(), o.clone());
            }
        }
    }

    /// `Delete` for objects no longer in `objects`; `objects` becomes what the store was told.
    pub(super) fn delete_gone(&mut self, objects: BTreeMap<Key, K>) {
        for (k, o) in &self.objects {
            if !objects.contains_key(k) {
                self.writer.apply(&Event::Delete(o.clone()));
            }
        }
        self.objects = objects;
    }
}

pub(super) fn by_key<K: kube::Resource>(objects: Vec<K>) -> BTreeMap<Key, K> {
    // A later file wins over an earlier one for the same object, as a later `kubectl apply` would.
    objects.into_iter().map(|o| (key_of(o.meta()), o)).collect()
}

/// The directory as a source: polled every `interval` on a thread of its own (reading and parsing
/// thousands of files is blocking work), delivered as events into fresh stores.
pub fn start(dir: PathBuf, interval: Duration) -> std::io::Result<Inputs> {
    let (writers, inputs) = inputs();
    std::thread::Builder::new()
        .name("manifests".into())
        .spawn(move || follow(ManifestDir::new(dir), interval, writers))?;
    Ok(inputs)
}

fn follow(mut dir: ManifestDir, interval: Duration, writers: InputWriters) {
    let mut stores = Stores {
        services: Emitted::new(writers.services),
        slices: Emitted::new(writers.endpoint_slices),
        nodes: Emitted::new(writers.nodes),
        listed: false,
        withheld_logged: false,
    };
    let mut dir_error_logged = false;
    loop {
        // Rejected files are logged by `poll` itself, once per content.
        match dir.poll() {
            Ok((changed, _rejected)) => {
                dir_error_logged = false;
                if changed || !stores.listed {
                    stores.deliver(&dir);
                }
            }
            Err(e) => {
                if !dir_error_logged {
                    warn!(error = %e, "manifest directory unreadable; keeping what was read");
                    dir_error_logged = true;
                }
            }
        }
        std::thread::sleep(interval);
    }
}

/// The three stores the directory feeds, and whether their initial list was delivered.
struct Stores {
    services: Emitted<Service>,
    slices: Emitted<EndpointSlice>,
    nodes: Emitted<Node>,
    listed: bool,
    withheld_logged: bool,
}

impl Stores {
    /// Delivers the directory's content: the initial list once every file has parsed, changes after.
    fn deliver(&mut self, dir: &ManifestDir) {
        if !self.listed && dir.incomplete() {
            if !self.withheld_logged {
                warn!(
                    "a manifest has never parsed since start: the initial list is withheld, and nothing is programmed or removed until it parses"
                );
                self.withheld_logged = true;
            }
            return;
        }
        let all = dir.objects();
        let (services, slices, nodes) = (
            by_key(all.services),
            by_key(all.endpoint_slices),
            by_key(all.nodes),
        );
        if self.listed {
            // EndpointSlices arrive before their Services and leave after them: a Service written
            // with its slices in one file is never programmed without its endpoints for a moment
            // (refusing connections), the way one sync of both would program it.
            self.slices.apply_changed(&slices);
            self.services.update(services);
            self.slices.delete_gone(slices);
            self.nodes.update(nodes);
            return;
        }
        info!(
            services = services.len(),
            endpoint_slices = slices.len(),
            nodes = nodes.len(),
            "manifests listed"
        );
        self.services.list(services);
        self.slices.list(slices);
        self.nodes.list(nodes);
        self.listed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_documents_and_lists() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
  endpoints: [{addresses: [10.244.0.2]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
---
"#;
        let objects = parse_file(Path::new("x.yaml"), text).expect("parses");
        assert_eq!(objects.services.len(), 1);
        assert_eq!(objects.endpoint_slices.len(), 1);
        assert_eq!(objects.nodes.len(), 1);
    }

    #[test]
    fn invalid_object_names_file_and_document() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nspec: {ports: [{port: eighty}]}\n";
        let err = parse_file(Path::new("bad.yaml"), text).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("bad.yaml") && msg.contains("document 1") && msg.contains("invalid Service"),
            "{msg}"
        );
    }

    #[test]
    fn broken_file_keeps_previous_content() {
        let dir = std::env::temp_dir().join(format!("berth-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("svc.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").expect("write");
        let mut watched = ManifestDir::new(&dir);
        assert!(watched.poll().expect("poll").0);
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: [broken\n").expect("write");
        let (_, errors) = watched.poll().expect("poll");
        assert_eq!(errors.len(), 1);
        assert_eq!(watched.objects().services.len(), 1, "previous content kept");
        std::fs::remove_file(&file).expect("rm");
        assert!(watched.poll().expect("poll").0);
        assert!(watched.objects().services.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
