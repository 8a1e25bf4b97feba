//! Layer 2, the decisions: from what should be (a workspace's names and limits, a recorded
//! state) and what a server was seen to have ([`Seen`]), the statements that make it so.
//! Pure functions over domain types, tested without a server; `ops` observes (`server`), asks
//! here, then runs the [`Step`]s (`server::apply`). SQL text is quoted here only ([`quote`]).

pub mod access;
pub mod moves;
pub mod pitr;
pub mod quote;
pub mod workspace;

use std::collections::BTreeMap;

/// Where a statement runs: the server's maintenance database, or the workspace's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Server,
    Database,
}

/// One step of a decision: a statement, or a named point between statements where a test
/// build may simulate a crash (`ops::fault_point`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Sql {
        target: Target,
        sql: String,
        /// The statement holds a secret (a SCRAM verifier): a failure never echoes it.
        secret: bool,
    },
    Checkpoint(&'static str),
}

impl Step {
    pub fn server(sql: impl Into<String>) -> Step {
        Step::Sql {
            target: Target::Server,
            sql: sql.into(),
            secret: false,
        }
    }
    pub fn database(sql: impl Into<String>) -> Step {
        Step::Sql {
            target: Target::Database,
            sql: sql.into(),
            secret: false,
        }
    }
    pub fn secret(sql: impl Into<String>) -> Step {
        Step::Sql {
            target: Target::Server,
            sql: sql.into(),
            secret: true,
        }
    }
    /// The statement's text (tests), `None` for a checkpoint.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Step::Sql { sql, .. } => Some(sql),
            Step::Checkpoint(_) => None,
        }
    }
}

/// A role as the server has it (`pg_roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleSeen {
    pub can_login: bool,
    pub superuser: bool,
    /// CREATEROLE, CREATEDB or BYPASSRLS.
    pub powers: bool,
}

/// What one server has of one workspace: its roles (the workspace role and the logins, by
/// name; a missing one is absent), its database, and the extension in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    pub roles: BTreeMap<String, RoleSeen>,
    pub database: bool,
    /// The extension's version in the database; `None` when the database or it is missing.
    pub extension: Option<String>,
}

/// The statements of `steps`, without checkpoints (tests).
#[cfg(test)]
pub(crate) fn sql_of(steps: &[Step]) -> Vec<&str> {
    steps.iter().filter_map(Step::sql).collect()
}
