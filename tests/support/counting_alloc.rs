//! A global allocator that counts, per thread, the bytes allocated minus the bytes freed (`live`) and the
//! highest that count has reached (`peak_of`). Per thread, so that what rayon's workers or other tests
//! allocate for themselves does not disturb a measurement. A test binary includes it with
//! `#[path = "support/counting_alloc.rs"] mod counting_alloc;`.

// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A single request above this is refused (the process aborts, naming the size): a loader that believed
/// a size from a file fails the test at once instead of exhausting the machine.
pub const REFUSE_ABOVE: usize = 1 << 30;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no counters left, and needs none.
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + delta);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

// SAFETY: every allocation and release is the system allocator's (so its guarantees carry over); the
// counting around it touches only const-initialised thread-locals, which never allocate, and a refused
// request returns null, which GlobalAlloc allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        count(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator, under GlobalAlloc's own contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes this thread holds now (allocated minus freed since it started).
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Runs `f`; returns its result and the most bytes it held at once on this thread, above what was held
/// before.
pub fn peak_of<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let start = live();
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, PEAK.with(Cell::get) - start)
}
