//! Fences between workspaces that share one server: connection caps and session defaults of a
//! workspace's database and logins, and the pooler's client limits. Every limit is defined
//! here, once; README.md ("Security model") explains the sizes.

use std::time::Duration;

use crate::domain::error::{invalid, Error, Result};
use serde::{Deserialize, Serialize};

/// A workspace's connection caps and the session defaults of its logins. [`DEFAULT_LIMITS`]
/// unless an operator chose others for it (`dl-tenancy limits`, recorded in the control
/// database); `provision` and `upgrade` re-assert them, so what a tenant changed is put back.
///
/// `temp_file_limit` is a superuser setting: it holds. The other defaults a tenant can still
/// change within its own session (PostgreSQL has no per-role ceiling for them), but not
/// persist: the extension refuses `ALTER ROLE ... SET` to workspace logins. The caps hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections to the workspace database, direct and pooled together.
    pub database_connections: i32,
    /// Connections of one login.
    pub login_connections: i32,
    pub statement_timeout_seconds: i32,
    pub idle_in_transaction_timeout_seconds: i32,
    pub lock_timeout_seconds: i32,
    pub work_mem_mb: i32,
    /// Temporary file space per session (0: none).
    pub temp_file_limit_mb: i32,
    /// Storage quota of the workspace database (the extension's watchdog measures it: warned
    /// from 80%, writes refused at 100% until it is back below 90%).
    pub storage_mb: i32,
    /// Override history rows older than this are deleted (0: no age limit).
    pub history_max_age_seconds: i32,
    /// Disk space each override history table may take; -1: a twentieth of `storage_mb`.
    pub history_max_mb: i32,
}

/// The defaults. Connections: of the local cluster's `max_connections` (200, 3 of them kept for
/// superusers), one workspace at its cap leaves 177 for the others; a login's cap is lower
/// than its database's, so one leaked credential cannot take all of its workspace's.
pub const DEFAULT_LIMITS: Limits = Limits {
    database_connections: 20,
    login_connections: 12,
    statement_timeout_seconds: 60,
    idle_in_transaction_timeout_seconds: 60,
    lock_timeout_seconds: 30,
    work_mem_mb: 16,
    temp_file_limit_mb: 1024,
    storage_mb: 10_240,
    history_max_age_seconds: 90 * 86_400,
    history_max_mb: -1,
};

/// What an operator may choose, per field: (name, lowest, highest).
const BOUNDS: [(&str, i32, i32); 10] = [
    ("database_connections", 1, 100),
    ("login_connections", 1, 100),
    ("statement_timeout_seconds", 1, 86_400),
    ("idle_in_transaction_timeout_seconds", 1, 86_400),
    ("lock_timeout_seconds", 1, 86_400),
    ("work_mem_mb", 1, 2_048),
    ("temp_file_limit_mb", 0, 1_048_576),
    ("storage_mb", 1, 16_777_216),
    ("history_max_age_seconds", 0, 3_650 * 86_400),
    ("history_max_mb", -1, 16_777_216),
];

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

impl Limits {
    fn values(&self) -> [i32; 10] {
        [
            self.database_connections,
            self.login_connections,
            self.statement_timeout_seconds,
            self.idle_in_transaction_timeout_seconds,
            self.lock_timeout_seconds,
            self.work_mem_mb,
            self.temp_file_limit_mb,
            self.storage_mb,
            self.history_max_age_seconds,
            self.history_max_mb,
        ]
    }

    /// Each value within its bounds, and a login's cap within its database's.
    pub fn validate(&self) -> Result<()> {
        for ((name, low, high), value) in BOUNDS.iter().zip(self.values()) {
            if !(*low..=*high).contains(&value) {
                return Err(invalid(format!(
                    "{name} must be between {low} and {high}, not {value}"
                )));
            }
        }
        if self.history_max_mb == 0 {
            return Err(invalid(
                "history_max_mb must be -1 (a twentieth of storage_mb) or at least 1",
            ));
        }
        if self.login_connections > self.database_connections {
            return Err(invalid(
                "login_connections must not be larger than database_connections",
            ));
        }
        Ok(())
    }

    /// Session defaults of every login of the workspace, as `ALTER ROLE ... SET` takes them.
    pub fn login_settings(&self) -> [(&'static str, String); 5] {
        [
            (
                "statement_timeout",
                format!("{}s", self.statement_timeout_seconds),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}s", self.idle_in_transaction_timeout_seconds),
            ),
            ("lock_timeout", format!("{}s", self.lock_timeout_seconds)),
            ("temp_file_limit", format!("{}MB", self.temp_file_limit_mb)),
            ("work_mem", format!("{}MB", self.work_mem_mb)),
        ]
    }
}

