use crate::domain::limits::CATCH_UP_LIMIT;

use crate::base::connection::connect;
use crate::base::secret::scram_verifier;
use crate::domain::error::Error;
use crate::domain::error::ErrorCode;
use crate::domain::error::Result;
use crate::domain::limits::Limits;
use crate::domain::limits::SESSION_PRELOAD;
use crate::domain::names::Kind;
use crate::domain::names::Slot;
use crate::domain::names::WorkspaceNames;
use crate::plan::quote::quote_ident;
use crate::plan::quote::quote_literal;
use crate::server::catalog::database_exists;
use crate::server::catalog::role_exists;
use postgres::Client;
use std::time::Instant;

/// Whether the workspace's tenants may connect to its database on the server `admin` is on
/// (CONNECT for its group role): shut while a move copies or a suspension holds.
pub(crate) fn set_tenant_connect(
    admin: &mut Client,
    names: &WorkspaceNames,
    allowed: bool,
) -> Result<()> {
    let (verb, prep) = if allowed {
        ("GRANT", "TO")
    } else {
        ("REVOKE", "FROM")
    };
    admin.batch_execute(&format!(
        "{verb} CONNECT ON DATABASE {} {prep} {}",
        quote_ident(&names.database()),
        quote_ident(&names.workspace_role())
    ))?;
    Ok(())
}

/// The workspace's fences ([`crate::fences`]), put back as they should be: the database's
/// connection cap and preloaded guard, and every login's attributes, cap and defaults.
pub(crate) fn fence_workspace(
    admin: &mut Client,
    names: &WorkspaceNames,
    limits: &Limits,
) -> Result<()> {
    let (preload, library) = SESSION_PRELOAD;
    admin.batch_execute(&format!(
        "ALTER DATABASE {qdb} CONNECTION LIMIT {};
         ALTER DATABASE {qdb} SET {preload} = {}",
        limits.database_connections,
        quote_literal(library),
        qdb = quote_ident(&names.database()),
    ))?;
    for kind in Kind::ALL {
        for slot in [Slot::A, Slot::B] {
            ensure_login(admin, names, kind, slot, limits)?;
        }
    }
    Ok(())
}

/// A new workspace's names must be free on its server: dl-tenancy never takes over a role or
/// database it did not create (the names are random, so a taken one means somebody made it on
/// purpose).
pub(crate) fn refuse_to_adopt(admin: &mut Client, names: &WorkspaceNames) -> Result<()> {
    let taken: Vec<String> = admin
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)
             UNION ALL
             SELECT datname::text FROM pg_catalog.pg_database WHERE datname = $2",
            &[&names.all_roles(), &names.database()],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if taken.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} already exist(s) on the server and were not created by dl-tenancy; refusing to use them",
                taken.join(", ")
            ),
        ))
    }
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

/// Create or reset one login: member of the workspace role and the kind's group role, acts as
/// the group role (objects it creates belong to the group and survive rotation), no
/// privileges of its own. A new login is NOLOGIN until [`set_password`].
pub(crate) fn ensure_login(
    admin: &mut Client,
    names: &WorkspaceNames,
    kind: Kind,
    slot: Slot,
    limits: &Limits,
) -> Result<()> {
    let login = names.login(kind, slot);
    let q = quote_ident(&login);
    let attrs = format!(
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {}",
        limits.login_connections
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
    for (name, value) in limits.login_settings() {
        statements.push_str(&format!(
            "ALTER ROLE {q} SET {name} = {};",
            quote_literal(&value)
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

/// Logins refused and sessions ended on the server: every login of the workspace NOLOGIN
/// without a password (pooled logins go through the same check: PgBouncer's auth_query
/// answers only for LOGIN roles), CONNECT revoked from the workspace role, and every session
/// on the database ended, the pooler's server connections included. Harmless to repeat, and
/// to run on a workspace half-created or half-dropped.
pub(crate) fn shut_out(admin: &mut Client, names: &WorkspaceNames) -> Result<i64> {
    let db = names.database();
    let sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity
              WHERE (datname = $1 OR usename = ANY($2)) AND pid <> pg_catalog.pg_backend_pid()",
            &[&db, &names.all_logins()],
        )?
        .get(0);
    for login in names.all_logins() {
        if role_exists(admin, &login)? {
            revoke_login(admin, &login)?;
        }
    }
    if database_exists(admin, &db)? && role_exists(admin, &names.workspace_role())? {
        crate::server::roles::set_tenant_connect(admin, names, false)?;
    }
    admin.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
          WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
        &[&db],
    )?;
    Ok(sessions)
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
    admin.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
          WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()",
        &[&role],
    )?;
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

/// Nobody but the admin in the workspace's database on a server: CONNECT revoked from the
/// workspace's logins and the platform's (when `revoke`), their sessions ended, and waited for
/// until they are gone (a session ending mid-commit could otherwise still write). `own` is
/// the admin's session in that database; a stream's sender stays.
pub(crate) fn close_for_move(
    admin: &mut Client,
    own: &mut Client,
    names: &WorkspaceNames,
    revoke: bool,
) -> Result<()> {
    let db = names.database();
    if revoke {
        set_tenant_connect(admin, names, false)?;
        admin.batch_execute(&format!(
            "REVOKE CONNECT ON DATABASE {} FROM dl_platform_runtime",
            quote_ident(&db)
        ))?;
    }
    let own_pid: i32 = own
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])?
        .get(0);
    let started = Instant::now();
    loop {
        let left: i64 = admin
            .query_one(
                "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
                  WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid() AND pid <> $2
                    AND backend_type = 'client backend'",
                &[&db, &own_pid],
            )?
            .get(0);
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("sessions of {db} did not end"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The workspace's logins and the platform's may connect again (what [`shut_out`] revoked).
pub(crate) fn let_in(admin: &mut Client, names: &WorkspaceNames) -> Result<()> {
    set_tenant_connect(admin, names, true)?;
    admin.batch_execute(&format!(
        "GRANT CONNECT ON DATABASE {} TO dl_platform_runtime",
        quote_ident(&names.database())
    ))?;
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

pub(crate) fn drop_database_and_roles(
    admin_conn: &str,
    admin: &mut Client,
    names: &WorkspaceNames,
) -> Result<()> {
    remove_loader(admin_conn, admin, &names.loader())?;
    admin.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&names.database())
    ))?;
    for role in names.all_roles() {
        crate::server::roles::drop_role_everywhere(admin_conn, admin, &role)?;
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
