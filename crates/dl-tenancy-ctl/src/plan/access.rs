//! Who may get in: shutting a workspace's tenants out (for good, or while a move copies),
//! letting them in again, passwords, and rotating a credential. The sessions a shut-out ends
//! are ended by `server::catalog::end_sessions`, after these statements.

use crate::domain::names::{Kind, Slot, WorkspaceNames};
use crate::plan::quote::{quote_ident, quote_literal};
use crate::plan::{Seen, Step};

/// How far a shut-out goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutOut {
    /// Deprovision and purge: every login NOLOGIN without a password (pooled logins too:
    /// PgBouncer's auth_query answers only for LOGIN roles) and no CONNECT for the workspace.
    ForGood,
    /// A move's switch: no CONNECT for the workspace nor for the platform runtime, on one
    /// server; the logins stay as they are (the other server has them).
    ForMove,
}

/// The statements of a shut-out; harmless to repeat, and to run on a workspace half-created
/// or half-dropped (`seen` says what exists).
pub fn shut_out(names: &WorkspaceNames, how: ShutOut, seen: &Seen) -> Vec<Step> {
    let mut steps = Vec::new();
    if how == ShutOut::ForGood {
        for login in names.all_logins() {
            if seen.roles.contains_key(&login) {
                steps.push(revoke_login(&login));
            }
        }
    }
    if seen.database && seen.roles.contains_key(&names.workspace_role()) {
        steps.push(tenant_connect(names, false));
    }
    if how == ShutOut::ForMove && seen.database {
        steps.push(Step::server(format!(
            "REVOKE CONNECT ON DATABASE {} FROM dl_platform_runtime",
            quote_ident(&names.database())
        )));
    }
    steps
}

/// The workspace's logins and the platform's may connect again (what a move's shut-out took).
pub fn let_in(names: &WorkspaceNames) -> Vec<Step> {
    vec![
        tenant_connect(names, true),
        Step::server(format!(
            "GRANT CONNECT ON DATABASE {} TO dl_platform_runtime",
            quote_ident(&names.database())
        )),
    ]
}

/// CONNECT on the workspace's database for its group role (its tenants' logins).
pub fn tenant_connect(names: &WorkspaceNames, allowed: bool) -> Step {
    let (verb, prep) = if allowed {
        ("GRANT", "TO")
    } else {
        ("REVOKE", "FROM")
    };
    Step::server(format!(
        "{verb} CONNECT ON DATABASE {} {prep} {}",
        quote_ident(&names.database()),
        quote_ident(&names.workspace_role())
    ))
}

/// A login revoked for good: no LOGIN, no password. NOLOGIN comes first, so no new session
/// starts before its sessions are ended; an open session can change nothing about its role
/// (the extension refuses ALTER ROLE to workspace logins).
pub fn revoke_login(login: &str) -> Step {
    Step::server(format!(
        "ALTER ROLE {} NOLOGIN PASSWORD NULL",
        quote_ident(login)
    ))
}

/// A login given a password, as its SCRAM verifier (the plaintext never reaches the server),
/// and let in.
pub fn set_verifier(login: &str, verifier: &str) -> Step {
    Step::secret(format!(
        "ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL 'infinity'",
        quote_ident(login),
        quote_literal(verifier)
    ))
}

/// A rotation decided: the new login takes over, the old one keeps working until `until`
/// (the grace's end, as the server's clock said) or is revoked now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub new_slot: Slot,
    pub new_login: String,
    pub old_login: String,
    /// The statements for the old login, run after the control database records the new one.
    pub retire_old: Vec<Step>,
    /// Whether the old login's sessions are ended now (no grace).
    pub end_old_sessions: bool,
}

