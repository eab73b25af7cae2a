//! The agent's client of the API server: from a kubeconfig file, or from a pod's service-account
//! credentials. Either way the result is one kube-rs [`Client`] and the same code path after it.
//!
//! The agent implements the `kubernetes` Service's ClusterIP itself, so it must never depend on it:
//! a kubeconfig names the API server's own address; in a pod, `KUBERNETES_SERVICE_HOST` should too
//! (set it in the DaemonSet to the API server's address, as Cilium's `k8sServiceHost`).

use std::path::Path;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use thiserror::Error;

/// Errors of building the client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and the agent does not run in a pod.
    #[error(
        "no API server: give --kubeconfig, the join flags (--server, --token, --ca-cert-hash), or --manifests for standalone mode ({0})"
    )]
    NoCredentials(#[source] kube::config::InClusterError),
    /// The client could not be built from the configuration (TLS material, proxy settings).
    #[error("API client: {0}")]
    Build(#[source] kube::Error),
}

/// The configuration from the kubeconfig at `path`, or in-cluster credentials when `path` is `None`.
pub fn config(path: Option<&Path>) -> Result<Config, ClientError> {
    match path {
        Some(path) => config_from_file(path),
        None => Config::incluster().map_err(ClientError::NoCredentials),
    }
}

/// The configuration a kubeconfig file describes (its current context).
pub fn config_from_file(path: &Path) -> Result<Config, ClientError> {
    let err = |source| ClientError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
    // Building the config is async only for exec plugins; a file with certificates or a token needs no
    // runtime, so a small one is made here.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(kube::config::KubeconfigError::ReadConfig(e, path.into())))?;
    runtime
        .block_on(Config::from_custom_kubeconfig(
            kubeconfig,
            &KubeConfigOptions::default(),
        ))
        .map_err(err)
}

/// A client for `config`. Must be called inside the tokio runtime that will use it (the client's
/// request buffer is a task on it).
pub fn client(config: Config) -> Result<Client, ClientError> {
    Client::try_from(config).map_err(ClientError::Build)
}
