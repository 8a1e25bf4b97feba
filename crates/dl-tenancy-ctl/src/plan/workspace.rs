//! Provision and repair: what a workspace's server must run so that its role, database,
//! extension, fences and logins are as they should be, given what the server has. Run again
//! on a complete workspace, it only re-asserts the fences (what a tenant changed is put back).

use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::limits::{
    Limits, HISTORY_MAX_AGE_SETTING, HISTORY_MAX_MB_SETTING, SESSION_PRELOAD, STORAGE_LIMIT_SETTING,
};
use crate::domain::names::{Kind, Slot, WorkspaceNames, EXTENSION, TEMPLATE_DB};
use crate::plan::quote::{quote_ident, quote_literal};
use crate::plan::{Seen, Step};

/// The roles that may connect to every workspace database besides its own tenants.
const PLATFORM_CONNECT: &str = "dl_platform_runtime, dl_pooler_auth";

/// Everything from the workspace role to the logins' fences, in order, with the crash points
/// the idempotency tests use. The logins get no password here (`ops` sets it with the
/// credential it stores).
pub fn provision(names: &WorkspaceNames, limits: &Limits, seen: &Seen) -> Result<Vec<Step>> {
    let db = quote_ident(&names.database());
    let role = names.workspace_role();
    let qrole = quote_ident(&role);
    let mut steps = Vec::new();
    // The NOLOGIN role named like the database (pg_hba samerole).
    match seen.roles.get(&role) {
        None => steps.push(Step::server(format!("CREATE ROLE {qrole} NOLOGIN"))),
        Some(r) if r.can_login || r.superuser || r.powers => {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("role {role} exists and is not a plain NOLOGIN group role"),
            ))
        }
        Some(_) => {}
    }
    if !seen.database {
        steps.push(Step::server(format!(
            "CREATE DATABASE {db} TEMPLATE {}",
            quote_ident(TEMPLATE_DB)
        )));
    }
    steps.push(Step::Checkpoint("after_create_database"));
    steps.push(Step::server(format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
         GRANT CONNECT ON DATABASE {db} TO {qrole}, {PLATFORM_CONNECT}"
    )));
    // A database just created from the template has it already.
    if seen.extension.is_none() {
        steps.push(Step::database(format!(
            "CREATE EXTENSION IF NOT EXISTS {}",
            quote_ident(EXTENSION)
        )));
    }
    steps.extend(fences(names, limits, seen)?);
    steps.push(Step::Checkpoint("after_roles"));
    Ok(steps)
}

/// The workspace's fences put back as they should be: the database's connection cap and
/// preloaded guard, and every login's attributes, cap and session defaults.
pub fn fences(names: &WorkspaceNames, limits: &Limits, seen: &Seen) -> Result<Vec<Step>> {
    let (preload, library) = SESSION_PRELOAD;
    let mut steps = vec![Step::server(format!(
        "ALTER DATABASE {db} CONNECTION LIMIT {};
         ALTER DATABASE {db} SET {preload} = {};
         ALTER DATABASE {db} SET {STORAGE_LIMIT_SETTING} = {};
         ALTER DATABASE {db} SET {HISTORY_MAX_AGE_SETTING} = {};
         ALTER DATABASE {db} SET {HISTORY_MAX_MB_SETTING} = {}",
        limits.database_connections,
        quote_literal(library),
        limits.storage_mb,
        limits.history_max_age_seconds,
        limits.history_max_mb,
        db = quote_ident(&names.database()),
    ))];
    for kind in Kind::ALL {
        for slot in [Slot::A, Slot::B] {
            steps.extend(login(names, kind, slot, limits, seen)?);
        }
    }
    Ok(steps)
}

/// One login created or reset: member of the workspace role and the kind's group role, acting
/// as the group role (objects it creates belong to the group and survive rotation), no
/// privileges of its own. A new login is NOLOGIN until it gets a password.
pub fn login(
    names: &WorkspaceNames,
    kind: Kind,
    slot: Slot,
    limits: &Limits,
    seen: &Seen,
) -> Result<Vec<Step>> {
    let login = names.login(kind, slot);
    let q = quote_ident(&login);
    let attrs = format!(
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {}",
        limits.login_connections
    );
    let mut sql = match seen.roles.get(&login) {
        None => format!("CREATE ROLE {q} NOLOGIN {attrs};"),
        Some(r) if r.superuser => {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("role {login} exists and is a superuser; refusing to use it"),
            ))
        }
        Some(_) => format!("ALTER ROLE {q} {attrs};"),
    };
    sql.push_str(&format!(
        "GRANT {}, {} TO {q};
         ALTER ROLE {q} RESET ALL;
         ALTER ROLE {q} SET role = {};
         ALTER ROLE {q} SET search_path = {};",
        quote_ident(&names.workspace_role()),
        quote_ident(kind.group_role()),
        quote_literal(kind.group_role()),
        kind.search_path()
    ));
    for (name, value) in limits.login_settings() {
        sql.push_str(&format!(
            "ALTER ROLE {q} SET {name} = {};",
            quote_literal(&value)
        ));
    }
    // Settings a login made for itself in its workspace database (before 0.4.0 refused it).
    sql.push_str(&format!(
        "ALTER ROLE {q} IN DATABASE {} RESET ALL;",
        quote_ident(&names.database())
    ));
    Ok(vec![Step::server(sql)])
}

