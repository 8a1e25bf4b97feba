//! Roles and access on one server: a workspace's fences and logins put in place, tenants
//! shut out and let in, passwords, the tool's own logins, and roles dropped for good. What
//! to run is decided in `plan` (`plan::workspace`, `plan::access`); this runs it.

use crate::base::connection::connect;
use crate::base::secret::scram_verifier;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::limits::{Limits, CATCH_UP_LIMIT};
use crate::domain::names::{Kind, WorkspaceNames};
use crate::plan::access::{self, ShutOut};
use crate::plan::quote::{quote_ident, quote_literal};
use crate::plan::workspace;
use crate::server::apply::apply_on_server;
use crate::server::catalog::{database_exists, end_sessions, observe, role_exists, Sessions};
use postgres::Client;
use std::time::Instant;

/// The workspace's fences re-asserted on its server: the database's cap and guard, every
/// login's attributes, cap and defaults ([`workspace::fences`]).
pub(crate) fn fence(admin: &mut Client, names: &WorkspaceNames, limits: &Limits) -> Result<()> {
    let seen = observe("", admin, names, false)?;
    apply_on_server(admin, &workspace::fences(names, limits, &seen)?)
}

/// Give a login its password, from a SCRAM verifier computed here (the plaintext never
/// leaves), and let it log in.
pub(crate) fn set_password(admin: &mut Client, login: &str, password: &str) -> Result<()> {
    apply_on_server(
        admin,
        &[access::set_verifier(login, &scram_verifier(password))],
    )
}

/// Revoke a login for good: no LOGIN, no password, and every session of it ended, direct or
/// through the pooler (the pooler's server connections for it are sessions of it too).
pub(crate) fn revoke_login(admin: &mut Client, login: &str) -> Result<()> {
    apply_on_server(admin, &[access::revoke_login(login)])?;
    end_sessions(admin, Sessions::OfLogins(&[login.to_string()]), None)?;
    Ok(())
}

/// Tenants shut out for good ([`ShutOut::ForGood`]), then every session of the workspace
/// ended: on its database (the pooler's server connections included) and of its logins
/// anywhere. Returns how many sessions there were.
pub(crate) fn shut_out(admin: &mut Client, names: &WorkspaceNames) -> Result<i64> {
    let seen = observe("", admin, names, false)?;
    apply_on_server(admin, &access::shut_out(names, ShutOut::ForGood, &seen))?;
    end_sessions(admin, Sessions::OfWorkspace(names), None)
}

/// Nobody but the admin in the workspace's database on one server during a move: CONNECT
/// revoked from the workspace's logins and the platform's (when `revoke`), their sessions
/// ended, and waited for until they are gone (a session ending mid-commit could otherwise
/// still write). `own` is the admin's session in that database; replication workers stay.
pub(crate) fn close_for_move(
    admin: &mut Client,
    own: &mut Client,
    names: &WorkspaceNames,
    revoke: bool,
) -> Result<()> {
    let db = names.database();
    if revoke {
        let seen = observe("", admin, names, false)?;
        apply_on_server(admin, &access::shut_out(names, ShutOut::ForMove, &seen))?;
    }
    let own_pid: i32 = own
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])?
        .get(0);
    let started = Instant::now();
    while end_sessions(admin, Sessions::ClientsOn(&db), Some(own_pid))? > 0 {
        if started.elapsed() > CATCH_UP_LIMIT {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("sessions of {db} did not end"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// The workspace's logins and the platform's may connect again (what a move closed).
pub(crate) fn let_in(admin: &mut Client, names: &WorkspaceNames) -> Result<()> {
    apply_on_server(admin, &access::let_in(names))
}

/// One active login per kind, each existing, able to log in, and still belonging to the
/// workspace and its group.
pub(crate) fn logins_usable(
    admin: &mut Client,
    names: &WorkspaceNames,
    logins: &[String],
) -> Result<bool> {
    if logins.len() != Kind::ALL.len() {
        return Ok(false);
    }
    let usable: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles AS r
              WHERE r.rolname = ANY($1) AND r.rolcanlogin AND NOT r.rolsuper
                AND pg_catalog.pg_has_role(r.oid, $2::text, 'MEMBER')
                AND (pg_catalog.pg_has_role(r.oid, 'dl_tenant_read', 'MEMBER')
                     OR pg_catalog.pg_has_role(r.oid, 'dl_tenant_override', 'MEMBER'))
                AND (r.rolvaliduntil IS NULL OR r.rolvaliduntil > pg_catalog.now())",
            &[&logins, &names.workspace_role()],
        )?
        .get(0);
    Ok(usable == logins.len() as i64)
}

/// A login the tool makes for its own use: created NOLOGIN when missing, then made a login
/// with `attributes` and the SCRAM verifier of `password` (the plaintext never reaches the
/// server, and a failure never echoes the statement).
pub(crate) fn ensure_tool_login(
    admin: &mut Client,
    role: &str,
    attributes: &str,
    password: &str,
) -> Result<()> {
    let q = quote_ident(role);
    if !role_exists(admin, role)? {
        admin.batch_execute(&format!("CREATE ROLE {q} NOLOGIN"))?;
    }
    admin
        .batch_execute(&format!(
            "ALTER ROLE {q} LOGIN {attributes} PASSWORD {}",
            quote_literal(&crate::base::secret::scram_verifier(password))
        ))
        .map_err(|e| {
            Error::new(
                Error::from(e).code,
                format!("setting up the login {role} failed"),
            )
        })?;
    Ok(())
}

/// The logins' SCRAM verifiers as they are on the source (same salt and keys): a client the
/// pooler authenticated before the move logs in to the target with the keys it has.
pub(crate) fn copy_verifiers(
    source: &mut Client,
    target: &mut Client,
    names: &WorkspaceNames,
) -> Result<()> {
    for login in names.all_logins() {
        let verifier: Option<String> = source
            .query_opt(
                "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1",
                &[&login],
            )?
            .and_then(|r| r.get(0));
        if let Some(v) = verifier {
            target
                .batch_execute(&format!(
                    "ALTER ROLE {} PASSWORD {}",
                    quote_ident(&login),
                    quote_literal(&v)
                ))
                .map_err(|e| {
                    // Never echo the statement (it holds the verifier).
                    Error::new(
                        Error::from(e).code,
                        format!("copying the password of {login} failed"),
                    )
                })?;
        }
    }
    Ok(())
}

/// Drop a workspace's load login, if a load (or a crash during one) left it. The tenant may
/// have granted it something while it existed (it is one of the workspace's own roles):
/// [`drop_role_everywhere`] takes that away first.
pub(crate) fn remove_loader(admin_conn: &str, admin: &mut Client, role: &str) -> Result<()> {
    if role_exists(admin, role)? {
        admin.batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(role)))?;
    }
    drop_role_everywhere(admin_conn, admin, role)
}

