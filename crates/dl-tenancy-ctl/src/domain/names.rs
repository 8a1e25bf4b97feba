//! Workspace ids, the names derived from them, and SQL quoting.

use crate::domain::error::{Error, ErrorCode, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The documented workspace id pattern.
pub const WORKSPACE_ID_PATTERN: &str = "^[a-z][a-z0-9_-]{0,47}$";

fn matches_id_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 48
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Check a workspace id against [`WORKSPACE_ID_PATTERN`].
pub fn validate_workspace_id(id: &str) -> Result<()> {
    check_pattern(id, ErrorCode::InvalidWorkspaceId, "workspace id")
}

/// Check a server name (same pattern as workspace ids).
pub fn validate_server_name(name: &str) -> Result<()> {
    check_pattern(name, ErrorCode::InvalidServerName, "server name")
}

fn check_pattern(s: &str, code: ErrorCode, what: &str) -> Result<()> {
    if matches_id_pattern(s) {
        return Ok(());
    }
    // Quoted as JSON and cut short: the input is the caller's, echoed safely.
    let shown = serde_json::Value::String(s.chars().take(80).collect());
    Err(Error::new(
        code,
        format!("{what} {shown} does not match {WORKSPACE_ID_PATTERN}"),
    ))
}

/// A name checked once where it comes in (a front's argument), then used as a `&str`.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<$name> {
                $check(s)?;
                Ok($name(s.to_string()))
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_name!(
    /// A workspace id that matches [`WORKSPACE_ID_PATTERN`].
    WorkspaceId,
    validate_workspace_id
);
checked_name!(
    /// A server name that matches the same pattern.
    ServerName,
    validate_server_name
);

/// Which credential: read-only or override (writes overrides, owns tenant_custom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Read,
    Override,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Read, Kind::Override];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Override => "override",
        }
    }
    /// The extension's group role the logins of this kind belong to.
    pub fn group_role(self) -> &'static str {
        match self {
            Kind::Read => "dl_tenant_read",
            Kind::Override => "dl_tenant_override",
        }
    }
    /// `search_path` set on the logins of this kind (a role default: it holds through the
    /// pooler). Unqualified names find the tenant's own tables first (migration tools keep
    /// their bookkeeping in `current_schema()`), then the resolved views, then the helpers;
    /// `pg_catalog` comes last, so that the extension's bounded advisory-lock functions in
    /// `public` answer an unqualified `pg_advisory_lock(...)` (sql/install/08_shared_state.sql).
    pub fn search_path(self) -> &'static str {
        match self {
            Kind::Read => "dl_resolved, public, pg_catalog",
            Kind::Override => "tenant_custom, dl_resolved, public, pg_catalog",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        match s {
            "read" => Ok(Kind::Read),
            "override" => Ok(Kind::Override),
            _ => Err(crate::domain::error::invalid(
                "kind must be \"read\" or \"override\"",
            )),
        }
    }
}

/// The two logins of a kind, used alternately for zero-downtime rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

/// Prefix of a workspace's opaque database name: `dlw_` and 16 hex digits.
pub const OPAQUE_PREFIX: &str = "dlw_";
/// Prefix of the names of workspaces provisioned before 0.4.0 (`ws_<id>`), until
/// `dl-tenancy migrate-names` gives them opaque ones.
pub const LEGACY_PREFIX: &str = "ws_";

/// The server-side names of one workspace, all derived from its database name: the database,
/// the NOLOGIN workspace role named like it (pg_hba `samerole`) and the four logins
/// `<database>_<kind>_<slot>`. New workspaces get an opaque database name (`dlw_` + 16 random
/// hex digits, unique in the control database), so that no name says which customer it
/// belongs to and no workspace's name can be another's: logins are longer than any database
/// name, and databases differ in the random part. None of them carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceNames {
    pub workspace: String,
    database: String,
}

