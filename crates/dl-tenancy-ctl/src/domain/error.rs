//! The library's error type: a stable machine `code`, a human message, an HTTP status.

use serde::Serialize;
use std::fmt;

/// Stable, machine-readable error codes (the `code` field of the JSON error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The workspace id does not match `^[a-z][a-z0-9_-]{0,47}$`.
    InvalidWorkspaceId,
    /// A server name does not match `^[a-z][a-z0-9_-]{0,47}$`.
    InvalidServerName,
    /// Some other argument is malformed (duration, URL, kind, ...).
    InvalidArgument,
    /// `deprovision --confirm` does not repeat the workspace id.
    ConfirmationRequired,
    /// The workspace has no (live) database: provision it first.
    NotProvisioned,
    /// Another call holds the workspace's lock for too long, or the workspace is half-way.
    ProvisioningInProgress,
    /// Something in the workspace (a tenant's lock or open transaction) kept the operation
    /// waiting past the platform's lock or statement timeout; nothing was changed, retry.
    Busy,
    /// The last provisioning attempt failed; run provision again.
    ProvisioningFailed,
    /// No active server is registered to place a workspace on.
    NoServer,
    /// `server` names no registered server.
    ServerNotFound,
    /// A PostgreSQL server (control or workspace) cannot be reached.
    ServerUnreachable,
    /// `--pooled` asked for a server registered without a pooler.
    PoolerNotConfigured,
    /// `local up` has not been run for this data directory.
    LocalNotInitialized,
    /// The dl_tenancy extension is not installed on the server.
    ExtensionUnavailable,
    /// The secret key is missing, malformed, or does not decrypt a stored secret.
    SecretKey,
    /// The workspace is deleted (suspended, data kept): only an operator's `undelete` brings
    /// it back.
    WorkspaceSuspended,
    /// `purge`/`undelete` of a workspace that is not suspended.
    NotSuspended,
    /// A conflicting object exists (e.g. a role with a workspace's name that is not ours).
    Conflict,
    /// A SQL error from a server.
    DatabaseError,
    /// Starting or stopping a local server failed.
    LocalServer,
    /// Anything else (I/O, ...).
    Internal,
    /// The workspace's server has no pgBackRest repository (point-in-time restore, archive
    /// commands): only servers whose archiving the tool set up (`local up`) have one.
    ArchivingNotConfigured,
    /// A point-in-time restore's target is outside what the repository can recover: before
    /// its first backup ended, or after the last WAL it holds (the future).
    OutsideRecoveryWindow,
    /// Not enough free disk for the scratch copy a point-in-time restore makes.
    InsufficientDisk,
    // Answers of the HTTP front only (about the request itself, not a library call).
    Unauthorized,
    /// A valid token of the wrong kind: a workspace's at an operator endpoint, or the other way.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    InvalidJson,
    InvalidBody,
    InvalidRequest,
    RateLimited,
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidWorkspaceId => "invalid_workspace_id",
            ErrorCode::InvalidServerName => "invalid_server_name",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::NotProvisioned => "not_provisioned",
            ErrorCode::ProvisioningInProgress => "provisioning_in_progress",
            ErrorCode::Busy => "busy",
            ErrorCode::ProvisioningFailed => "provisioning_failed",
            ErrorCode::NoServer => "no_server",
            ErrorCode::ServerNotFound => "server_not_found",
            ErrorCode::ServerUnreachable => "server_unreachable",
            ErrorCode::PoolerNotConfigured => "pooler_not_configured",
            ErrorCode::LocalNotInitialized => "local_not_initialized",
            ErrorCode::ExtensionUnavailable => "extension_unavailable",
            ErrorCode::SecretKey => "secret_key",
            ErrorCode::WorkspaceSuspended => "workspace_suspended",
            ErrorCode::NotSuspended => "not_suspended",
            ErrorCode::Conflict => "conflict",
            ErrorCode::DatabaseError => "database_error",
            ErrorCode::LocalServer => "local_server",
            ErrorCode::Internal => "internal",
            ErrorCode::ArchivingNotConfigured => "archiving_not_configured",
            ErrorCode::OutsideRecoveryWindow => "outside_recovery_window",
            ErrorCode::InsufficientDisk => "insufficient_disk",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// The HTTP status an API front should answer with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidWorkspaceId
            | ErrorCode::InvalidServerName
            | ErrorCode::InvalidArgument
            | ErrorCode::ConfirmationRequired
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidBody => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotProvisioned | ErrorCode::ServerNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidRequest => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::ProvisioningInProgress
            | ErrorCode::PoolerNotConfigured
            | ErrorCode::WorkspaceSuspended
            | ErrorCode::NotSuspended
            | ErrorCode::ArchivingNotConfigured
            | ErrorCode::Conflict => 409,
            ErrorCode::OutsideRecoveryWindow => 422,
            ErrorCode::InsufficientDisk => 507,
            ErrorCode::NoServer
            | ErrorCode::ServerUnreachable
            | ErrorCode::LocalNotInitialized
            | ErrorCode::Busy
            | ErrorCode::Timeout => 503,
            ErrorCode::ProvisioningFailed
            | ErrorCode::ExtensionUnavailable
            | ErrorCode::SecretKey
            | ErrorCode::DatabaseError
            | ErrorCode::LocalServer
            | ErrorCode::Internal => 500,
        }
    }

    /// The CLI exit code: 2 for bad input (nothing was changed), 1 for everything else.
    pub fn exit_code(self) -> i32 {
        if self.http_status() == 400 {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the library. `message` never contains a secret.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// The SQLSTATE of the database error behind this one, kept so that callers decide by
    /// it (a lock timeout, a missing database) instead of by the message.
    #[serde(skip)]
    pub sqlstate: Option<String>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            sqlstate: None,
        }
    }
    /// The SQLSTATE behind this error, if a database answered with one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }
    pub fn exit_code(&self) -> i32 {
        self.code.exit_code()
    }
    /// `{"error":{"code":...,"message":...}}`
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }
    /// The SQLSTATE of an underlying database error, when there was one.
    pub fn with_context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let mut error = if code == "55P03" || code == "57014" {
                // lock_not_available / query_canceled: the platform's lock or statement
                // timeout (connection.rs) ran out while something held the workspace.
                busy()
            } else {
                let class = &code[..2];
                let c = if class == "08" || code == "57P01" || code == "57P03" || code == "3D000" {
                    ErrorCode::ServerUnreachable
                } else {
                    ErrorCode::DatabaseError
                };
                Error::new(c, format!("SQLSTATE {code}: {}", db.message()))
            };
            error.sqlstate = Some(code.to_string());
            return error;
        }
        if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        {
            return Error::new(ErrorCode::ServerUnreachable, e.to_string());
        }
        Error::new(ErrorCode::DatabaseError, e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorCode::Internal, e.to_string())
    }
}

impl From<pg_harness::Error> for Error {
    fn from(e: pg_harness::Error) -> Self {
        Error::new(ErrorCode::LocalServer, e.0)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The answer when a workspace kept a platform operation waiting past its timeouts.
pub(crate) fn busy() -> Error {
    Error::new(
        ErrorCode::Busy,
        "the workspace is busy: a lock or transaction in it kept this operation waiting; retry later",
    )
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidArgument, msg)
}

pub(crate) fn not_provisioned(ws: &str) -> Error {
    Error::new(
        ErrorCode::NotProvisioned,
        format!("workspace {ws} is not provisioned; run provision"),
    )
}

pub(crate) fn suspended_error(ws: &str, purge_after: Option<&str>) -> Error {
    Error::new(
        ErrorCode::WorkspaceSuspended,
        format!(
            "workspace {ws} is deleted (its data is kept until {}); an operator can undelete it",
            purge_after.unwrap_or("it is purged")
        ),
    )
}
