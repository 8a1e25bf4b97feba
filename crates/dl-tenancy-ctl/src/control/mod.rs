//! The control database `dl_control`: its schema (numbered migrations in `migrations/`), the
//! advisory locks that serialize operations, and the records other layers read and write.
//! It never connects to a workspace's server: that is `server`'s side (layers: lib.rs).

pub mod lock;
pub mod records;

use crate::base::connection::connect;
use crate::domain::error::Result;
use crate::plan::quote::quote_ident;
use postgres::Client;

/// Name of the control database.
pub const CONTROL_DB: &str = "dl_control";

/// The control database's schema as numbered migrations, applied in order, each once, in one
/// transaction under an advisory lock ([`apply_schema`]; `control_migrations` records them).
/// A migration that shipped is never edited: add the next file. Migrations 1 and 2 say
/// IF NOT EXISTS because they also adopt control databases made before migrations were
/// numbered.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("migrations/0001_servers_workspaces_credentials.sql"),
    ),
    (2, include_str!("migrations/0002_api_tokens.sql")),
    (3, include_str!("migrations/0003_opaque_names.sql")),
    (4, include_str!("migrations/0004_workspace_limits.sql")),
    (5, include_str!("migrations/0005_server_ca_file.sql")),
    (6, include_str!("migrations/0006_soft_delete.sql")),
    (7, include_str!("migrations/0007_moves.sql")),
    (8, include_str!("migrations/0008_move_method.sql")),
    (9, include_str!("migrations/0009_operator_tokens.sql")),
    (10, include_str!("migrations/0010_server_archive.sql")),
    (11, include_str!("migrations/0011_server_platform_port.sql")),
];

/// Create the control database on a server when missing, and apply the schema.
pub fn ensure_control_db(admin_conn: &str) -> Result<()> {
    let mut admin = connect(admin_conn, Some("postgres")).or_else(|_| connect(admin_conn, None))?;
    let db = quote_ident(CONTROL_DB);
    match admin.batch_execute(&format!("CREATE DATABASE {db}")) {
        Ok(()) => admin.batch_execute(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"))?,
        // There already, or created concurrently by another call.
        Err(e)
            if e.code()
                .is_some_and(|c| c.code() == "42P04" || c.code() == "23505") => {}
        Err(e) => return Err(e.into()),
    }
    drop(admin);
    let mut ctl = connect(admin_conn, Some(CONTROL_DB))?;
    apply_schema(&mut ctl)
}

/// Bring the control database's schema to the newest migration this tool knows.
pub fn apply_schema(ctl: &mut Client) -> Result<()> {
    let mut tx = ctl.transaction()?;
    tx.execute(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, 0)",
        &[&lock::LOCK_SCHEMA],
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

#[cfg(test)]
mod tests {
    /// Numbered 1, 2, 3, ... with no gap, and each file named after its number.
    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (v, sql)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*v, i as i32 + 1);
            assert!(!sql.trim().is_empty());
        }
    }
}
