//! Servers workspaces live on: registering them, placing a new workspace on the least-loaded
//! one, and each server's template database (the extension installed once, cloned per
//! workspace).

use crate::domain::names::WorkspaceNames;
use crate::domain::names::EXTENSION;

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::types::Server;
use postgres::Client;

/// Whether a role of that name exists on the server `admin` is connected to.
pub(crate) fn role_exists(admin: &mut Client, role: &str) -> Result<bool> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )?
        .is_some())
}

/// Whether a database of that name exists on the server `admin` is connected to.
pub(crate) fn database_exists(admin: &mut Client, db: &str) -> Result<bool> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&db],
        )?
        .is_some())
}

/// The extension version in the workspace database, `None` if the database or extension is gone.
pub(crate) fn live_extension_version(
    server: &Server,
    names: &WorkspaceNames,
) -> Result<Option<String>> {
    let mut admin = connect(&server.admin_conn, None)?;
    let exists = crate::server::catalog::database_exists(&mut admin, &names.database())?;
    drop(admin);
    if !exists {
        return Ok(None);
    }
    let mut db = match connect(&server.admin_conn, Some(&names.database())) {
        Ok(c) => c,
        Err(e) if e.sqlstate() == Some("3D000") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(db
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .map(|r| r.get(0)))
}

/// The source's extension is still at the version the copy started from (an `upgrade` could
/// have run meanwhile; its changes would not be in the stream).
pub(crate) fn same_version(source_db: &mut Client, from_version: &str) -> Result<()> {
    let now: String = source_db
        .query_one(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .get(0);
    if now != from_version {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("the source's {EXTENSION} went from {from_version} to {now} during the move; run it again"),
        ));
    }
    Ok(())
}