/// A change of some of a workspace's limits (`dl-tenancy limits --workspace W --... N`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsChange {
    pub database_connections: Option<i32>,
    pub login_connections: Option<i32>,
    pub statement_timeout_seconds: Option<i32>,
    pub idle_in_transaction_timeout_seconds: Option<i32>,
    pub lock_timeout_seconds: Option<i32>,
    pub work_mem_mb: Option<i32>,
    pub temp_file_limit_mb: Option<i32>,
    pub storage_mb: Option<i32>,
    pub history_max_age_seconds: Option<i32>,
    pub history_max_mb: Option<i32>,
}

impl LimitsChange {
    pub(crate) fn apply(&self, to: Limits) -> Limits {
        Limits {
            database_connections: self.database_connections.unwrap_or(to.database_connections),
            login_connections: self.login_connections.unwrap_or(to.login_connections),
            statement_timeout_seconds: self
                .statement_timeout_seconds
                .unwrap_or(to.statement_timeout_seconds),
            idle_in_transaction_timeout_seconds: self
                .idle_in_transaction_timeout_seconds
                .unwrap_or(to.idle_in_transaction_timeout_seconds),
            lock_timeout_seconds: self.lock_timeout_seconds.unwrap_or(to.lock_timeout_seconds),
            work_mem_mb: self.work_mem_mb.unwrap_or(to.work_mem_mb),
            temp_file_limit_mb: self.temp_file_limit_mb.unwrap_or(to.temp_file_limit_mb),
            storage_mb: self.storage_mb.unwrap_or(to.storage_mb),
            history_max_age_seconds: self
                .history_max_age_seconds
                .unwrap_or(to.history_max_age_seconds),
            history_max_mb: self.history_max_mb.unwrap_or(to.history_max_mb),
        }
    }
}

/// What `dl-tenancy limits` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkspaceLimits {
    pub workspace: String,
    pub limits: Limits,
    /// The values differ from [`DEFAULT_LIMITS`].
    pub customized: bool,
}

/// The database setting the extension reads a workspace's storage quota from (src/quota.rs).
pub const STORAGE_LIMIT_SETTING: &str = "dl_tenancy.storage_limit_mb";

/// The database settings of the override history's retention (src/history.rs): its age in
/// seconds and the MB each history table may take. Superuser settings, like the quota's.
pub const HISTORY_MAX_AGE_SETTING: &str = "dl_tenancy.history_max_age";
pub const HISTORY_MAX_MB_SETTING: &str = "dl_tenancy.history_max_mb";

/// Loaded into every session of a workspace database, so that the extension's guard
/// (src/tenant_guard.rs: no LISTEN/NOTIFY, no ALTER ROLE for workspace logins) is in force
/// before the first statement. A superuser setting: tenants cannot turn it off.
pub const SESSION_PRELOAD: (&str, &str) = ("session_preload_libraries", "dl_tenancy");

