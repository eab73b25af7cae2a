//! berth's compact control plane (issue 4, in progress).
//!
//! - [`store`]: the embedded MVCC key-value store every API object lives in (etcd's semantics, one
//!   SQLite file).
//! - [`api`]: the Kubernetes API, transport-free: discovery, namespaces, configmaps, secrets; `Status`
//!   errors.
//! - [`pki`]: the CA, the serving certificate, the admin token and `admin.kubeconfig`.
//! - [`server`]: HTTPS (rustls, HTTP/1.1 and HTTP/2) in front of the API.
//!
//! Watch, patch, OpenAPI, the apps group, node identities, the scheduler and the controllers come next
//! (see `RESEARCH.md` beside this crate for the plan and the facts it rests on).

pub mod api;
pub mod controllers;
pub mod pki;
pub mod server;
pub mod sim;
pub mod store;
