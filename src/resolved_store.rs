//! Keeps `dl_internal.resolved_people` / `resolved_companies` equal to "base record merged
//! with the customer's override" for every identity_key, from statement-level triggers on
//! both layers (declared in sql/install/04_resolved.sql), and records override history (its
//! retention: src/history.rs).
//!
//! In Rust because every customer correction pays for it: a single-row write costs one
//! saved-plan statement for the changed keys (and the history rows), two lock acquisitions
//! and one saved-plan upsert, instead of a stack of PL/pgSQL frames (BENCHMARKS.md, 4).
//! The statements stay plain SQL, prepared once per backend and revalidated by PostgreSQL's
//! plan cache after DDL; every name in them is schema-qualified, operators included.

use crate::spi;
use pgrx::pg_sys;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;
use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::CStr;

/// A bulk refresh runs in slices, so that no statement holds a million keys' rows at once.
const SLICE_KEYS: usize = 20_000;
/// Past this many key locks of one kind in a transaction, lock the whole kind instead.
const MAX_KEY_LOCKS: i64 = 256;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Kind {
    Person,
    Company,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Layer {
    Cache,
    Override,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Event {
    Insert,
    Update,
    Delete,
}

/// The statements this module runs, one saved plan each per kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Statement {
    /// Keys in the transition tables; for the override layer also writes their history rows.
    ChangedKeys(Layer, Event),
    /// Recompute the resolved rows of `$1 text[]` (unique keys) that should exist; returns
    /// their keys.
    Upsert,
    /// Delete the resolved rows of `$1 text[]`: the keys the upsert did not return.
    Delete,
    /// Every key of the kind, in any table.
    AllKeys,
    /// History rows for an override TRUNCATE, written before it happens.
    HistoryOfTruncate,
}

impl Kind {
    fn from_arg(arg: &str) -> Kind {
        match arg {
            "person" => Kind::Person,
            "company" => Kind::Company,
            other => protocol_violated(&format!("unknown record kind {other:?}")),
        }
    }

    /// The first key of this kind's advisory locks (1 people, 2 companies), as in 0.1.0.
    fn lock_id(self) -> i32 {
        match self {
            Kind::Person => 1,
            Kind::Company => 2,
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Person => "person",
            Kind::Company => "company",
        }
    }

    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Person => "people",
            Kind::Company => "companies",
        }
    }
}

