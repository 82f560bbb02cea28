//! # skiff-runtime: Skiff's container runtime
//!
//! A CRI v1 (`runtime.v1`) gRPC server on a unix socket that runs containers
//! through runc, so the kubelet can drive it exactly as it drives containerd.
//!
//! ## Where to start
//!
//! - [`run`] / [`RuntimeArgs`]: `skiff runtime`, the server ([`server`]).
//! - [`images()`] / [`ImagesArgs`] / [`ImagesCommand`]: `skiff images import|ls|rm|pull`.
//! - [`shim::main_if_shim`]: **`skiff`'s `main` must call it first** — the
//!   runtime re-executes the binary as the per-container monitor and the
//!   sandbox holder.
//! - [`cri`]: the gRPC services, a thin layer over [`runtime::Runtime`], which
//!   owns sandboxes ([`runtime::sandbox`]), containers ([`runtime::container`])
//!   and exec ([`runtime::exec`]).
//! - [`images`]: content-addressed store, archive import, registry pulls.
//! - [`network`]: CNI plugins (bridge + host-local by default); the default network's
//!   range follows the node's `podCIDR` (CRI `UpdateRuntimeConfig`).
//! - [`spec`]: CRI config → OCI `config.json` (pure, unit-tested).
//! - [`runc`], [`sys`]: the only places that run runc or make mount/cgroup calls.
//!
//! ## How a pod runs
//!
//! `RunPodSandbox` makes new net/IPC/UTS namespaces on a short-lived thread and
//! bind-mounts them under `ROOT/sandboxes/ID/ns/`, where the mounts alone keep
//! them (a pod sharing one PID namespace gets a holder process, its init's
//! parent). `CreateContainer`
//! mounts an overlay of the image's unpacked layers, writes the bundle and
//! starts a monitor that runs `runc create` holding the stdio pipes (or, for a
//! `tty` container, the terminal runc hands it on `--console-socket`); it writes
//! the CRI log and, at exit, `exit.json`. `StartContainer` is `runc start`.
//! All state is on disk, so a restarted runtime finds running containers.
//!
//! ## Not done yet
//!
//! `GetContainerEvents` (the kubelet relists instead), sysctls,
//! image pinning (the kubelet collects unused images), zstd layers, CNI `CHECK`. These RPCs answer
//! `UNIMPLEMENTED` or the fields are ignored.

pub mod cli;
pub mod cri;
pub mod error;
pub mod images;
pub mod network;
pub mod reference;
pub mod runc;
pub mod runtime;
pub mod seccomp;
pub mod server;
pub mod shim;
pub mod spec;
pub mod streaming;
pub mod sys;

/// Generated CRI v1 messages and services (`runtime.v1`).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

pub use cli::{images, ImagesArgs, ImagesCommand};
pub use error::{Error, Result};
pub use server::{run, serve, RuntimeArgs};
