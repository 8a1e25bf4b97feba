//! The server's disk floor. Quotas bound each workspace, but together they may promise more
//! than the disk holds, and a full disk is the worst way to find out: the next WAL write fails,
//! the server stops with a PANIC, and its log, on the same disk, may not even say why. So the
//! watchdog also reads the free space of the data directory's filesystem (and of `pg_wal`'s,
//! which may be elsewhere) every pass: below `dl_tenancy.disk_floor_mb`, every workspace's
//! writes are refused as if each were over its quota (53100, src/quota.rs), until there is a
//! fifth more than the floor again. Reads, deletes and the platform's own sessions go on, and
//! the server logs the change while it still has room to.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

static FLOOR_MB: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Whether the server is below its floor; set only by the watchdog.
static LOW: PgAtomic<AtomicBool> = unsafe { PgAtomic::new(c"dl_tenancy.disk.low") };

/// Whether [`LOW`] exists: only with the library in shared_preload_libraries.
static SHARED: AtomicBool = AtomicBool::new(false);

/// What a workspace's refused write says while the server is low on disk.
pub(crate) const LOW_TEXT: (&str, &str, &str) = (
    "the server is low on disk space",
    "Writes of every workspace on this server are refused until the operator frees space.",
    "Reads, DELETE, TRUNCATE and DROP still run; retry the write later.",
);

pub(crate) fn define_settings() {
    GucRegistry::define_int_guc(
        c"dl_tenancy.disk_floor_mb",
        c"Free space below which every workspace's writes are refused (53100), in MB.",
        c"Checked by the dl_tenancy watchdog on the data directory's and pg_wal's filesystems; writes resume a fifth above it. 0: no floor.",
        &FLOOR_MB,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
}

/// The shared flag (from `_PG_init` while shared_preload_libraries is processed).
pub(crate) fn install() {
    pg_shmem_init!(LOW);
    SHARED.store(true, Ordering::Release);
}

/// Whether workspaces' writes are refused for want of disk.
pub(crate) fn low() -> bool {
    SHARED.load(Ordering::Acquire) && LOW.get().load(Ordering::Acquire)
}

/// The watchdog's pass: reads the free space and sets the flag; returns the free bytes and
/// the floor when the flag changed (for the server log).
pub(crate) fn check() -> Option<(bool, u64, u64)> {
    let floor = u64::try_from(FLOOR_MB.get()).unwrap_or(0) * 1024 * 1024;
    let free = free_bytes();
    let was = LOW.get().load(Ordering::Acquire);
    let now = match free {
        _ if floor == 0 => false,
        // Unreadable: keep what was known rather than guess either way.
        None => was,
        Some(free) if was => free < floor + floor / 5,
        Some(free) => free < floor,
    };
    LOW.get().store(now, Ordering::Release);
    (now != was).then(|| (now, free.unwrap_or(0), floor))
}

/// Free bytes (for unprivileged users) on the filesystems of the data directory and of
/// `pg_wal`, whichever has less.
fn free_bytes() -> Option<u64> {
    // SAFETY: DataDir is set before any background worker starts and never changes.
    let data = unsafe { CStr::from_ptr(pg_sys::DataDir) }.to_str().ok()?;
    [data.to_string(), format!("{data}/pg_wal")]
        .iter()
        .filter_map(|dir| available(dir))
        .min()
}

fn available(dir: &str) -> Option<u64> {
    let path = std::ffi::CString::new(dir).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a system call on a local struct and a NUL-terminated path.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}
