//! Links `skiff` as a position-dependent executable.
//!
//! The container runtime re-executes this binary once per container (its monitor) and
//! once per pod (the sandbox holder). In a position-independent executable the loader
//! rewrites every pointer in the read-only data it relocates, a few MiB of this binary's
//! vtables and tables, so each of those small processes would start with that much
//! private memory. Linked at a fixed address, those pages stay clean and are shared with
//! the page cache, as a Go binary's are (Go links executables this way by default).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