/// PgBouncer settings of the local pooler. `max_db_connections`/`max_user_connections` keep
/// one workspace's pooled traffic inside its database cap with room for direct connections;
/// `client_login_timeout` drops sockets that never finish logging in, so holding client
/// slots without credentials takes a sustained flood, and `max_client_conn` leaves room for
/// many idle application pools. `query_wait_timeout` bounds how long a client waits for a
/// server connection that cannot be had (its pool at the cap, or its login revoked) before
/// it gets an error, instead of the default two minutes; after a failed server login (a
/// revoked login's pool, or a login into a database that is not its own), the pool waits
/// `server_login_retry` before it tries again, and a client asking meanwhile waits with it.
/// 1 s: while the server's pooled slots are taken (admission answers 57P03), every pool with
/// clients waiting tries again once a second, so 200 waiting workspaces cost the server 200
/// short-lived backends a second; at 0.2 s the postmaster fell behind forking them and the
/// platform's own connections found its socket's queue full.
///
/// `server_reset_query_always` with `RESET ALL`: PgBouncer resets every server connection a
/// client's transaction gives back (in transaction mode it runs no reset query otherwise), so a
/// `SET` one client made (`work_mem`, `search_path`, `statement_timeout = 0`) never reaches the
/// next client of that connection. `RESET ALL` rather than `DISCARD ALL`: it keeps the prepared
/// statements PgBouncer tracks per server connection.
pub const POOLER_SETTINGS: &[(&str, &str)] = &[
    ("max_client_conn", "4000"),
    ("default_pool_size", "10"),
    ("max_db_connections", "10"),
    ("max_user_connections", "10"),
    // A client's login needs no slot of the budget (the auth user's pools are outside it),
    // but a storm of them is slow: 1,000 pooled clients connecting at once on 2 cores (TLS
    // and SCRAM on both sides, one lookup each) took over 10 s, and 213 were cut off.
    ("client_login_timeout", "30"),
    // How long a pooled client waits for a server connection while the budget of all
    // workspaces is taken (or the server refuses the pooler with 57P03): the documented wait.
    ("query_wait_timeout", "30"),
    // An idle server connection goes after a second, so that the slots a burst took come back
    // to the other workspaces at once (PgBouncer never hands one pool's idle connection to
    // another pool).
    ("server_idle_timeout", "1"),
    ("server_login_retry", "1"),
    ("server_reset_query", "RESET ALL"),
    ("server_reset_query_always", "1"),
    // Protocol-level prepared statements in transaction mode (PgBouncer 1.21+): drivers that
    // prepare by default work through the pooled URI.
    ("max_prepared_statements", "200"),
    // What one workspace may hold of the pooler every workspace shares (issue 21): its
    // logged-in clients (1,006 idle clients of one workspace locked the others out; 200 is
    // 10 app instances with SQLAlchemy's default pool and overflow, of 4,000), the memory of
    // each client's prepared statements and of each server connection's cache
    // (scripts/pgbouncer/statement-memory-bound.patch: a client keeping hundreds of 1 MB
    // statements grew PgBouncer to 1.2 GB; pgjdbc's own cache is 5 MiB), and one message.
    // No idle-client timeout: app pools keep idle connections and most do not check them
    // before use (the client cap bounds what idle ones cost).
    ("max_db_client_connections", "200"),
    ("max_prepared_statement_bytes", "8388608"),
    ("max_packet_size", "16777216"),
    // Sockets still logging in have a cap of their own, and past it the oldest is dropped
    // (scripts/pgbouncer/unauthenticated-socket-flood.patch): thousands of bare TCP sockets
    // counted against max_client_conn and refused every workspace's logins. 1,000 is far
    // more than a login storm holds at once (each login takes milliseconds).
    ("max_login_clients", "1000"),
];

/// PgBouncer settings of the direct front (`local up`): session mode, one server session per
/// client that ends with it (`server_lifetime` 0), so a direct URI behaves as PostgreSQL's own
/// port did (session state, advisory locks, `pg_backend_pid()`), and admission and the
/// server's `CONNECTION LIMIT`s answer each login (the pools are not the bound: a login
/// refused by the server fails at once, scripts/pgbouncer/session-mode-front.patch).
/// What it adds is the pooler's fence against sockets that never log in (issue 21: 460 bare
/// sockets on PostgreSQL's port refused every login of the server, the platform's included).
pub const DIRECT_FRONT_SETTINGS: &[(&str, &str)] = &[
    ("max_client_conn", "4000"),
    ("default_pool_size", "1000"),
    ("server_lifetime", "0"),
    ("server_login_retry", "1"),
    ("client_login_timeout", "30"),
    ("query_wait_timeout", "30"),
    ("max_db_client_connections", "200"),
    ("max_packet_size", "16777216"),
    ("max_login_clients", "1000"),
];

/// The direct front's sessions for its logins' lookups (`auth_query`), out of the platform's
/// [`PLATFORM_SLOTS`]: the pooler's budget keeps its size (4 fewer slots made a burst at
/// `max_connections` 50 wait past `query_wait_timeout`), and the platform keeps 6 and the
/// superusers' 3 when all 4 are open.
pub const DIRECT_FRONT_AUTH_SLOTS: u32 = 4;

/// Settings only our PgBouncer build knows (`local up` refuses a binary without them).
pub const PATCHED_POOLER_SETTINGS: [&str; 3] = [
    POOLER_BUDGET_SETTING,
    "max_prepared_statement_bytes",
    "max_login_clients",
];

/// How long a session of the platform's own (the tool, `serve`) waits for a lock before it
/// gives up with `busy`: a tenant can hold locks on its own tables (and row locks on the
/// override tables), and no platform operation may wait on a tenant for ever.
pub const PLATFORM_LOCK_TIMEOUT_MS: u64 = 5_000;

