//! Pulling an image from an OCI distribution registry (v2 API) into the [`ImageStore`], with
//! `oci-client`: manifest lists and indexes resolved to this node's platform, OCI and Docker media
//! types, every blob's digest verified while it streams in (`oci-client` checks the descriptor's
//! digest and the registry's `Docker-Content-Digest`), token and basic auth. Blobs and layers already
//! in the store are neither downloaded nor unpacked again.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol, current_platform_resolver},
    errors::OciDistributionError,
    manifest::OciDescriptor,
    secrets::RegistryAuth,
};
use thiserror::Error;
use tracing::{debug, info};

use super::store::{ImageConfig, ImageRecord, ImageStore, StoreError};

/// Errors of a pull, worded for a pod's status and Events.
#[derive(Debug, Error)]
pub enum PullError {
    /// The image name does not parse as a reference.
    #[error("invalid image reference {image:?}: {reason}")]
    Reference { image: String, reason: String },
    /// The registry refused or failed (not found, unauthorized, unreachable, a digest mismatch).
    #[error("pulling {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: OciDistributionError,
    },
    /// The image configuration does not parse.
    #[error("image {image}: configuration: {reason}")]
    Config { image: String, reason: String },
    /// The store failed (disk, a layer that does not unpack).
    #[error("image {image}: {source}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
    /// An unpack task could not run.
    #[error("image {image}: unpack task: {reason}")]
    Task { image: String, reason: String },
}

/// The result of [`Puller::pull`].
#[derive(Clone, Debug)]
pub struct Pulled {
    pub image: ImageRecord,
    /// Bytes downloaded now (zero when every blob was in the store).
    pub downloaded: u64,
    pub took: Duration,
}

/// Normalises an image name as kubelet and containerd do: `busybox` is
/// `docker.io/library/busybox:latest`.
pub fn normalise(image: &str) -> Result<Reference, PullError> {
    image.parse::<Reference>().map_err(|e| PullError::Reference {
        image: image.to_string(),
        reason: e.to_string(),
    })
}

/// Pulls images into one store.
#[derive(Clone)]
pub struct Puller {
    /// For anonymous pulls: its cached registry tokens are anyone's to use.
    client: Client,
    insecure: Vec<String>,
    store: Arc<ImageStore>,
}

fn client_config(insecure: &[String]) -> ClientConfig {
    ClientConfig {
        protocol: if insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(insecure.to_vec())
        },
        platform_resolver: Some(Box::new(current_platform_resolver)),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    }
}

