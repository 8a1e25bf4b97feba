//! The lock budget of a tenant session. PostgreSQL's lock table is one for the whole server,
//! sized `max_locks_per_transaction` entries per backend; on 0.5.0 one transaction creating
//! ~11,000 tables (or one session taking advisory locks in a loop, which outlive the
//! transaction) filled it, and every workspace's queries and logins failed with 53200.
//!
//! PostgreSQL 15 has no hook on taking a lock. But every lock a backend holds, fast-path or
//! not, has an entry in the backend's private LOCALLOCK hash, whose elements come from its own
//! memory context and are never given back (a released entry is reused). So in a tenant
//! session that context allocates through a copy of its methods whose `alloc` refuses to grow
//! past `max_locks_per_transaction` entries: the lock that would pass it fails with 53400
//! before it touches the shared table, and the transaction's abort releases what it holds.
//! Each tenant backend then holds at most its own share of the table, which is what
//! PostgreSQL sized the table for: no tenant can take another's.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{c_void, CStr};
use std::mem::MaybeUninit;

/// PostgreSQL's alignment of a hash element and its entry.
const MAXALIGN: usize = 8;

const fn maxalign(n: usize) -> usize {
    n.div_ceil(MAXALIGN) * MAXALIGN
}

/// What one lock costs the LOCALLOCK hash: a dynahash element header and the entry.
const ELEMENT_BYTES: usize = maxalign(std::mem::size_of::<pg_sys::HASHELEMENT>())
    + maxalign(std::mem::size_of::<pg_sys::LOCALLOCK>());

/// The size of one batch of entries the hash allocates when it has none free: dynahash's
/// `choose_nelem_alloc`, at least 32 entries in a power-of-two allocation.
const BATCH_BYTES: usize = {
    let mut alloc = 32 * 4;
    loop {
        alloc <<= 1;
        if alloc / ELEMENT_BYTES >= 32 {
            break (alloc / ELEMENT_BYTES) * ELEMENT_BYTES;
        }
    }
};

// The hash's other allocations (bucket segments, its directory) are powers of two: a batch
// must not be one, or it could not be told apart.
const _: () = assert!(!BATCH_BYTES.is_power_of_two());

thread_local! {
    static FENCED: Cell<bool> = const { Cell::new(false) };
    /// Entries the LOCALLOCK hash has room for: the 16 it is created with, and each batch
    /// it allocated since the fence went up.
    static ENTRIES: Cell<usize> = const { Cell::new(16) };
}

/// The fenced context's methods: PostgreSQL's own, with [`alloc_within_budget`] in front of
/// `alloc`. One per process, written once, before the context points at it.
static mut METHODS: MaybeUninit<pg_sys::MemoryContextMethods> = MaybeUninit::uninit();
static mut ALLOC: Option<
    unsafe extern "C-unwind" fn(pg_sys::MemoryContext, pg_sys::Size) -> *mut c_void,
> = None;

/// Puts up the budget in a tenant's session (and its parallel workers), once it is known to
/// be one; sessions of the platform (superusers, the load login that restores a workspace)
/// have none. Called before each statement runs.
pub(crate) fn fence_once() {
    if !FENCED.get() {
        // SAFETY: reads of the backend's own globals.
        if unsafe { crate::logins::is_tenant_session() } {
            fence();
        } else {
            FENCED.set(true);
        }
    }
}

/// Puts up the budget in this process, once: from the login hook for a tenant's login (so
/// that even a session that only calls functions through the fast-path protocol, which no
/// statement hook sees, has it), or from [`fence_once`].
pub(crate) fn fence() {
    if FENCED.replace(true) {
        return;
    }
    // SAFETY: this process's own memory contexts, from its only thread.
    unsafe {
        let Some(context) = locallock_context() else {
            pgrx::warning!(
                "dl_tenancy: this session's lock table was not found; locks not limited"
            );
            return;
        };
        let mut methods = *(*context).methods;
        ALLOC = methods.alloc;
        methods.alloc = Some(alloc_within_budget);
        METHODS = MaybeUninit::new(methods);
        (*context).methods = std::ptr::addr_of!(METHODS).cast::<pg_sys::MemoryContextMethods>();
    }
}

/// SERIALIZABLE is refused in a tenant's session (0A000): its predicate locks take entries of
/// another table every database shares, sized `max_pred_locks_per_transaction` (64) per
/// connection slot and fixed at start; one transaction reading 31 pages of each of 105 tables
/// (210 ordinary locks, well within the budget) filled it, and every SERIALIZABLE transaction
/// on the server failed with 53200, the platform's included. Sized for the lock budget it
/// would cost well over 100 MB of shared memory.
pub(crate) fn check_isolation() {
    // SAFETY: a read of the backend's own transaction state.
    if unsafe { pg_sys::XactIsoLevel } == pg_sys::XACT_SERIALIZABLE as i32 {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "SERIALIZABLE transactions are not available to workspace sessions",
            "dl_tenancy::locks",
        )
        .set_detail(
            "Their predicate locks take entries of a table that every database of the server \
             shares.",
        )
        .set_hint("Use REPEATABLE READ, with row locks (SELECT ... FOR UPDATE) where needed.")
        .report(PgLogLevel::ERROR);
    }
}

/// The memory context of the LOCALLOCK hash: dynahash names a private table's context
/// "dynahash" with the table's name as its identifier, under TopMemoryContext.
unsafe fn locallock_context() -> Option<pg_sys::MemoryContext> {
    let mut child = (*pg_sys::TopMemoryContext).firstchild;
    while !child.is_null() {
        let named =
            |p: *const std::ffi::c_char, want: &CStr| !p.is_null() && CStr::from_ptr(p) == want;
        if named((*child).name, c"dynahash") && named((*child).ident, c"LOCALLOCK hash") {
            return Some(child);
        }
        child = (*child).nextchild;
    }
    None
}

/// `alloc` of the fenced context: the hash grows only when every entry it has is in use, so
/// growing past the budget means holding more locks than it. The refusal comes before
/// PostgreSQL records anything of the new lock. It grows 46 entries at a time (PostgreSQL 15
/// on x86-64), and a batch that would pass the budget is refused whole: a session gets
/// between `max_locks_per_transaction` − 45 and `max_locks_per_transaction` locks.
#[pg_guard]
unsafe extern "C-unwind" fn alloc_within_budget(
    context: pg_sys::MemoryContext,
    size: pg_sys::Size,
) -> *mut c_void {
    if size == BATCH_BYTES {
        let entries = ENTRIES.get() + BATCH_BYTES / ELEMENT_BYTES;
        // SAFETY: a PostgreSQL setting fixed at server start.
        let locks = pg_sys::max_locks_per_xact.max(0) as usize;
        if entries > locks {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                "this session holds too many locks",
                "dl_tenancy::locks",
            )
            .set_detail(format!(
                "A workspace session may hold at most {locks} locks at once \
             (max_locks_per_transaction): each table, index or sequence a transaction creates, \
             locks or reads takes one, and so does each advisory lock."
            ))
            .set_hint(
                "Create or lock fewer objects in one transaction, or release advisory locks \
             (pg_advisory_unlock_all).",
            )
            .report(PgLogLevel::ERROR);
        }
        ENTRIES.set(entries);
    }
    match ALLOC {
        Some(alloc) => alloc(context, size),
        None => std::ptr::null_mut(),
    }
}
