//! A workspace's logins on its server: creating them, giving one a password, and revoking
//! one so that it cannot come back.
//!
//! A login is `LOGIN` only while it holds a live credential (the active one, or the previous
//! one during a rotation's grace). Everything else about it is re-asserted by every
//! `provision`: membership, the group role it acts as, its connection cap and session
//! defaults ([`crate::fences`]); whatever a tenant changed is put back.

use crate::error::{Error, ErrorCode, Result};
use crate::fences::{LOGIN_CONNECTION_LIMIT, LOGIN_SETTINGS};
use crate::names::{quote_ident, quote_literal, Kind, Slot, WorkspaceNames};
use crate::secret::scram_verifier;
use postgres::Client;

/// Create or reset one login: member of the workspace role and the kind's group role, acts as
/// the group role (objects it creates belong to the group and survive rotation), no
/// privileges of its own. A new login is NOLOGIN until [`set_password`].
pub(crate) fn ensure_login(
    admin: &mut Client,
    names: &WorkspaceNames,
    kind: Kind,
    slot: Slot,
) -> Result<()> {
    let login = names.login(kind, slot);
    let q = quote_ident(&login);
    let attrs = format!(
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {LOGIN_CONNECTION_LIMIT}"
    );
    match admin.query_opt(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[&login],
    )? {
        None => admin.batch_execute(&format!("CREATE ROLE {q} NOLOGIN {attrs}"))?,
        Some(r) if r.get::<_, bool>(0) => {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("role {login} exists and is a superuser; refusing to use it"),
            ))
        }
        Some(_) => admin.batch_execute(&format!("ALTER ROLE {q} {attrs}"))?,
    }
    let mut statements = format!(
        "GRANT {}, {} TO {q};
         ALTER ROLE {q} RESET ALL;
         ALTER ROLE {q} SET role = {};
         ALTER ROLE {q} SET search_path = {};",
        quote_ident(&names.workspace_role()),
        quote_ident(kind.group_role()),
        quote_literal(kind.group_role()),
        kind.search_path()
    );
    for (name, value) in LOGIN_SETTINGS {
        statements.push_str(&format!(
            "ALTER ROLE {q} SET {name} = {};",
            quote_literal(value)
        ));
    }
    // Settings a login made for itself in its workspace database (before 0.4.0 refused it).
    statements.push_str(&format!(
        "ALTER ROLE {q} IN DATABASE {} RESET ALL;",
        quote_ident(&names.database())
    ));
    admin.batch_execute(&statements)?;
    Ok(())
}

/// Give a login its password, from a SCRAM verifier computed here (the plaintext never
/// leaves), and let it log in.
pub(crate) fn set_password(admin: &mut Client, login: &str, password: &str) -> Result<()> {
    let verifier = scram_verifier(password);
    admin
        .batch_execute(&format!(
            "ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL 'infinity'",
            quote_ident(login),
            quote_literal(&verifier)
        ))
        .map_err(|e| {
            // Never echo the statement (it holds the verifier).
            let e = Error::from(e);
            Error::new(e.code, format!("setting the password of {login} failed"))
        })
}

/// Revoke a login for good: no LOGIN, no password, and every session of it ended, direct
/// or through the pooler (the pooler's server connections for it are sessions of it too).
/// NOLOGIN first, so that no new session starts between the two steps; a session that is
/// already open can change nothing about its role (the extension refuses ALTER ROLE to
/// workspace logins).
pub(crate) fn revoke_login(admin: &mut Client, login: &str) -> Result<()> {
    admin.batch_execute(&format!(
        "ALTER ROLE {} NOLOGIN PASSWORD NULL",
        quote_ident(login)
    ))?;
    admin.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
          WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()",
        &[&login],
    )?;
    Ok(())
}
