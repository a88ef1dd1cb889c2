//! How the examples and benchmarks set up their process (`setup`, first thing in `main`): the allocator
//! (mimalloc, told to keep freed memory) and rayon's pool with the calling thread as one of its workers
//! (`lowrank::tensor::threads::use_calling_thread`: the model's thread works instead of waiting).
//! Also the process's peak resident memory, for the reports.
//!
//! A training step allocates and frees many MB-sized tensors. The system allocator and mimalloc's defaults
//! both hand such blocks back to the OS after they are freed, and the next step faults them back in
//! and has the kernel zero every page: a fifth of a medium-size step in profiles. Keeping freed memory
//! mapped removes that cost. The library itself imposes no allocator.

// Each example includes this file and uses the parts it needs.
#![allow(dead_code)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` and `mi_option_os_tag` (positions in mimalloc.h's option enum).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const OS_TAG: libmimalloc_sys::mi_option_t = 18;

/// Keeps freed memory and builds rayon's pool around the calling thread: call it before any kernel runs.
pub fn setup() {
    keep_freed_memory();
    lowrank::tensor::threads::use_calling_thread()
        .expect("rayon's pool is built here, before any kernel");
}

/// Never return freed memory to the OS (the process keeps its peak footprint until it exits).
fn keep_freed_memory() {
    // SAFETY: plain option getters / setters of the linked mimalloc. The os tag's documented default (100)
    // confirms the enum's numbering before the purge delay is changed, in case an update renumbers it.
    unsafe {
        if libmimalloc_sys::mi_option_get(OS_TAG) == 100 {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        }
    }
}

/// Peak resident set size of this process in MiB (Linux: VmHWM in /proc/self/status; 0 elsewhere).
pub fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib / 1024
}
