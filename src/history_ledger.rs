//! What the override history's retention (src/history.rs) knows between two looks at a
//! history table, in shared memory, per database and kind: the bytes of the table's files
//! when last measured, the most every backend's writes since could have added, and the time
//! of its oldest row when last looked. A write then measures the files only when the bound
//! could have been passed, and looks for rows past the age only once the cutoff has reached
//! the oldest row: nearly every override write costs one lock of this table instead of
//! opening the history table, its indexes and its TOAST table (BENCHMARKS.md section 15: that
//! made `dl_apply_person_override` 6.7% dearer than 0.5.0).
//!
//! Slots are found by hash. A slot holding another database's figures is taken over and its
//! figures forgotten, so a collision makes a write measure, never skip a measurement: the
//! bound holds, collisions cost time. Figures older than [`TRUST_USEC`] are forgotten too, so
//! rows that reach the table without a write of an override (a restore's COPY) or a database
//! that took a dropped one's oid are measured within a minute. Without the library in
//! `shared_preload_libraries` every write measures and looks, as before.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// (database, kind) pairs the table holds at once; 1,000 workspaces fill a quarter.
const SLOTS: usize = 8192;

/// The most one history row can add to the table's files: four patches of at most 1 MiB
/// (uncompressed: `is_valid_payload_size`), TOAST's chunk headers and index (under 5%), a key
/// of 512 bytes and statuses of 64 characters, and a new page in the heap and in each of the
/// three indexes.
pub const MAX_ROW_BYTES: i64 = 4 * 1_048_576 * 21 / 20 + 4 * 8192 + 4096;

/// How long the figures of a slot are trusted: a minute.
const TRUST_USEC: i64 = 60 * 1_000_000;

#[derive(Clone, Copy)]
struct Slot {
    /// `database << 1 | kind`, 0 for a free slot.
    key: u64,
    /// Bytes at the last measurement; -1 unknown.
    measured: i64,
    /// The most the writes recorded since could have added.
    pending: i64,
    /// No visible row was older than this when last looked (`TimestampTz`); i64::MIN unknown.
    oldest: i64,
    /// When the slot was taken (`TimestampTz`): its figures go after [`TRUST_USEC`].
    since: i64,
}

// SAFETY: plain integers.
unsafe impl PGRXSharedMemory for Slot {}

const FREE: Slot = Slot {
    key: 0,
    measured: -1,
    pending: 0,
    oldest: i64::MIN,
    since: 0,
};

// SAFETY: a name no other library uses.
static LEDGER: PgLwLock<[Slot; SLOTS]> = unsafe { PgLwLock::new(c"dl_tenancy.history") };
static SHARED: AtomicBool = AtomicBool::new(false);

/// The shared table (from `_PG_init` while shared_preload_libraries is processed).
pub fn install() {
    pg_shmem_init!(LEDGER = [FREE; SLOTS]);
    SHARED.store(true, Ordering::Release);
}

/// The history of `kind` ('person' or 'company') in this backend's database.
#[derive(Clone, Copy)]
pub struct Table(u64);

impl Table {
    pub fn of(kind: &str) -> Table {
        // SAFETY: MyDatabaseId is set before any statement runs.
        let database = u64::from(unsafe { pg_sys::MyDatabaseId }.to_u32());
        Table(database << 1 | u64::from(kind == "company"))
    }

    fn index(self) -> usize {
        (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % SLOTS
    }

    /// Runs `f` on this table's slot, taking it over (figures forgotten) when another holds it.
    fn with<T>(self, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        if !SHARED.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: a transaction is running (the ledger is used inside a write).
        let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        let mut table = LEDGER.exclusive();
        let slot = &mut table[self.index()];
        if slot.key != self.0 || now.saturating_sub(slot.since) > TRUST_USEC {
            *slot = Slot {
                key: self.0,
                since: now,
                ..FREE
            };
        }
        Some(f(slot))
    }

    /// Records that a statement wrote `rows` history rows. Returns the pending bytes to hand
    /// back to [`Table::measured`] when the files must be measured now (the bound could have
    /// been passed, or nothing is known), `None` when they cannot be past `bound`.
    pub fn wrote(self, rows: i64, bound: i64) -> Option<i64> {
        let added = rows.saturating_mul(MAX_ROW_BYTES);
        self.with(|slot| {
            slot.pending = slot.pending.saturating_add(added);
            (slot.measured < 0 || slot.measured.saturating_add(slot.pending) > bound)
                .then_some(slot.pending)
        })
        .unwrap_or(Some(0))
    }

    /// The files measured at `bytes`, which include the writes pending when the measurement
    /// began (`pending`, from [`Table::wrote`]), not those recorded since.
    pub fn measured(self, bytes: i64, pending: i64) {
        self.with(|slot| {
            slot.measured = bytes;
            slot.pending = (slot.pending - pending).max(0);
        });
    }

    /// Whether a row may be older than `cutoff`: unknown, or the oldest seen is.
    pub fn may_hold_older(self, cutoff: i64) -> bool {
        self.with(|slot| slot.oldest < cutoff).unwrap_or(true)
    }

    /// No visible row was older than `oldest` (rows written later are newer, except those of
    /// transactions still open, which the transaction limit bounds; deletes only make the
    /// oldest newer).
    pub fn oldest_is(self, oldest: i64) {
        self.with(|slot| slot.oldest = oldest);
    }

    /// Forget what is known (after a prune or a rewrite): the next write looks again.
    pub fn forget(self) {
        self.with(|slot| {
            *slot = Slot {
                key: slot.key,
                since: slot.since,
                ..FREE
            }
        });
    }
}
