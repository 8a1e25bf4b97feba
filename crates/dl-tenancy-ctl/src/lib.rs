//! `dl_tenancy_ctl`: provisioning of dl_tenancy workspace databases, one PostgreSQL database
//! per workspace, with per-workspace logins whose passwords are hashed to SCRAM-SHA-256 here
//! and stored encrypted (ChaCha20-Poly1305) in the control database `dl_control`.
//!
//! The library is built in layers; a module imports only from layers below its own (and,
//! within its layer, without a circle), which `tests/layers.rs` checks:
//!
//! 1. [`domain`]: ids and names, states and their transitions, limits, errors, reports. Pure.
//! 2. [`plan`]: the decisions (desired state + observed catalog → statements) and SQL
//!    quoting. Pure: tested without a server.
//! 3. [`base`]: connections, the secret key, certificates.
//! 4. [`control`] (the control database: migrations, records, locks) and [`server`] (a
//!    PostgreSQL server's catalog, roles, archives, streams, pooler, the local cluster's files).
//!    Neither imports the other.
//! 5. [`ops`]: the operations, methods of [`Tenancy`]; each runs one decision's statements.
//!
//! The fronts are other crates: the CLI (`dl-tenancy`) and HTTP (`dl-tenancy-http`). Every
//! operation returns a serde-serializable response or an [`Error`] with a stable code and an
//! HTTP status. The methods are blocking and open their own connections; a [`Tenancy`] can be
//! shared between threads.

pub mod base;
pub mod control;
pub mod domain;
pub mod ops;
pub mod plan;
pub mod server;

// The names fronts and tests use, from wherever they live.
pub use base::connection::{connect, connect_plain, SslMode};
pub use base::secret::SecretKey;
pub use base::{certs, connection, secret};
pub use domain::error::{Error, ErrorCode, Result};
pub use domain::limits::{
    self as fences, DEFAULT_LOCK_ATTEMPTS, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_RETENTION_SECONDS,
    GRACE_SWEEP_INTERVAL, MAX_GRACE_SECONDS, MAX_RETENTION_SECONDS, PURGE_SWEEP_INTERVAL,
};
pub use domain::names::{
    self as names, validate_workspace_id, Kind, WorkspaceNames, EXTENSION, TEMPLATE_DB,
    WORKSPACE_ID_PATTERN,
};
pub use domain::progress;
pub use domain::state::{MoveState, WorkspaceState};
pub use domain::types::*;
pub use ops::archives::ServerArchive;
pub use ops::backup::{BackupReport, Manifest, RestoreReport, BACKUP_MAGIC};
pub use ops::drain::DrainReport;
pub use ops::local;
pub use ops::migrate_names::{NameMigration, NameMigrationReport};
pub use ops::moves::MoveReport;
pub use ops::pitr::{ArchiveBackup, ArchiveStatus, PointInTimeReport, RecoveryWindow, RestoreInto};
pub use ops::tokens;
pub use ops::upgrade::{UpgradeEvent, UpgradeOptions, UpgradeReport, WorkspaceUpgrade};
pub use ops::usage::{FleetUsage, ServerUsage, UsageError, WorkspaceSummary, WorkspaceUsage};
pub use ops::{Config, Tenancy, ADMIN_URL_ENV, DATA_DIR_ENV, DEFAULT_DATA_DIR, FAULT_ENV};
pub use plan::moves::MoveMethod;
pub use server::backrest::BackupKind;
pub use server::pooler::{POOLER_ADMIN_USER, POOLER_REMOTE_AUTH_USER};
