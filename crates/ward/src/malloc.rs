//! The allocator's settings for `ward serve` (SPEC P-4: resident memory under 100 MB idle and
//! 300 MB under load, for any input within the limits).
//!
//! Ward uses glibc malloc with one arena and a fixed 128 KiB mmap threshold: freed small
//! blocks are reused by every thread instead of staying in per-thread arenas, and every
//! large buffer (a page being serialized, a decrypted resource) is its own mapping, returned to
//! the system when freed. Measured against the defaults, mimalloc and jemalloc in
//! ARCHITECTURE.md ("Memory per request"). glibc reads these settings only at process start
//! (setting them in-process needs `mallopt`, an unsafe FFI call), so the process re-executes
//! itself once with `GLIBC_TUNABLES` set; an operator's own `GLIBC_TUNABLES` is left alone.

use std::os::unix::process::CommandExt;

pub const TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=131072";

/// Re-executes this process with [`TUNABLES`] unless `GLIBC_TUNABLES` is already set. Returns
/// only when nothing was done or the re-execution failed (then the defaults stay).
pub fn reexec_tuned() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", TUNABLES)
        .exec();
    tracing::warn!(error = %err, "could not re-execute with the allocator settings; keeping the defaults");
}
