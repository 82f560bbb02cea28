//! Stand-alone monitor/holder executable, used by this crate's tests (where
//! the current executable is the test harness). `skiff` itself re-executes
//! its own binary instead: see `skiff_runtime::shim::main_if_shim`.
fn main() {
    match skiff_runtime::shim::main_if_shim() {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!(
                "usage: skiff-runtime-shim {} STATE_DIR | {}",
                skiff_runtime::shim::SHIM_ARG,
                skiff_runtime::shim::SANDBOX_ARG
            );
            std::process::exit(2);
        }
    }
}
