//! As a container's first process, a program that installs no handler never sees
//! SIGTERM (the kernel drops signals PID 1 does not handle), and the pod would wait for
//! its whole grace period. Upstream's agnhost (a Go program) exits on SIGTERM, so this
//! one does too. The C library std already links provides `signal` and `_exit`.

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" fn terminate(_signum: i32) {
    // Only async-signal-safe calls in a handler: `_exit`, not `std::process::exit`.
    unsafe { _exit(0) }
}

pub fn exit_on_terminate() {
    for signum in [SIGTERM, SIGINT] {
        // SAFETY: the handler calls only `_exit`, which is async-signal-safe.
        unsafe {
            signal(signum, terminate);
        }
    }
}
