//! Images: the content-addressed store, archive import, registry pulls.
pub mod archive;
pub mod pull;
pub mod registries;
pub mod store;
pub mod unpack;

pub use store::{ImageRecord, ImageStore};