impl Statement {
    fn sql(self, kind: Kind) -> String {
        let k = kind.word();
        let cache = format!("dl_cache.{k}_enrichments");
        let overrides = format!("dl_override.{k}_overrides");
        let history = format!("dl_override.{k}_override_history");
        let resolved = format!("dl_internal.resolved_{}", kind.plural());
        let new_keys = "SELECT n.identity_key FROM new_rows AS n";
        let old_keys = "SELECT o.identity_key FROM old_rows AS o";
        // History rows for the overrides in `rows` (a DELETE's old rows, or a whole table
        // about to be truncated).
        let history_of_deleted = |rows: &str| {
            format!(
                "INSERT INTO {history} (identity_key, operation,
                        old_status, old_identity_payload_patch, old_raw_payload_patch, old_tombstoned)
                 SELECT o.identity_key, 'delete', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned
                   FROM {rows} AS o"
            )
        };
        match self {
            Statement::ChangedKeys(Layer::Cache, Event::Insert) => new_keys.to_string(),
            Statement::ChangedKeys(Layer::Cache, Event::Update) => {
                format!("{new_keys} UNION {old_keys}")
            }
            Statement::ChangedKeys(Layer::Cache, Event::Delete) => old_keys.to_string(),
            Statement::ChangedKeys(Layer::Override, Event::Insert) => format!(
                "WITH history AS (
                     INSERT INTO {history} (identity_key, operation,
                            new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned)
                     SELECT n.identity_key, 'insert', n.status, n.identity_payload_patch, n.raw_payload_patch, n.tombstoned
                       FROM new_rows AS n)
                 {new_keys}"
            ),
            Statement::ChangedKeys(Layer::Override, Event::Update) => format!(
                "WITH history AS (
                     INSERT INTO {history} (identity_key, operation,
                            old_status, new_status, old_identity_payload_patch, new_identity_payload_patch,
                            old_raw_payload_patch, new_raw_payload_patch, old_tombstoned, new_tombstoned)
                     SELECT COALESCE(n.identity_key, o.identity_key),
                            CASE WHEN o.identity_key IS NULL THEN 'insert' WHEN n.identity_key IS NULL THEN 'delete' ELSE 'update' END,
                            o.status, n.status, o.identity_payload_patch, n.identity_payload_patch,
                            o.raw_payload_patch, n.raw_payload_patch, o.tombstoned, n.tombstoned
                       FROM new_rows AS n
                       FULL JOIN old_rows AS o ON o.identity_key OPERATOR(pg_catalog.=) n.identity_key)
                 {new_keys} UNION {old_keys}"
            ),
            Statement::ChangedKeys(Layer::Override, Event::Delete) => format!(
                "WITH history AS ({}) {old_keys}",
                history_of_deleted("old_rows")
            ),
            Statement::HistoryOfTruncate => history_of_deleted(&overrides),
            // The one definition of a resolved row: base merged with the override (RFC 7396),
            // present when either layer has the key and the override is not a tombstone.
            Statement::Upsert => format!(
                "INSERT INTO {resolved} AS r
                        (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at, overridden_fields)
                 SELECT c.identity_key, dl_internal.{k}_display_name(m.identity_payload), COALESCE(o.status, b.status),
                        m.identity_payload,
                        public.dl_jsonb_merge_patch(COALESCE(b.raw_payload, '{{}}'::jsonb), o.raw_payload_patch),
                        o.identity_key IS NOT NULL,
                        GREATEST(b.updated_at, o.updated_at),
                        dl_internal.overridden_fields(o.status, o.identity_payload_patch)
                   FROM pg_catalog.unnest($1::text[]) AS c(identity_key)
                  -- Each layer is read by a primary-key probe per key whatever the statistics
                  -- say: as joins, a table being bulk-loaded in this transaction (an ANALYZE
                  -- during the load counts none of its rows) was planned as one empty row, read
                  -- in full and materialized, then rescanned for every key.
                   LEFT JOIN LATERAL (SELECT b.identity_key, b.status, b.identity_payload, b.raw_payload, b.updated_at
                                        FROM {cache} AS b
                                       WHERE b.identity_key OPERATOR(pg_catalog.=) c.identity_key OFFSET 0) AS b ON true
                   LEFT JOIN LATERAL (SELECT o.identity_key, o.status, o.identity_payload_patch, o.raw_payload_patch,
                                             o.tombstoned, o.updated_at
                                        FROM {overrides} AS o
                                       WHERE o.identity_key OPERATOR(pg_catalog.=) c.identity_key OFFSET 0) AS o ON true
                  -- OFFSET 0 keeps the merge a subquery evaluated once per key: pulled up, it
                  -- would be copied into each use, and the display-name function not inlined.
                  CROSS JOIN LATERAL (SELECT public.dl_jsonb_merge_patch(COALESCE(b.identity_payload, '{{}}'::jsonb),
                                                                      o.identity_payload_patch) AS identity_payload
                                      OFFSET 0) AS m
                  WHERE (b.identity_key IS NOT NULL OR o.identity_key IS NOT NULL)
                    AND o.tombstoned IS NOT TRUE
                 ON CONFLICT (identity_key) DO UPDATE
                    SET display_name = excluded.display_name,
                        status = excluded.status,
                        identity_payload = excluded.identity_payload,
                        raw_payload = excluded.raw_payload,
                        is_overridden = excluded.is_overridden,
                        updated_at = excluded.updated_at,
                        overridden_fields = excluded.overridden_fields
                 RETURNING r.identity_key"
            ),
            // The keys come from the upsert (those it did not return), so the layers are not
            // read again: a bulk refresh's delete used to probe or hash the whole base table.
            Statement::Delete => format!(
                "DELETE FROM {resolved} AS r
                  WHERE r.identity_key OPERATOR(pg_catalog.=) ANY ($1::text[])"
            ),
            Statement::AllKeys => format!(
                "SELECT identity_key FROM {resolved}
                 UNION SELECT identity_key FROM {cache}
                 UNION SELECT identity_key FROM {overrides}"
            ),
        }
    }

    fn takes_keys(self) -> bool {
        matches!(self, Statement::Upsert | Statement::Delete)
    }

    fn cursor_options(self) -> u32 {
        match self {
            // Planned once per backend: a probe per key is the plan for one key and for 20,000.
            Statement::Upsert => pg_sys::CURSOR_OPT_GENERIC_PLAN,
            // Planned for each array (deletes are rare): a generic plan made while the table
            // was nearly empty would scan it whole for as long as the backend lives.
            Statement::Delete => pg_sys::CURSOR_OPT_CUSTOM_PLAN,
            _ => 0,
        }
    }
}