/// The longest one statement of a platform session may run. `serve` lowers it to its call
/// timeout, so a call the API gave up on ends its backend too instead of leaving it behind.
pub const PLATFORM_STATEMENT_TIMEOUT_MS: u64 = 15 * 60 * 1_000;

/// The longest a workspace login's transaction may stay open, whatever it set in its session
/// (PostgreSQL 15 has no `transaction_timeout`): the extension's watchdog ends the session
/// past it, so an open tenant transaction cannot hold up logical slot creation, vacuum or a
/// move server-wide for longer. `local up` writes it as `dl_tenancy.transaction_limit`.
pub const TENANT_TRANSACTION_LIMIT_MS: u64 = 5 * 60 * 1_000;

/// Temporary files all sessions of one workspace may hold together
/// (`dl_tenancy.temp_limit_mb`; `temp_file_limit` bounds only one process): two sessions at
/// their `temp_file_limit`. Past it the watchdog cancels the statements holding the most
/// (53100). An operator can set another for one database (`ALTER DATABASE ... SET`).
pub const WORKSPACE_TEMP_MB: u32 = 2048;

/// Free disk below which every workspace's writes are refused (`dl_tenancy.disk_floor_mb`,
/// src/disk.rs in the extension; they run again at a fifth more): the quotas together may
/// promise more than the disk holds, and a full disk stops the server with a PANIC, its log
/// on the same disk. 1 GB leaves room for the platform's own writes, WAL and the log.
pub const DISK_FLOOR_MB: u32 = 1024;

/// WAL a replication slot may hold back (`max_slot_wal_keep_size`): a move's slot whose
/// target stopped reading would otherwise keep every WAL segment until the disk is full; past
/// it the slot is invalidated and the move fails (and can be started again).
pub const SLOT_WAL_KEEP_MB: u32 = 8192;

/// The extension's watchdog (a background worker; `shared_preload_libraries`) ends the
/// sessions of retired logins (NOLOGIN, or past their VALID UNTIL: a rotation's grace) and
/// tenant transactions past [`TENANT_TRANSACTION_LIMIT_MS`], and bounds each workspace's
/// temporary files ([`WORKSPACE_TEMP_MB`]), and refuses workspaces' writes below
/// [`DISK_FLOOR_MB`] free, whether or not `serve` runs.
pub fn watchdog_settings() -> Vec<(String, String)> {
    vec![
        ("shared_preload_libraries".into(), "dl_tenancy".into()),
        (
            "dl_tenancy.transaction_limit".into(),
            TENANT_TRANSACTION_LIMIT_MS.to_string(),
        ),
        (
            "dl_tenancy.temp_limit_mb".into(),
            WORKSPACE_TEMP_MB.to_string(),
        ),
        ("dl_tenancy.disk_floor_mb".into(), DISK_FLOOR_MB.to_string()),
        (
            "max_slot_wal_keep_size".into(),
            format!("{SLOT_WAL_KEEP_MB}MB"),
        ),
    ]
}

/// The local cluster's `max_connections` unless `local up --max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 200;

/// The fewest `max_connections` a local cluster may have: room for the reserves below.
pub const MIN_MAX_CONNECTIONS: u32 = 40;

/// The most `local up --max-connections` takes (each slot costs shared memory at start).
pub const MAX_MAX_CONNECTIONS: u32 = 10_000;

/// Connection slots workspaces never take: the platform's (the tool, `serve`, `upgrade
/// --parallel`, the runtime, an operator), on top of PostgreSQL's 3 for superusers.
pub const PLATFORM_SLOTS: u32 = 10;

/// Sessions all workspaces' direct logins may hold together (`dl_tenancy.direct_slots`): a
/// fifth of the server, at least 10. A cap of their own, so that a few workspaces' idle direct
/// sessions cannot take the slots the pooler's budget counts on, and a pooled burst cannot
/// take theirs (a migration on a direct URI gets in while the pooled workspaces fill the
/// server).
pub fn direct_slots(max_connections: u32) -> u32 {
    (max_connections / 5).max(10)
}

/// Memory one workspace session may allocate beyond what it starts with
/// (`dl_tenancy.session_memory_mb`, RLIMIT_DATA): past it the query fails with 53200 in that
/// session, instead of the OOM killer restarting the server. Several `work_mem` (16 MB) sort
/// and hash nodes and JIT fit; a workspace's 20 sessions together stay under 6 GB.
pub const SESSION_MEMORY_MB: u32 = 256;

