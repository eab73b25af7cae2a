//! Images: pulled from registries ([`pull`]), kept once per node ([`store`]), layers unpacked for
//! overlayfs ([`unpack`]).

pub mod pull;
pub mod store;
pub mod unpack;

pub use oci_client::secrets::RegistryAuth;
pub use pull::{PullError, Pulled, Puller, normalise};
pub use store::{ImageConfig, ImageRecord, ImageStore, StoreError};
