//! The node's content-addressed image store, shared by all pods:
//!
//! ```text
//! ROOT/blobs/sha256/HEX      every blob once (configs, layers as pulled), named by its verified digest
//! ROOT/layers/ID/            every layer unpacked once, in overlayfs' lower-layer form (ID: 16 hex
//!                            digits of the layer digest, short so that a mount's lowerdir list of
//!                            many layers fits in a page)
//! ROOT/images/KEY.json       what a reference resolved to when it was last pulled (KEY: a hash of
//!                            the reference)
//! ```
//!
//! Every file and directory appears by an atomic rename of a private temporary, so a crash or a
//! concurrent pull never leaves a half-written blob or layer under its final name.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::unpack::{UnpackError, unpack_layer};

/// Errors of the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file or directory of the store cannot be read or written.
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A digest that is not `sha256:` and 64 hex digits (it would name a path).
    #[error("unsupported or malformed digest {0:?} (berth stores sha256 digests)")]
    Digest(String),
    /// A layer could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// An image record does not parse.
    #[error("image record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an image reference resolved to, and what a container needs of its configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The reference as the pod gave it, normalised (`docker.io/library/busybox:1.36`).
    pub reference: String,
    /// `REGISTRY/REPOSITORY@sha256:...` of the manifest (a container status' `imageID`).
    pub repo_digest: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// Bytes of the config and the layers as pulled.
    pub size: u64,
    pub config: ImageConfig,
}

/// The parts of an image's configuration a container is made from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// The signal that stops the image's process (`STOPSIGNAL`); records written before this field
    /// existed read as none.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The store at one root directory.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The 64 hex digits of a `sha256:` digest, checked (they become a file name).
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex),
        _ => Err(StoreError::Digest(digest.to_string())),
    }
}

impl ImageStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["blobs/sha256", "layers", "images", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    /// A fresh path for a temporary file or directory inside the store (same filesystem as the
    /// final names, so the rename is atomic).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Whether the blob is stored.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Moves a verified temporary file in as the blob `digest`.
    pub fn commit_blob(&self, temp: &Path, digest: &str) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(digest)?;
        std::fs::rename(temp, &path).map_err(io(&path))?;
        Ok(path)
    }

    /// Writes `bytes` as the blob `digest` (the caller verified the digest).
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let temp = self.temp_path("blob");
        std::fs::write(&temp, bytes).map_err(io(&temp))?;
        self.commit_blob(&temp, digest)
    }

    /// Where the layer `digest` is unpacked.
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers").join(&digest_hex(digest)?[..16]))
    }

    /// Unpacks the stored blob of layer `digest`, unless done before; returns its directory.
    /// Blocking: call it off the async threads.
    pub fn unpack(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(digest)?;
        if dir.exists() {
            return Ok(dir);
        }
        let blob = self.blob_path(digest)?;
        let temp = self.temp_path("layer");
        std::fs::create_dir(&temp).map_err(io(&temp))?;
        if let Err(e) = unpack_layer(&blob, &temp) {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(e.into());
        }
        match std::fs::rename(&temp, &dir) {
            Ok(()) => Ok(dir),
            // Another pull of the same layer finished first: keep theirs.
            Err(_) if dir.exists() => {
                let _ = std::fs::remove_dir_all(&temp);
                Ok(dir)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&temp);
                Err(io(&dir)(e))
            }
        }
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, reference.as_bytes());
        let key: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.root.join("images").join(format!("{key}.json"))
    }

    /// Records what `record.reference` resolved to.
    pub fn record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.reference);
        let temp = self.temp_path("record");
        let text = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Record {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&temp, text).map_err(io(&temp))?;
        std::fs::rename(&temp, &path).map_err(io(&path))
    }

    /// The image `reference` (normalised) resolved to when last pulled, if it was and all its
    /// layers are still unpacked.
    pub fn lookup(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.record_path(reference);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let record: ImageRecord =
            serde_json::from_slice(&text).map_err(|source| StoreError::Record { path, source })?;
        if record.reference != reference {
            return Ok(None); // a hash collision of the record name: treat as absent
        }
        for layer in &record.layers {
            if !self.layer_dir(layer)?.exists() {
                return Ok(None);
            }
        }
        Ok(Some(record))
    }

    /// The unpacked layer directories of an image, top layer first (overlayfs' lowerdir order).
    pub fn lower_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        record.layers.iter().rev().map(|l| self.layer_dir(l)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_that_would_escape_are_refused() {
        for bad in [
            "sha256:../../etc/passwd",
            "md5:abcd",
            "sha256:abc",
            &format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(digest_hex(&good).expect("good").len(), 64);
    }

    #[test]
    fn records_round_trip_and_need_their_layers() {
        let root = std::env::temp_dir().join(format!("berth-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = ImageStore::open(&root).expect("store");
        let layer = format!("sha256:{}", "ab".repeat(32));
        let record = ImageRecord {
            reference: "docker.io/library/busybox:1.36".into(),
            layers: vec![layer.clone()],
            ..Default::default()
        };
        store.record(&record).expect("record");
        assert_eq!(
            store.lookup(&record.reference).expect("lookup"),
            None,
            "layer missing"
        );
        std::fs::create_dir_all(store.layer_dir(&layer).expect("dir")).expect("layer");
        assert_eq!(store.lookup(&record.reference).expect("lookup"), Some(record));
        assert_eq!(store.lookup("docker.io/library/other:1").expect("lookup"), None);
        std::fs::remove_dir_all(&root).ok();
    }
}
