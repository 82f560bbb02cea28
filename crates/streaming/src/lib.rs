//! Streaming for `kubectl exec` (and, later, attach and port-forward): a client's
//! WebSocket reaches the container through two proxies, as upstream's does.
//!
//! ```text
//! kubectl ──ws──► API server ──upgrade proxy──► kubelet ──upgrade proxy──► runtime's
//!                 (pods/exec)                  (/exec/…)                  streaming server
//!                                                                          (CRI Exec URL)
//! ```
//!
//! - [`proxy`]: forwards an HTTP upgrade request to a backend and, once both sides have
//!   switched protocols, splices the two connections byte for byte.
//! - [`channel`]: the `channel.k8s.io` WebSocket protocol the runtime speaks (stream
//!   numbers, the exit status message kubectl turns into its exit code).

pub mod channel;
pub mod portforward;
pub mod proxy;
pub mod spdy;
pub mod tunnel;
pub mod wsstream;