thread_local! {
    /// Key locks taken per kind in the current transaction (by local transaction id); -1: the
    /// whole kind is locked exclusively.
    static KEY_LOCKS: Cell<(u32, [i64; 2])> = const { Cell::new((0, [0, 0])) };
}

/// Runs `statement` for `kind` (inside an SPI connection); see `spi::execute`.
unsafe fn execute(kind: Kind, statement: Statement, keys: Option<Datum>) -> u64 {
    let sql = || statement.sql(kind);
    let argtypes: &[pg_sys::Oid] = if statement.takes_keys() {
        &[pg_sys::TEXTARRAYOID]
    } else {
        &[]
    };
    let prepared = spi::Statement {
        key: format!("resolved_store/{kind:?}/{statement:?}"),
        sql: &sql,
        argtypes,
        cursor_options: statement.cursor_options(),
    };
    spi::execute(&prepared, keys.as_slice(), None)
}

/// The first column (text) of the last statement's result rows, detoasted, NULLs skipped.
unsafe fn result_keys() -> Vec<Datum> {
    (0..pg_sys::SPI_processed as usize)
        .filter_map(|row| spi::result_value(row, 1))
        .map(|key| detoasted(key))
        .collect()
}

unsafe fn detoasted(d: Datum) -> Datum {
    Datum::from(pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr()))
}

unsafe fn key_bytes<'a>(d: Datum) -> &'a [u8] {
    pgrx::varlena::varlena_to_byte_slice(d.cast_mut_ptr::<pg_sys::varlena>())
}

/// Recompute the resolved rows of `keys` (detoasted text datums, any order, duplicates
/// allowed). Locks the keys first, then reads both layers with fresh snapshots, so that two
/// transactions writing the two layers of one key cannot leave a merge of stale halves.
unsafe fn refresh_keys(kind: Kind, mut keys: Vec<Datum>) {
    keys.sort_unstable_by(|a, b| key_bytes(*a).cmp(key_bytes(*b)));
    keys.dedup_by(|a, b| key_bytes(*a) == key_bytes(*b));
    if keys.is_empty() {
        return;
    }
    lock_keys(kind, &keys);
    for slice in keys.chunks(SLICE_KEYS) {
        let array = crate::text_array(slice);
        let present = execute(kind, Statement::Upsert, Some(array));
        if (present as usize) < slice.len() {
            let kept: HashSet<&[u8]> = result_keys().into_iter().map(|k| key_bytes(k)).collect();
            let gone: Vec<Datum> = slice
                .iter()
                .copied()
                .filter(|k| !kept.contains(key_bytes(*k)))
                .collect();
            execute(kind, Statement::Delete, Some(crate::text_array(&gone)));
        }
    }
}

/// Every key of the kind (TRUNCATE of a layer, or `refresh_people(NULL)`).
unsafe fn refresh_all(kind: Kind) {
    execute(kind, Statement::AllKeys, None);
    refresh_keys(kind, result_keys());
}

/// `locktag_field4` of the extension's own advisory locks. SQL's `pg_advisory_*` functions can
/// only name 1 (one bigint) and 2 (two integers): a tenant who can call them (0.4.0 revokes
/// that anyway) still cannot take, hold or wait on a lock of the platform's write path.
const KIND_LOCK_SPACE: u16 = 0x6401;
const KEY_LOCK_SPACE: u16 = 0x6402;