/// Locks one session may hold at once (`max_locks_per_transaction`): the server's shared lock
/// table has this many entries per connection slot, and the extension refuses a workspace
/// session's lock past it (53400, src/locks.rs), so no workspace can fill the table for the
/// others. A table created with a serial key and one index takes 19, so PostgreSQL's default
/// of 64 would refuse a migration of 4 tables in one transaction (Alembic runs all its
/// migrations in one); 1,024 lets one create about 50, for 80 MB more shared memory at 200
/// slots (measured: 147 MB at 64, 227 MB at 1,024).
pub const SESSION_LOCKS: u32 = 1024;

/// The extension's admission settings (src/admission.rs) for a server with
/// `max_connections` slots: the pooled workspaces' cap is the pooler's budget, and each
/// workspace session's memory share and lock budget.
pub fn admission_settings(max_connections: u32) -> Vec<(String, String)> {
    debug_assert!(max_connections >= MIN_MAX_CONNECTIONS);
    vec![
        (
            "dl_tenancy.pooled_slots".into(),
            pooler_budget(max_connections).1,
        ),
        (
            "dl_tenancy.direct_slots".into(),
            direct_slots(max_connections).to_string(),
        ),
        (
            "dl_tenancy.session_memory_mb".into(),
            SESSION_MEMORY_MB.to_string(),
        ),
        (
            "max_locks_per_transaction".into(),
            SESSION_LOCKS.to_string(),
        ),
    ]
}

/// PostgreSQL's `superuser_reserved_connections` (its default, which `local up` keeps).
pub const SUPERUSER_SLOTS: u32 = 3;

/// The pooler's own sessions for its logins' lookups (`auth_query`): one pool of
/// `default_pool_size` (10), outside the budget so that a client's login never waits for a
/// tenant's query, but on the same socket, so the budget leaves room for them. Without it a
/// burst of 1,000 took the budget and the lookups the last slots admission keeps, the server
/// refused the pooler's next logins (57P03) faster than they ended, and 9 clients got
/// `too many clients already`.
pub const POOLER_AUTH_SLOTS: u32 = 10;

/// The local pooler's budget of server connections for all workspaces together
/// (`max_socket_server_connections`, scripts/pgbouncer/socket-server-budget.patch), and
/// admission's cap on pooled workspace sessions: what is left of the server past the
/// platform's, the superusers', the direct logins' and the pooler's lookups' slots. A burst
/// waits in PgBouncer, fairly shared between the workspaces that wait, and the server
/// seldom has to refuse the pooler at all.
pub fn pooler_budget(max_connections: u32) -> (&'static str, String) {
    let budget = max_connections
        - PLATFORM_SLOTS
        - SUPERUSER_SLOTS
        - POOLER_AUTH_SLOTS
        - direct_slots(max_connections);
    (POOLER_BUDGET_SETTING, budget.to_string())
}

/// The setting of that budget, which only our PgBouncer build knows.
pub const POOLER_BUDGET_SETTING: &str = "max_socket_server_connections";

/// Sessions `serve` keeps for its read-only calls, to the control database and to each
/// server: few, because they take the platform's reserved slots ([`PLATFORM_SLOTS`]); a
/// call waits for one rather than opening more.
pub const KEPT_SESSIONS: u32 = 4;

/// How long `serve`'s `status` trusts a workspace's extension version it saw in the
/// workspace's database (entering it is a new session each time): a version changed behind
/// the tool's back shows within this.
pub const LIVE_CHECK_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest grace period of a rotation: 366 days (CLI and HTTP API alike).
pub const MAX_GRACE_SECONDS: u64 = 366 * 86400;

/// How often `serve` ends grace periods that are over ([`Tenancy::expire_grace_periods`]).
pub const GRACE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `deprovision` keeps a workspace's data before the sweep purges it: 30 days.
pub const DEFAULT_RETENTION_SECONDS: u64 = 30 * 86400;

/// Longest retention `deprovision --retention` accepts: 366 days.
pub const MAX_RETENTION_SECONDS: u64 = 366 * 86400;

/// How often `serve` purges the workspaces whose retention is over.
pub const PURGE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How long one attempt of a workspace's upgrade waits for a customer transaction holding a
/// lock it needs (a tenant's open transaction on `dl_resolved.people`, say).
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 10_000;

/// Attempts per workspace before it counts as `busy`; the wait between two attempts doubles
/// from [`FIRST_RETRY_WAIT`].
pub const DEFAULT_LOCK_ATTEMPTS: u32 = 3;

