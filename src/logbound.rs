//! What a workspace may write to the server log. The log is the platform's, on the server's
//! disk, outside every quota, and a tenant decides much of what goes in it: each error with its
//! statement, each WARNING its code raises. One `RAISE WARNING` of 100 kB in a loop, or failing
//! statements of 100 MB each, wrote gigabytes. So each message of a tenant's session is cut to
//! [`FIELD_BYTES`] per field, a statement longer than that is not repeated in the log, and each
//! workspace database has a budget in shared memory: `dl_tenancy.log_burst_kb` at once, refilled
//! at `dl_tenancy.log_rate_kb` a second. Past it the workspace's messages still reach its client,
//! not the log. The platform's sessions are not limited.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

static RATE_KB: GucSetting<i32> = GucSetting::<i32>::new(64);
static BURST_KB: GucSetting<i32> = GucSetting::<i32>::new(1024);

/// The most one field of one message (message, detail, hint, context, statement) puts in the
/// log.
const FIELD_BYTES: usize = 4096;

/// Budgets kept at once (a thousand workspaces and more per server); past that, databases
/// share them (by oid).
const ENTRIES: usize = 4096;

#[derive(Copy, Clone, Default)]
struct Budget {
    database: u32,
    /// Bytes the database may still log.
    bytes: i64,
    /// When `bytes` was last refilled (PostgreSQL timestamp, µs).
    at: i64,
}

unsafe impl PGRXSharedMemory for Budget {}

static BUDGETS: PgLwLock<[Budget; ENTRIES]> = unsafe { PgLwLock::new(c"dl_tenancy.log_budgets") };
static SHARED: AtomicBool = AtomicBool::new(false);
static mut PREVIOUS: pg_sys::emit_log_hook_type = None;

pub(crate) fn define_settings() {
    GucRegistry::define_int_guc(
        c"dl_tenancy.log_rate_kb",
        c"Server log a workspace database's sessions may write per second, in kB.",
        c"Past its budget a workspace's messages reach its clients only.",
        &RATE_KB,
        0,
        i32::MAX / 1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"dl_tenancy.log_burst_kb",
        c"Server log a workspace database's sessions may write at once, in kB.",
        c"",
        &BURST_KB,
        0,
        i32::MAX / 1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// The shared budgets and the hook (from `_PG_init` while shared_preload_libraries is
/// processed).
pub(crate) fn install() {
    pg_shmem_init!(BUDGETS = [Budget::default(); ENTRIES]);
    SHARED.store(true, Ordering::Release);
    // SAFETY: the postmaster loads the library once, single-threaded, before any backend.
    unsafe {
        PREVIOUS = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(bound);
    }
}

/// Called for every message bound for the server log. It must never raise: it only reads
/// what the session already knows (a session not yet known to be a tenant's is not limited:
/// the login's own messages, before its first statement).
unsafe extern "C-unwind" fn bound(edata: *mut pg_sys::ErrorData) {
    if let Some(previous) = PREVIOUS {
        previous(edata);
    }
    if edata.is_null()
        || !(*edata).output_to_server
        || (*edata).elevel >= pg_sys::PANIC as i32
        || pg_sys::CritSectionCount > 0
        // Exiting: its process slot is gone, and taking the budgets' lock then could PANIC.
        || pg_sys::MyProc.is_null()
        || crate::logins::known_tenant_session() != Some(true)
    {
        return;
    }
    let e = &mut *edata;
    let mut bytes = 0;
    for field in [
        e.message,
        e.detail,
        e.detail_log,
        e.hint,
        e.context,
        e.internalquery,
    ] {
        bytes += cut(field);
    }
    let statement = pg_sys::debug_query_string;
    if !statement.is_null() && !e.hide_stmt {
        let len = CStr::from_ptr(statement).to_bytes().len();
        if len > FIELD_BYTES {
            e.hide_stmt = true;
        } else {
            bytes += len;
        }
    }
    if !take(pg_sys::MyDatabaseId.to_u32(), bytes as i64 + 64) {
        e.output_to_server = false;
    }
}

/// Cuts a message field to [`FIELD_BYTES`] (at a character boundary) in place; its length.
unsafe fn cut(field: *mut c_char) -> usize {
    if field.is_null() {
        return 0;
    }
    let bytes = CStr::from_ptr(field).to_bytes();
    if bytes.len() <= FIELD_BYTES {
        return bytes.len();
    }
    let mut end = FIELD_BYTES;
    // A UTF-8 continuation byte is 0b10xxxxxx: back up to the start of its character.
    while end > 0 && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    *field.add(end) = 0;
    end
}

/// Takes `bytes` from the database's budget, refilled for the time since it was last;
/// whether there were enough.
fn take(database: u32, bytes: i64) -> bool {
    if !SHARED.load(Ordering::Acquire) {
        return true;
    }
    let burst = i64::from(BURST_KB.get()) * 1024;
    let rate = i64::from(RATE_KB.get()) * 1024;
    // SAFETY: reads the clock; never raises.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut budgets = BUDGETS.exclusive();
    let start = database as usize % ENTRIES;
    let slot = (0..ENTRIES)
        .map(|i| (start + i) % ENTRIES)
        .find(|&i| budgets[i].database == database || budgets[i].database == 0)
        .unwrap_or(start);
    let b = &mut budgets[slot];
    if b.database == 0 {
        *b = Budget {
            database,
            bytes: burst,
            at: now,
        };
    }
    let refill = (now - b.at).max(0) as i128 * rate as i128 / 1_000_000;
    b.bytes = (b.bytes as i128 + refill).min(burst as i128) as i64;
    b.at = now;
    if b.bytes < bytes {
        return false;
    }
    b.bytes -= bytes;
    true
}
