//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`), as upstream's
//! apiextensions-apiserver serves them, inside this API server.
//!
//! - [`definition`]: what a CRD says, read into catalogue entries ([`CustomVersion`] per
//!   served version), and the validation of the CRD object itself.
//! - [`schema`]: a version's structural `openAPIV3Schema` applied to custom objects:
//!   pruning of unknown fields, defaults, validation with upstream's messages; [`cel`]
//!   its `x-kubernetes-validations` rules.
//! - [`controller`]: the in-process controller that accepts names, sets `Established`,
//!   puts the resources in the catalogue, and empties a deleted CRD's resources.

pub mod cel;
pub mod controller;
pub mod definition;
pub mod jsonpath;
pub mod schema;

pub use definition::{compare_versions, CustomVersion};

/// The finalizer that holds a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// The group CRDs are served in.
pub const GROUP: &str = "apiextensions.k8s.io";
