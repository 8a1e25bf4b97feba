//! The library's allocator: the system's, with a reserve for when it fails. A workspace
//! session's memory is capped (RLIMIT_DATA, src/admission.rs), and PostgreSQL answers its
//! own failed allocations with 53200; but Rust aborts the process on one, and an aborted
//! backend makes the postmaster restart every session of the server. So a failed
//! allocation of this library's Rust code is served from a reserve instead, and the session
//! is ended (FATAL, an orderly exit) at its next statement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Enough for the Rust code that ran out to finish what it was doing.
const RESERVE: usize = 16 << 20;

#[repr(C, align(4096))]
struct Reserve(UnsafeCell<[u8; RESERVE]>);

// SAFETY: handed out in disjoint pieces through an atomic cursor, never reused.
unsafe impl Sync for Reserve {}

static MEMORY: Reserve = Reserve(UnsafeCell::new([0; RESERVE]));
static USED: AtomicUsize = AtomicUsize::new(0);
/// The process that needed the reserve (0: none): a child forked after would not be out of
/// memory itself.
static TOUCHED_BY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct WithReserve;

fn base() -> *mut u8 {
    MEMORY.0.get().cast()
}

fn in_reserve(ptr: *mut u8) -> bool {
    let (start, p) = (base() as usize, ptr as usize);
    p >= start && p < start + RESERVE
}

/// A piece of the reserve, or null when it is spent too.
fn from_reserve(layout: Layout) -> *mut u8 {
    TOUCHED_BY.store(std::process::id(), Ordering::Release);
    let mut used = USED.load(Ordering::Acquire);
    loop {
        let start = (base() as usize + used).next_multiple_of(layout.align()) - base() as usize;
        let end = start + layout.size();
        if end > RESERVE {
            return std::ptr::null_mut();
        }
        match USED.compare_exchange(used, end, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: start..end is inside the reserve and handed out once.
            Ok(_) => return unsafe { base().add(start) },
            Err(now) => used = now,
        }
    }
}

// SAFETY: every pointer comes from System or from the reserve, and goes back to where it
// came from (the reserve never takes any back).
unsafe impl GlobalAlloc for WithReserve {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if p.is_null() {
            from_reserve(layout)
        } else {
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !in_reserve(ptr) {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_reserve(ptr) {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                return p;
            }
        }
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        let p = from_reserve(new);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        p
    }
}

/// Ends the session (FATAL: an orderly exit) once the reserve was needed: the session is out
/// of its memory share, and the reserve is not given back.
pub fn end_session_if_reserve_used() {
    // Asked before every statement: a system call only once the reserve was touched at all.
    let touched = TOUCHED_BY.load(Ordering::Acquire);
    if touched != 0 && touched == std::process::id() {
        ereport_fatal();
    }
}

fn ereport_fatal() {
    use pgrx::prelude::*;
    ereport!(
        PgLogLevel::FATAL,
        PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        "the session ran out of its memory share",
        "Reconnect; a query that needs more memory than the share fails with 53200."
    );
}