impl Puller {
    /// A puller into `store`. `insecure` lists registries (`host:port`) reached over plain HTTP, as
    /// containerd's and Docker's insecure-registries settings; all others over HTTPS.
    pub fn new(store: Arc<ImageStore>, insecure: &[String]) -> Self {
        // reqwest is built without a default crypto provider: use ring, as the agent's API client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Puller {
            client: Client::new(client_config(insecure)),
            insecure: insecure.to_vec(),
            store,
        }
    }

    /// The store this puller fills.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Pulls `image` (the manifest, always; blobs and layers not yet stored) and records it.
    pub async fn pull(&self, image: &str, auth: &RegistryAuth) -> Result<Pulled, PullError> {
        let started = Instant::now();
        let reference = normalise(image)?;
        let name = reference.whole();
        let registry = |source| PullError::Registry {
            image: name.clone(),
            source,
        };
        let store_err = |source| PullError::Store {
            image: name.clone(),
            source,
        };
        // A pull with credentials gets a client of its own: oci-client keeps the first credential it
        // saw per registry, which must neither leak to other pods nor shadow the next credential.
        let client = match auth {
            RegistryAuth::Anonymous => self.client.clone(),
            _ => Client::new(client_config(&self.insecure)),
        };
        let (manifest, manifest_digest, config_json) = client
            .pull_manifest_and_config(&reference, auth)
            .await
            .map_err(registry)?;
        let config = parse_config(&config_json).map_err(|reason| PullError::Config {
            image: name.clone(),
            reason,
        })?;
        let config_digest = manifest.config.digest.clone();
        if !self.store.has_blob(&config_digest) {
            self.store
                .write_blob(&config_digest, config_json.as_bytes())
                .map_err(store_err)?;
        }
        let mut downloaded = 0u64;
        let mut size = manifest.config.size.max(0) as u64;
        for layer in &manifest.layers {
            size += layer.size.max(0) as u64;
            if self.store.layer_dir(&layer.digest).map_err(store_err)?.exists() {
                continue;
            }
            if !self.store.has_blob(&layer.digest) {
                downloaded += self.fetch_blob(&client, &reference, layer).await?;
            }
            let store = Arc::clone(&self.store);
            let digest = layer.digest.clone();
            let unpacking = Instant::now();
            tokio::task::spawn_blocking(move || store.unpack(&digest))
                .await
                .map_err(|e| PullError::Task {
                    image: name.clone(),
                    reason: e.to_string(),
                })?
                .map_err(store_err)?;
            debug!(image = %name, layer = %layer.digest, took_ms = unpacking.elapsed().as_millis() as u64, "layer unpacked");
        }
        let record = ImageRecord {
            reference: name.clone(),
            repo_digest: format!(
                "{}/{}@{manifest_digest}",
                reference.registry(),
                reference.repository()
            ),
            manifest_digest,
            config_digest,
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            size,
            config,
        };
        self.store.record(&record).map_err(store_err)?;
        let took = started.elapsed();
        info!(image = %name, downloaded, size, took_ms = took.as_millis() as u64, "image pulled");
        Ok(Pulled {
            image: record,
            downloaded,
            took,
        })
    }

    /// Downloads one blob into the store (verified by `oci-client` as it streams); returns its size.
    async fn fetch_blob(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &OciDescriptor,
    ) -> Result<u64, PullError> {
        let name = reference.whole();
        let store_err = |source| PullError::Store {
            image: name.clone(),
            source,
        };
        let temp: PathBuf = self.store.temp_path("blob");
        let file = tokio::fs::File::create(&temp).await.map_err(|source| {
            store_err(StoreError::Io {
                path: temp.clone(),
                source,
            })
        })?;
        let result = client.pull_blob(reference, layer, file).await;
        if let Err(source) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(PullError::Registry {
                image: name.clone(),
                source,
            });
        }
        self.store.commit_blob(&temp, &layer.digest).map_err(store_err)?;
        Ok(layer.size.max(0) as u64)
    }
}

/// The container-relevant part of an image configuration (OCI and Docker use the same JSON names).
fn parse_config(json: &str) -> Result<ImageConfig, String> {
    let parsed: oci_spec::image::ImageConfiguration =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    let Some(c) = parsed.config() else {
        return Ok(ImageConfig::default());
    };
    Ok(ImageConfig {
        entrypoint: c.entrypoint().clone(),
        cmd: c.cmd().clone(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_normalise_as_kubelet_does() {
        assert_eq!(
            normalise("busybox").expect("ref").whole(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalise("10.0.0.1:5000/demo/web:v2").expect("ref").whole(),
            "10.0.0.1:5000/demo/web:v2"
        );
        assert!(normalise("busy box").is_err());
        assert!(normalise("busybox:").is_err());
    }

    #[test]
    fn docker_and_oci_configs_give_entrypoint_cmd_env() {
        let docker = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/httpd"],"Cmd":["-f"],"Env":["PATH=/bin"],"WorkingDir":"/www","User":""},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = parse_config(docker).expect("config");
        assert_eq!(c.entrypoint, Some(vec!["/bin/httpd".to_string()]));
        assert_eq!(c.cmd, Some(vec!["-f".to_string()]));
        assert_eq!(c.env, vec!["PATH=/bin".to_string()]);
        assert_eq!(c.working_dir.as_deref(), Some("/www"));
        assert_eq!(c.user, None);
    }
}
