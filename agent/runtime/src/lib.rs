//! berth's pod runtime, kubelet's lower half without Kubernetes types: images pulled from OCI
//! registries into a content-addressed store, container root filesystems as overlay mounts over the
//! unpacked layers, OCI runtime specs run by runc, cgroups. The agent's pod workers drive it.

pub mod cgroups;
pub mod container;
pub mod exec;
pub mod image;
pub mod rootfs;
pub mod runc;
pub mod sandbox;
pub mod shim;
pub mod spec;