/// Drop a role of a workspace (or one the tool made for it), if it exists: its sessions
/// ended, then, in every database that names it (`pg_shdepend`), whatever it owns there and
/// was granted there taken away, then `DROP ROLE`. A tenant can name any role in a GRANT (role
/// names are visible), so without this sweep a grant in another database would make `DROP
/// ROLE` fail with 2BP01 for good. Nothing of a tenant's is evaluated: `DROP OWNED` only
/// revokes and drops catalog entries.
pub(crate) fn drop_role_everywhere(admin_conn: &str, admin: &mut Client, role: &str) -> Result<()> {
    if !role_exists(admin, role)? {
        return Ok(());
    }
    end_sessions(admin, Sessions::OfLogins(&[role.to_string()]), None)?;
    let named_in: Vec<String> = admin
        .query(
            "SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend AS s
               JOIN pg_catalog.pg_database AS d ON d.oid = s.dbid
              WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)
                AND d.datallowconn",
            &[&role],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for db in named_in {
        connect(admin_conn, Some(&db))?
            .batch_execute(&format!("DROP OWNED BY {}", quote_ident(role)))?;
    }
    // Privileges on databases themselves (shared objects: pg_shdepend's dbid 0).
    let databases: Vec<String> = admin
        .query(
            "SELECT d.datname::text FROM pg_catalog.pg_shdepend AS s
               JOIN pg_catalog.pg_database AS d ON d.oid = s.objid
              WHERE s.dbid = 0 AND s.classid = 'pg_catalog.pg_database'::pg_catalog.regclass
                AND s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[&role],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for db in databases {
        admin.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {} FROM {}",
            quote_ident(&db),
            quote_ident(role)
        ))?;
    }
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))?;
    Ok(())
}

/// A workspace's database and every role of it dropped from a server (a move's source or an
/// undone target).
pub(crate) fn drop_database_and_roles(
    admin_conn: &str,
    admin: &mut Client,
    names: &WorkspaceNames,
) -> Result<Dropped> {
    let mut dropped = Dropped {
        database: drop_database(admin, names)?,
        ..Default::default()
    };
    remove_loader(admin_conn, admin, &names.loader())?;
    for role in names.all_roles() {
        if role_exists(admin, &role)? {
            drop_role_everywhere(admin_conn, admin, &role)?;
            dropped.roles.push(role);
        }
    }
    Ok(dropped)
}

/// The workspace's database dropped, its sessions ended (the roles stay); whether it was
/// there.
pub(crate) fn drop_database(admin: &mut Client, names: &WorkspaceNames) -> Result<bool> {
    if !database_exists(admin, &names.database())? {
        return Ok(false);
    }
    admin.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&names.database())
    ))?;
    Ok(true)
}

/// What [`drop_database_and_roles`] found and dropped.
#[derive(Debug, Default)]
pub(crate) struct Dropped {
    pub(crate) database: bool,
    pub(crate) roles: Vec<String>,
}
