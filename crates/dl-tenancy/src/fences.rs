//! Fences between workspaces that share one server: connection caps and session defaults of a
//! workspace's database and logins, and the pooler's client limits. Every limit is defined
//! here, once; README.md ("Security model") explains the sizes.

/// Connections to one workspace database (direct and pooled together), of the local cluster's
/// `max_connections` (200, of which 3 are reserved for superusers): one workspace at its cap
/// leaves 177 for the others.
pub const DATABASE_CONNECTION_LIMIT: i32 = 20;

/// Connections of one login. Lower than the database's, so that one leaked credential cannot
/// take all of its workspace's connections.
pub const LOGIN_CONNECTION_LIMIT: i32 = 12;

/// Session defaults of every workspace login, re-asserted by each `provision` (and `upgrade`).
/// `temp_file_limit` is a superuser setting: it holds. The others a tenant can still lower or
/// raise within its own session (PostgreSQL has no per-role ceiling for them), but not
/// persist: the extension refuses `ALTER ROLE ... SET` to workspace logins.
pub const LOGIN_SETTINGS: &[(&str, &str)] = &[
    ("statement_timeout", "60s"),
    ("idle_in_transaction_session_timeout", "60s"),
    ("lock_timeout", "30s"),
    ("temp_file_limit", "1GB"),
    ("work_mem", "16MB"),
];

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
/// revoked login's pool), `server_login_retry` is how long the pool refuses that login.
pub const POOLER_SETTINGS: &[(&str, &str)] = &[
    ("max_client_conn", "2000"),
    ("default_pool_size", "10"),
    ("max_db_connections", "10"),
    ("max_user_connections", "10"),
    ("client_login_timeout", "10"),
    ("query_wait_timeout", "30"),
    ("server_login_retry", "2"),
    // Protocol-level prepared statements in transaction mode (PgBouncer 1.21+): drivers that
    // prepare by default work through the pooled URI.
    ("max_prepared_statements", "200"),
];