fn advisory_tag(field2: u32, field3: u32, field4: u16) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: field2,
        locktag_field3: field3,
        locktag_field4: field4,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: 2, // USER_LOCKMETHOD
    }
}

#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
unsafe fn local_transaction_id() -> u32 {
    (*pg_sys::MyProc).lxid
}

#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
unsafe fn local_transaction_id() -> u32 {
    (*pg_sys::MyProc).vxid.lxid
}

#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
unsafe fn holds(tag: &pg_sys::LOCKTAG, mode: u32) -> bool {
    pg_sys::LockHeldByMe(tag, mode as i32)
}

#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
unsafe fn holds(tag: &pg_sys::LOCKTAG, mode: u32) -> bool {
    pg_sys::LockHeldByMe(tag, mode as i32, false)
}

extern "C-unwind" {
    /// PostgreSQL's `hashtext(text)`, called directly (pgrx wraps pg_sys functions in Rust
    /// functions, which cannot be passed as a PGFunction).
    #[link_name = "hashtext"]
    fn builtin_hashtext(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}

unsafe fn acquire(tag: &pg_sys::LOCKTAG, mode: u32) {
    pg_sys::LockAcquire(tag, mode as i32, false, false);
}

/// Transaction-scoped advisory locks on the keys (kind, hashtext(key)), in hash order. Per key,
/// so unrelated keys never wait for each other; a transaction that would hold more than 256
/// key locks of a kind (a bulk load) takes the whole kind exclusively instead, which small
/// writers hold in shared mode, keeping the lock table bounded. The tags live in lock spaces
/// SQL cannot name ([`KIND_LOCK_SPACE`], [`KEY_LOCK_SPACE`]).
unsafe fn lock_keys(kind: Kind, keys: &[Datum]) {
    let kind_id = kind.lock_id();
    let kind_tag = advisory_tag(0, kind_id as u32, KIND_LOCK_SPACE);
    let slot = (kind_id - 1) as usize;
    let xid = local_transaction_id();
    let (seen, mut held) = KEY_LOCKS.get();
    if seen != xid {
        held = [0, 0];
    }
    if held[slot] < 0 {
        if holds(&kind_tag, pg_sys::ExclusiveLock) {
            return;
        }
        // Taken in a subtransaction that rolled back, and released with it.
        held[slot] = 0;
    }
    let wanted = keys.len() as i64;
    if held[slot] + wanted > MAX_KEY_LOCKS {
        acquire(&kind_tag, pg_sys::ExclusiveLock);
        held[slot] = -1;
    } else {
        acquire(&kind_tag, pg_sys::ShareLock);
        let mut hashes: Vec<i32> = keys
            .iter()
            .map(|key| {
                pg_sys::DirectFunctionCall1Coll(
                    Some(builtin_hashtext),
                    pg_sys::DEFAULT_COLLATION_OID,
                    *key,
                )
                .value() as i32
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        for hash in hashes {
            acquire(
                &advisory_tag(kind_id as u32, hash as u32, KEY_LOCK_SPACE),
                pg_sys::ExclusiveLock,
            );
        }
        held[slot] += wanted;
    }
    KEY_LOCKS.set((xid, held));
}

/// A trigger declared in a way this function does not support (SQLSTATE 39P01, as
/// PostgreSQL's own trigger functions say it).
fn protocol_violated(message: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        format!("dl_tenancy: {message}")
    );
}

unsafe fn trigger_args(trigger: *const pg_sys::Trigger) -> Vec<String> {
    (0..(*trigger).tgnargs as usize)
        .map(|i| {
            CStr::from_ptr(*(*trigger).tgargs.add(i))
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

unsafe fn row_count(table: *mut pg_sys::Tuplestorestate, name: &str) -> i64 {
    if table.is_null() {
        protocol_violated(&format!(
            "maintain_layers() must be declared with REFERENCING ... TABLE AS {name}"
        ));
    }
    pg_sys::tuplestore_tuple_count(table)
}

/// `dl_internal.maintain_layers() RETURNS trigger`, statement-level, with the arguments
/// (kind, layer): 'person' | 'company', 'cache' | 'override'.
/// AFTER INSERT/UPDATE/DELETE (transition tables new_rows/old_rows): history rows (override
/// layer) and the refresh of the changed keys. AFTER TRUNCATE: refresh of every key.
/// BEFORE TRUNCATE (override layer): history rows for what is about to go.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_maintain_layers(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    let context = (*fcinfo).context;
    if context.is_null() || !pgrx::is_a(context, pg_sys::NodeTag::T_TriggerData) {
        protocol_violated("maintain_layers() must be called as a trigger");
    }
    let data = context.cast::<pg_sys::TriggerData>();
    let event = (*data).tg_event;
    if event & pg_sys::TRIGGER_EVENT_ROW != 0 {
        protocol_violated("maintain_layers() must be a FOR EACH STATEMENT trigger");
    }
    let args = trigger_args((*data).tg_trigger);
    let [kind, layer] = args.as_slice() else {
        protocol_violated("maintain_layers() takes two arguments: kind and layer");
    };
    let kind = Kind::from_arg(kind);
    let layer = match layer.as_str() {
        "cache" => Layer::Cache,
        "override" => Layer::Override,
        other => protocol_violated(&format!("unknown layer {other:?}")),
    };
    let before = event & pg_sys::TRIGGER_EVENT_BEFORE != 0;

    let event = match event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_TRUNCATE => {
            spi::connect();
            if !before {
                refresh_all(kind);
            } else if layer == Layer::Override {
                execute(kind, Statement::HistoryOfTruncate, None);
                // Rows unknown here: as many as could pass any bound, so the files are measured.
                crate::history::retain(kind.word(), i64::MAX);
            }
            spi::finish();
            return Datum::from(0);
        }
        pg_sys::TRIGGER_EVENT_INSERT => Event::Insert,
        pg_sys::TRIGGER_EVENT_UPDATE => Event::Update,
        _ => Event::Delete,
    };
    let rows = match event {
        Event::Insert => row_count((*data).tg_newtable, "new_rows"),
        Event::Update => {
            row_count((*data).tg_newtable, "new_rows") + row_count((*data).tg_oldtable, "old_rows")
        }
        Event::Delete => row_count((*data).tg_oldtable, "old_rows"),
    };
    // INSERT ... ON CONFLICT DO UPDATE fires both the INSERT and the UPDATE trigger, one of
    // them with no rows.
    if rows == 0 {
        return Datum::from(0);
    }
    spi::connect();
    pg_sys::SPI_register_trigger_data(data);
    execute(kind, Statement::ChangedKeys(layer, event), None);
    refresh_keys(kind, result_keys());
    // After the refresh: a compaction then never waits for a key lock while it holds the
    // history table.
    if layer == Layer::Override {
        crate::history::retain(kind.word(), rows);
    }
    spi::finish();
    Datum::from(0)
}

/// `dl_internal.refresh_people(keys text[])` / `refresh_companies(keys text[])`: recompute
/// the resolved rows of the given keys; NULL means every key (a repair after restoring data
/// with triggers disabled, for example).
unsafe fn refresh_entry(kind: Kind, fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    spi::connect();
    if pgrx::fcinfo::pg_arg_is_null(fcinfo, 0) {
        refresh_all(kind);
    } else {
        let keys: Array<&str> = pgrx::fcinfo::pg_getarg(fcinfo, 0).expect("not null");
        let datums = keys
            .iter()
            .flatten()
            .map(|key| detoasted(key.into_datum().expect("text")))
            .collect();
        refresh_keys(kind, datums);
    }
    spi::finish();
    pgrx::fcinfo::pg_return_void()
}

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_refresh_people(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    refresh_entry(Kind::Person, fcinfo)
}

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_refresh_companies(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    refresh_entry(Kind::Company, fcinfo)
}

crate::v1_call_info!(
    pg_finfo_dl_maintain_layers,
    pg_finfo_dl_refresh_people,
    pg_finfo_dl_refresh_companies
);