/// How long the first copy may take before the move gives up (and is undone).
pub const COPY_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// How long the pause may wait for the target to apply the last changes before the move
/// gives up (and the workspace resumes where it was).
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// How long subscribing may wait (its slot waits for the source's running transactions).
pub const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// How long the first copy may go without a worker copying a table before the move gives up
/// (the target's `max_logical_replication_workers` taken by other subscriptions, say).
pub const WORKER_WAIT: Duration = Duration::from_secs(5 * 60);

/// Parallel connections the move's login may hold on the source (one apply worker and the
/// table-copy workers of its subscription).
pub const MOVER_CONNECTION_LIMIT: i32 = 8;

/// How long loading the tenant's part of an archive may take: its own code runs in it (and
/// `pg_restore` turns `statement_timeout` off).
pub const TENANT_LOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Full backups pgBackRest keeps (`repo1-retention-full`) unless `local up
/// --backup-retention-full` chose another number; the WAL archive goes back to the oldest.
pub const DEFAULT_RETENTION_FULL: u32 = 2;

/// The most full backups a server may keep.
pub const MAX_RETENTION_FULL: u32 = 100;

/// `archive_timeout`: a server with writes switches to a new WAL segment, and so archives
/// what it wrote, at least this often. It bounds what a lost server loses (archive lag).
pub const ARCHIVE_TIMEOUT_SECONDS: u32 = 60;

/// How long an operation waits for the server to archive the WAL it needs (a restore's
/// target time, a backup's end) before it says archiving is stuck.
pub const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

/// How long one pgBackRest command (a backup, a restore's copy) may run.
pub const BACKREST_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// How long a restored cluster may take to replay WAL up to its target and promote.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// Room kept free beside a point-in-time restore's own estimate (WAL it replays, the
/// scratch server's log): the disk it needs is refused below estimate + this.
pub const RESTORE_DISK_MARGIN_MB: u64 = 256;

/// A rotation's grace period in seconds, checked against [`MAX_GRACE_SECONDS`] here only:
/// the CLI and the library take it through `try_from`, the HTTP body through serde (a value
/// out of range is a body of the wrong shape there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u64")]
pub struct GraceSeconds(u64);

impl GraceSeconds {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for GraceSeconds {
    type Error = Error;
    fn try_from(seconds: u64) -> Result<GraceSeconds> {
        if seconds > MAX_GRACE_SECONDS {
            return Err(invalid(format!(
                "grace_seconds must be between 0 and {MAX_GRACE_SECONDS} (a year)"
            )));
        }
        Ok(GraceSeconds(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pooler's budget is admission's pooled cap, so the server never refuses the pooler
    /// within it; the two caps, the pooler's lookups, the platform and the superusers add up
    /// to `max_connections`; the smallest server still gets a budget.
    #[test]
    fn the_history_bound_is_derived_or_at_least_one_mb() {
        for (mb, ok) in [(-1, true), (0, false), (1, true), (-2, false)] {
            let limits = Limits {
                history_max_mb: mb,
                ..DEFAULT_LIMITS
            };
            assert_eq!(limits.validate().is_ok(), ok, "{mb}");
        }
    }

    #[test]
    fn the_pooler_budget_fits_inside_admission() {
        for max in [
            MIN_MAX_CONNECTIONS,
            50,
            DEFAULT_MAX_CONNECTIONS,
            MAX_MAX_CONNECTIONS,
        ] {
            let (_, budget) = pooler_budget(max);
            let budget: u32 = budget.parse().unwrap();
            let setting = |name: &str| -> u32 {
                let settings = admission_settings(max);
                let (_, v) = settings.iter().find(|(k, _)| k == name).unwrap();
                v.parse().unwrap()
            };
            assert!(budget >= 1, "max_connections {max}: no budget");
            assert_eq!(setting("dl_tenancy.pooled_slots"), budget);
            let direct = setting("dl_tenancy.direct_slots");
            assert!(direct >= 10);
            assert_eq!(
                budget + direct + POOLER_AUTH_SLOTS + PLATFORM_SLOTS + SUPERUSER_SLOTS,
                max
            );
        }
        let auth_pool = POOLER_SETTINGS
            .iter()
            .find(|(k, _)| *k == "default_pool_size")
            .map(|(_, v)| v.parse::<u32>().unwrap());
        assert_eq!(auth_pool, Some(POOLER_AUTH_SLOTS));
    }
}