/// Rotate `kind` away from the `current` slot. `grace_until`: when the old login stops
/// working (`None`: at once).
pub fn rotate(
    names: &WorkspaceNames,
    kind: Kind,
    current: Slot,
    grace_until: Option<&str>,
) -> Rotation {
    let new_slot = current.other();
    let old_login = names.login(kind, current);
    let retire_old = match grace_until {
        Some(ts) => vec![Step::server(format!(
            "ALTER ROLE {} VALID UNTIL {}",
            quote_ident(&old_login),
            quote_literal(ts)
        ))],
        None => vec![revoke_login(&old_login)],
    };
    Rotation {
        new_slot,
        new_login: names.login(kind, new_slot),
        old_login,
        retire_old,
        end_old_sessions: grace_until.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{sql_of, RoleSeen};

    fn names() -> WorkspaceNames {
        WorkspaceNames::opaque("acme", "0123456789abcdef").unwrap()
    }

    fn everything() -> Seen {
        let mut seen = Seen {
            database: true,
            ..Default::default()
        };
        for r in names().all_roles() {
            seen.roles.insert(r, RoleSeen::default());
        }
        seen
    }

    #[test]
    fn shut_out_for_good_revokes_every_login_and_connect() {
        let steps = shut_out(&names(), ShutOut::ForGood, &everything());
        let sql = sql_of(&steps);
        assert_eq!(sql.len(), 5);
        assert!(sql[..4]
            .iter()
            .all(|s| s.starts_with("ALTER ROLE") && s.ends_with("NOLOGIN PASSWORD NULL")));
        assert_eq!(
            sql[4],
            r#"REVOKE CONNECT ON DATABASE "dlw_0123456789abcdef" FROM "dlw_0123456789abcdef""#
        );
    }

    #[test]
    fn shut_out_of_a_half_dropped_workspace_names_only_what_exists() {
        let mut seen = Seen::default();
        seen.roles
            .insert(names().login(Kind::Read, Slot::B), RoleSeen::default());
        let sql = sql_of(&shut_out(&names(), ShutOut::ForGood, &seen)).join(";");
        assert_eq!(
            sql,
            r#"ALTER ROLE "dlw_0123456789abcdef_read_b" NOLOGIN PASSWORD NULL"#
        );
        assert!(shut_out(&names(), ShutOut::ForGood, &Seen::default()).is_empty());
    }

    #[test]
    fn a_move_closes_the_database_and_opens_it_again() {
        let closed = sql_of(&shut_out(&names(), ShutOut::ForMove, &everything())).join(";");
        assert!(
            !closed.contains("NOLOGIN"),
            "a move keeps the logins: {closed}"
        );
        assert!(closed.contains("FROM dl_platform_runtime"));
        let opened = sql_of(&let_in(&names())).join(";");
        assert!(opened.contains(
            r#"GRANT CONNECT ON DATABASE "dlw_0123456789abcdef" TO "dlw_0123456789abcdef""#
        ));
        assert!(opened.contains("TO dl_platform_runtime"));
    }

    #[test]
    fn rotation_with_and_without_grace() {
        let r = rotate(
            &names(),
            Kind::Override,
            Slot::A,
            Some("2026-12-07 10:00:00+00"),
        );
        assert_eq!(r.new_slot, Slot::B);
        assert_eq!(r.new_login, "dlw_0123456789abcdef_override_b");
        assert_eq!(
            sql_of(&r.retire_old),
            [
                r#"ALTER ROLE "dlw_0123456789abcdef_override_a" VALID UNTIL '2026-12-07 10:00:00+00'"#
            ]
        );
        assert!(!r.end_old_sessions);
        let r = rotate(&names(), Kind::Read, Slot::B, None);
        assert_eq!(r.new_slot, Slot::A);
        assert_eq!(
            sql_of(&r.retire_old),
            [r#"ALTER ROLE "dlw_0123456789abcdef_read_b" NOLOGIN PASSWORD NULL"#]
        );
        assert!(r.end_old_sessions);
    }

    #[test]
    fn passwords_travel_as_verifiers_marked_secret() {
        let step = set_verifier("x_read_a", "SCRAM-SHA-256$4096:abc");
        assert!(matches!(step, Step::Sql { secret: true, .. }));
        assert_eq!(
            step.sql(),
            Some(
                r#"ALTER ROLE "x_read_a" LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc' VALID UNTIL 'infinity'"#
            )
        );
    }
}
