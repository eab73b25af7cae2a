//! berth's compact control plane: a Kubernetes API server, its store, the scheduler and the
//! controllers in one process (issue 4; `ARCHITECTURE.md` at the repository root tells the whole story).
//!
//! - [`store`]: the MVCC key-value store every API object lives in (etcd's semantics), over one SQLite
//!   file or over etcd.
//! - [`api`]: the Kubernetes API, transport-free: resources, admission, patches, selectors, watch,
//!   discovery, OpenAPI, tables, authentication and authorization; errors as `Status`.
//! - [`server`]: HTTPS (rustls, HTTP/1.1 and HTTP/2) in front of the API.
//! - [`controllers`]: the scheduler and the controllers, one event loop over the store.
//! - [`pki`]: the CA, the serving certificate, tokens, `admin.kubeconfig`, node certificates.
//! - [`jwt`]: the key that signs service-account tokens; signing and verifying them.
//! - [`metrics`]: `/metrics` in Prometheus' text format.
//! - [`kubelet`]: the client side of node agents' kubelet API (`pods/log`).
//! - [`sim`]: hollow nodes, for tests and benchmarks at scale.

pub mod api;
pub mod controllers;
pub mod jwt;
pub mod kubelet;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod sim;
pub mod store;
pub mod tokens;
