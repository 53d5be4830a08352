//! hyper's OCI image store.
//!
//! - [`reference`]: Docker reference grammar and normalisation.
//! - [`registry`]: the distribution API client (auth, mirrors, insecure registries).
//! - [`content`]: content-addressed blobs and snapshots on disk, atomic writes.
//! - [`unpack`]: safe layer unpacking with whiteouts into overlayfs lower directories.
//! - [`store`]: image records and tags, garbage collection, leases held by pods.
//! - pull, push, load and save are methods of [`ImageStore`].

pub mod archive;
pub mod bridge;
pub mod content;
pub mod digest;
pub mod manifest;
pub mod progress;
mod pull;
mod push;
pub mod reference;
pub mod registry;
pub mod store;
mod sys;
pub mod unpack;

pub use archive::LoadedImage;
pub use digest::Digest;
pub use progress::{LayerState, Progress, ProgressSink};
pub use reference::Reference;
pub use registry::{Credential, CredentialStore, RegistryClient, RegistryConfig};
pub use store::{ImageError, ImageRecord, ImageStore, ImageSummary, LayerRecord};