impl WorkspaceNames {
    /// Names of a workspace whose database the control database records as `database`.
    pub fn recorded(workspace: &str, database: &str) -> Result<Self> {
        validate_workspace_id(workspace)?;
        Ok(WorkspaceNames {
            workspace: workspace.to_string(),
            database: database.to_string(),
        })
    }
    /// Opaque names from a handle (16 lowercase hex digits).
    pub fn opaque(workspace: &str, handle: &str) -> Result<Self> {
        Self::recorded(workspace, &format!("{OPAQUE_PREFIX}{handle}"))
    }
    /// The names a workspace provisioned before 0.4.0 has: `ws_<id>`.
    pub fn legacy(workspace: &str) -> Result<Self> {
        Self::recorded(workspace, &format!("{LEGACY_PREFIX}{workspace}"))
    }
    pub fn database(&self) -> String {
        self.database.clone()
    }
    /// The NOLOGIN role named like the database (pg_hba `samerole`).
    pub fn workspace_role(&self) -> String {
        self.database()
    }
    /// `<database>_<kind>_<slot>`: at most 3 + 48 + 11 = 62 bytes (< NAMEDATALEN).
    pub fn login(&self, kind: Kind, slot: Slot) -> String {
        format!("{}_{}_{}", self.database, kind.as_str(), slot.as_str())
    }
    /// The login a load of the tenant's objects runs as (`archive::TenantLoader`), only
    /// while it runs.
    pub fn loader(&self) -> String {
        format!("{}_load", self.database)
    }
    pub fn all_logins(&self) -> Vec<String> {
        let mut v = Vec::new();
        for k in Kind::ALL {
            for s in [Slot::A, Slot::B] {
                v.push(self.login(k, s));
            }
        }
        v
    }
    /// Every role of the workspace: the four logins and the workspace role.
    pub fn all_roles(&self) -> Vec<String> {
        let mut v = self.all_logins();
        v.push(self.workspace_role());
        v
    }
}

/// Parse a duration such as `0`, `90`, `90s`, `10m`, `1h30m`, `2d` into seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let bad = || {
        crate::domain::error::invalid(format!(
            "duration {} is not like 0, 90s, 10m, 1h30m, 2d",
            serde_json::Value::String(s.chars().take(40).collect())
        ))
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

pub(crate) fn credential_aad(ws: &str, kind: Kind, slot: Slot) -> String {
    format!(
        "dl_tenancy credential {ws}/{}/{}",
        kind.as_str(),
        slot.as_str()
    )
}

/// Name of the per-server template database (has the extension; nobody may connect to it).
pub const TEMPLATE_DB: &str = "dl_tenancy_template";

/// Name of the extension.
pub const EXTENSION: &str = "dl_tenancy";

/// Each server's database in which its PgBouncer looks up tenant logins (`auth_dbname`): the
/// extension only, no data, CONNECT for the pooler's auth role alone. Looking logins up in one
/// place, never in the database a client names, keeps the pooler from telling a client
/// whether a database exists.
pub const POOLER_LOOKUP_DB: &str = "dl_pooler_lookup";

pub(crate) fn server_aad(id: &str) -> String {
    format!("dl_tenancy server {id} admin_url")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids() {
        for ok in ["a", "acme", "acme-prod_2", &format!("a{}", "b".repeat(47))] {
            assert!(validate_workspace_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1abc",
            "-a",
            "a b",
            "a;drop",
            "a\"b",
            "ä",
            "a.b",
            &format!("a{}", "b".repeat(48)),
        ] {
            let e = validate_workspace_id(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_workspace_id");
        }
        let n = WorkspaceNames::legacy(&format!("a{}", "b".repeat(47))).unwrap();
        assert!(n.login(Kind::Override, Slot::B).len() <= 63);
        let n = WorkspaceNames::opaque("acme", "0123456789abcdef").unwrap();
        assert_eq!(n.database().len(), 20);
        assert!(!n.login(Kind::Read, Slot::A).contains("acme"));
        assert!(n.login(Kind::Read, Slot::A).len() > n.database().len());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("10m").unwrap(), 600);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("2d").unwrap(), 172800);
        for bad in ["", "m", "10x", "1.5h", "-1", "10m5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
