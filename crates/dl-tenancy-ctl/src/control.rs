//! The control database `dl_control`: servers, workspaces, credentials.

use crate::connection::connect;
use crate::error::Result;
use crate::names::quote_ident;
use postgres::Client;

/// Name of the control database.
pub const CONTROL_DB: &str = "dl_control";

/// The control database's schema as numbered migrations, applied in order, each once, in one
/// transaction under an advisory lock ([`apply_schema`]; `control_migrations` records them).
/// A migration that shipped is never edited: add the next one. Migrations 1 and 2 say
/// IF NOT EXISTS because they also adopt control databases made before migrations were
/// numbered.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, SERVERS_WORKSPACES_CREDENTIALS),
    (2, crate::tokens::TOKENS_SCHEMA),
    (3, OPAQUE_NAMES),
    (4, WORKSPACE_LIMITS),
    (5, SERVER_CA_FILE),
    (6, crate::suspension::SOFT_DELETE_SCHEMA),
    (7, crate::moves::MOVES_SCHEMA),
    (8, crate::moves::MOVE_METHOD_SCHEMA),
];

const SERVERS_WORKSPACES_CREDENTIALS: &str = r#"
CREATE TABLE IF NOT EXISTS servers (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{0,47}$'),
    admin_nonce      bytea NOT NULL CHECK (octet_length(admin_nonce) = 12),
    admin_ciphertext bytea NOT NULL CHECK (octet_length(admin_ciphertext) > 16),
    host             text NOT NULL CHECK (host <> ''),
    port             integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    pooler_host      text CHECK (pooler_host <> ''),
    pooler_port      integer CHECK (pooler_port BETWEEN 1 AND 65535),
    active           boolean NOT NULL DEFAULT true,
    template_version text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((pooler_host IS NULL) = (pooler_port IS NULL))
);
CREATE TABLE IF NOT EXISTS workspaces (
    id                text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{0,47}$'),
    server_id         text NOT NULL REFERENCES servers (id),
    database_name     text NOT NULL CHECK (database_name = 'ws_' || id),
    state             text NOT NULL CHECK (state IN ('provisioning', 'active', 'error', 'deleted')),
    error_message     text,
    extension_version text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'error') = (error_message IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS workspaces_server ON workspaces (server_id) WHERE state <> 'deleted';
CREATE TABLE IF NOT EXISTS credentials (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('read', 'override')),
    slot         text NOT NULL CHECK (slot IN ('a', 'b')),
    login_name   text NOT NULL CHECK (login_name = 'ws_' || workspace_id || '_' || kind || '_' || slot),
    active       boolean NOT NULL,
    nonce        bytea NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext   bytea NOT NULL CHECK (octet_length(ciphertext) > 16),
    valid_until  timestamptz,
    rotated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, kind, slot)
);
CREATE UNIQUE INDEX IF NOT EXISTS credentials_one_active ON credentials (workspace_id, kind) WHERE active;
-- The last `dl-tenancy upgrade` attempt per workspace.
CREATE TABLE IF NOT EXISTS workspace_upgrades (
    workspace_id  text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    from_version  text,
    to_version    text NOT NULL,
    state         text NOT NULL CHECK (state IN ('succeeded', 'failed')),
    error_message text,
    attempts      integer NOT NULL DEFAULT 1 CHECK (attempts > 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'failed') = (error_message IS NOT NULL))
);
REVOKE ALL ON SCHEMA public FROM PUBLIC;
"#;

/// 0.4.0: a new workspace's database is `dlw_<handle>` (16 random hex digits, unique here),
/// its roles derived from that; `ws_<id>` stays valid for workspaces not migrated yet
/// (`dl-tenancy migrate-names`, which records the handle before it renames anything).
const OPAQUE_NAMES: &str = r#"
ALTER TABLE workspaces ADD COLUMN handle text UNIQUE CHECK (handle ~ '^[0-9a-f]{16}$');
-- The checks that tied names to 'ws_' || id (unnamed in migration 1, so found by definition).
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conrelid::regclass AS tbl, conname FROM pg_catalog.pg_constraint
              WHERE conrelid IN ('public.workspaces'::regclass, 'public.credentials'::regclass)
                AND contype = 'c' AND pg_catalog.pg_get_constraintdef(oid) LIKE '%''ws\_''%'
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
END
$$;
ALTER TABLE workspaces ADD CONSTRAINT workspaces_database_name_check
    CHECK (database_name = 'ws_' || id OR coalesce(database_name = 'dlw_' || handle, false));
ALTER TABLE credentials ADD CONSTRAINT credentials_login_name_check
    CHECK (login_name ~ '^(ws_[a-z][a-z0-9_-]{0,47}|dlw_[0-9a-f]{16})_(read|override)_[ab]$');
"#;

/// Advisory lock class ids (first key of the two-int form).
pub(crate) const LOCK_SCHEMA: i32 = 0x646c_0001;
pub(crate) const LOCK_WORKSPACE: i32 = 0x646c_0002;
pub(crate) const LOCK_TEMPLATE: i32 = 0x646c_0003;

/// Create the control database on a server when missing, and apply the schema.
pub(crate) fn ensure_control_db(admin_conn: &str) -> Result<()> {
    let mut admin = connect(admin_conn, Some("postgres")).or_else(|_| connect(admin_conn, None))?;
    if !crate::servers::database_exists(&mut admin, CONTROL_DB)? {
        match admin.batch_execute(&format!("CREATE DATABASE {}", quote_ident(CONTROL_DB))) {
            Ok(()) => {}
            // Created concurrently by another call.
            Err(e)
                if e.code()
                    .is_some_and(|c| c.code() == "42P04" || c.code() == "23505") => {}
            Err(e) => return Err(e.into()),
        }
        admin.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {} FROM PUBLIC",
            quote_ident(CONTROL_DB)
        ))?;
    }
    drop(admin);
    let mut ctl = connect(admin_conn, Some(CONTROL_DB))?;
    apply_schema(&mut ctl)
}

/// 0.4.0: limits an operator chose for a workspace (`dl-tenancy limits`); none: the defaults.
const WORKSPACE_LIMITS: &str = r#"
CREATE TABLE workspace_limits (
    workspace_id text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    limits       jsonb NOT NULL CHECK (jsonb_typeof(limits) = 'object'),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
"#;

/// TLS: the CA file tenants of a server trust (`sslrootcert` of revealed URIs).
const SERVER_CA_FILE: &str = r#"
ALTER TABLE servers ADD COLUMN ca_file text CHECK (ca_file LIKE '/%');
"#;

/// Bring the control database's schema to the newest migration this tool knows.
pub(crate) fn apply_schema(ctl: &mut Client) -> Result<()> {
    let mut tx = ctl.transaction()?;
    tx.execute(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, 0)",
        &[&LOCK_SCHEMA],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS control_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM control_migrations",
            &[],
        )?
        .get(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO control_migrations (version) VALUES ($1)",
            &[version],
        )?;
    }
    tx.commit()?;
    Ok(())
}