/// A new workspace's names must be free on its server: dl-tenancy never takes over a role or
/// database it did not create (the names are random, so a taken one was made on purpose).
pub fn refuse_to_adopt(names: &WorkspaceNames, seen: &Seen) -> Result<()> {
    let mut taken: Vec<String> = seen.roles.keys().cloned().collect();
    if seen.database {
        taken.push(names.database());
    }
    if taken.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Conflict,
        format!(
            "{} already exist(s) on the server and were not created by dl-tenancy; refusing to use them",
            taken.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::DEFAULT_LIMITS;
    use crate::plan::{sql_of, RoleSeen};

    fn names() -> WorkspaceNames {
        WorkspaceNames::opaque("acme", "0123456789abcdef").unwrap()
    }

    /// A server with everything of the workspace: roles, database, extension.
    fn complete() -> Seen {
        let n = names();
        let mut seen = Seen {
            database: true,
            extension: Some("0.6.0".into()),
            ..Default::default()
        };
        for role in n.all_roles() {
            seen.roles.insert(role, RoleSeen::default());
        }
        seen
    }

    #[test]
    fn a_new_workspace_gets_everything_created_in_order() {
        let steps = provision(&names(), &DEFAULT_LIMITS, &Seen::default()).unwrap();
        let sql = sql_of(&steps);
        assert_eq!(sql[0], r#"CREATE ROLE "dlw_0123456789abcdef" NOLOGIN"#);
        assert_eq!(
            sql[1],
            r#"CREATE DATABASE "dlw_0123456789abcdef" TEMPLATE "dl_tenancy_template""#
        );
        assert!(sql[2].starts_with(r#"REVOKE ALL ON DATABASE "dlw_0123456789abcdef" FROM PUBLIC"#));
        assert_eq!(sql[3], r#"CREATE EXTENSION IF NOT EXISTS "dl_tenancy""#);
        assert!(matches!(
            steps[4],
            Step::Sql {
                target: crate::plan::Target::Database,
                ..
            }
        ));
        assert!(sql[4].contains("CONNECTION LIMIT 20"));
        // Four logins, created NOLOGIN (no password yet), each with its defaults.
        let logins: Vec<&&str> = sql
            .iter()
            .filter(|s| s.starts_with("CREATE ROLE"))
            .collect();
        assert_eq!(logins.len(), 5);
        assert!(
            sql[5].starts_with(r#"CREATE ROLE "dlw_0123456789abcdef_read_a" NOLOGIN NOSUPERUSER"#)
        );
        assert!(sql[5].contains(r#"SET search_path = dl_resolved, public, pg_catalog"#));
        assert!(sql[5].contains("SET statement_timeout = '60s'"));
        assert_eq!(steps.last(), Some(&Step::Checkpoint("after_roles")));
        // The crash point after the database comes before its grants.
        let at = steps
            .iter()
            .position(|s| *s == Step::Checkpoint("after_create_database"));
        assert_eq!(at, Some(2));
    }

    #[test]
    fn a_complete_workspace_only_gets_its_fences_back() {
        let steps = provision(&names(), &DEFAULT_LIMITS, &complete()).unwrap();
        let sql = sql_of(&steps);
        assert!(!sql.iter().any(|s| s.starts_with("CREATE")), "{sql:?}");
        assert!(sql.iter().all(|s| !s.contains("PASSWORD")));
        assert_eq!(
            sql.iter().filter(|s| s.starts_with("ALTER ROLE")).count(),
            4
        );
    }

    #[test]
    fn a_repair_creates_only_what_is_missing() {
        let mut seen = complete();
        seen.extension = None;
        seen.roles.remove(&names().login(Kind::Override, Slot::B));
        let sql: Vec<String> = sql_of(&provision(&names(), &DEFAULT_LIMITS, &seen).unwrap())
            .into_iter()
            .map(str::to_string)
            .collect();
        assert!(sql.contains(&r#"CREATE EXTENSION IF NOT EXISTS "dl_tenancy""#.to_string()));
        let created: Vec<&String> = sql
            .iter()
            .filter(|s| s.starts_with("CREATE ROLE"))
            .collect();
        assert_eq!(created.len(), 1);
        assert!(created[0].contains("_override_b"));
    }

    #[test]
    fn roles_with_powers_are_never_taken_over() {
        let n = names();
        let mut seen = complete();
        seen.roles.insert(
            n.workspace_role(),
            RoleSeen {
                can_login: true,
                ..Default::default()
            },
        );
        assert_eq!(
            provision(&n, &DEFAULT_LIMITS, &seen).unwrap_err().code,
            ErrorCode::Conflict
        );
        let mut seen = complete();
        seen.roles.insert(
            n.login(Kind::Read, Slot::A),
            RoleSeen {
                superuser: true,
                ..Default::default()
            },
        );
        assert_eq!(
            fences(&n, &DEFAULT_LIMITS, &seen).unwrap_err().code,
            ErrorCode::Conflict
        );
        // A new workspace's names must all be free.
        assert!(refuse_to_adopt(&n, &Seen::default()).is_ok());
        let e = refuse_to_adopt(&n, &complete()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict);
        assert!(e.message.contains("dlw_0123456789abcdef_read_a"));
    }

    #[test]
    fn chosen_limits_reach_the_statements() {
        let limits = Limits {
            database_connections: 7,
            login_connections: 3,
            history_max_mb: 64,
            ..DEFAULT_LIMITS
        };
        let sql = sql_of(&fences(&names(), &limits, &complete()).unwrap()).join("\n");
        assert!(sql.contains("CONNECTION LIMIT 7;"));
        assert!(sql.contains("SET dl_tenancy.history_max_mb = 64"));
        assert!(sql.contains("SET dl_tenancy.history_max_age = 7776000"));
        assert!(sql.contains("INHERIT CONNECTION LIMIT 3;"));
        assert!(sql.contains("SET session_preload_libraries = 'dl_tenancy'"));
    }
}
