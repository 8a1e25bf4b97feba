//! `dl_tenancy_ctl`: provisioning of dl_tenancy workspace databases.
//!
//! One PostgreSQL database per workspace (`ws_<id>`), created from a template database that
//! already has `CREATE EXTENSION dl_tenancy`, with per-workspace login roles whose passwords are
//! hashed to SCRAM-SHA-256 here and stored encrypted (ChaCha20-Poly1305) in the control
//! database `dl_control`.
//!
//! Every operation is a method of [`Tenancy`] and returns a serde-serializable response (the
//! JSON body of the matching HTTP endpoint) or an [`Error`] with a stable machine code and an
//! HTTP status. The methods are blocking (sync `postgres` client) and open their own
//! connections, so a [`Tenancy`] can be shared between threads (`Send + Sync`); call them from
//! `spawn_blocking` in an async server.

mod archive;
mod backup;
pub mod certs;
pub mod connection;
pub mod control;
mod counts;
mod credentials;
pub mod error;
pub mod fences;
pub mod local;
mod migrate_names;
mod moves;
pub mod names;
mod pooler;
pub mod progress;
pub mod secret;
mod servers;
mod suspension;
pub mod tokens;
mod types;
mod upgrade;
mod usage;
mod workspaces;

pub use backup::{BackupReport, Manifest, RestoreReport, BACKUP_MAGIC};
pub use connection::{connect, connect_plain, SslMode};
pub use credentials::{GRACE_SWEEP_INTERVAL, MAX_GRACE_SECONDS};
pub use error::{Error, ErrorCode, Result};
pub use migrate_names::{NameMigration, NameMigrationReport};
pub use moves::{DrainReport, MoveMethod, MoveReport};
pub use names::{validate_workspace_id, Kind, WorkspaceNames, WORKSPACE_ID_PATTERN};
pub use pooler::{POOLER_ADMIN_USER, POOLER_REMOTE_AUTH_USER};
pub use secret::SecretKey;
pub use servers::{EXTENSION, TEMPLATE_DB};
pub use suspension::{DEFAULT_RETENTION_SECONDS, MAX_RETENTION_SECONDS, PURGE_SWEEP_INTERVAL};
pub use types::*;
pub use upgrade::{
    UpgradeEvent, UpgradeOptions, UpgradeReport, WorkspaceUpgrade, DEFAULT_LOCK_ATTEMPTS,
    DEFAULT_LOCK_TIMEOUT_MS,
};
pub use usage::{FleetUsage, ServerUsage, UsageError, WorkspaceUsage};
pub use workspaces::FAULT_ENV;

use std::path::PathBuf;

/// Environment variable naming an existing server to use instead of the local cluster.
pub const ADMIN_URL_ENV: &str = "DL_TENANCY_ADMIN_URL";
/// Environment variable for the data directory (default `./.dl-tenancy`).
pub const DATA_DIR_ENV: &str = "DL_TENANCY_DATA_DIR";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = ".dl-tenancy";

/// Where the tool finds its control database and secret key.
#[derive(Debug, Clone)]
pub struct Config {
    /// Local cluster directory (`local up`), also where `secret.key` lives.
    pub data_dir: PathBuf,
    /// An existing server (superuser): the control database lives there, and it is registered
    /// as server `primary` on first use. `None` = the local cluster of `data_dir`.
    pub admin_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            admin_url: None,
        }
    }
}

/// Handle on the fleet: the control database's connection string and the secret key.
#[derive(Debug, Clone)]
pub struct Tenancy {
    control_conn: String,
    key: SecretKey,
    /// Local mode: hint at `local up` when the control server is down.
    local: bool,
    /// Local mode: the data directory (the pooler a move repoints lives there).
    data_dir: Option<PathBuf>,
    /// Where steps of long operations go ([`Tenancy::with_progress`]).
    progress: progress::Progress,
}

impl Tenancy {
    /// Open the control plane described by `config`. No side effects: nothing is created,
    /// written or migrated (the control database is bootstrapped by [`Tenancy::init`], or by
    /// `local up` for the local cluster).
    ///
    /// Local mode reads `<data_dir>/local.json` (written by `local up`); with `admin_url` the
    /// control database lives on that server.
    pub fn open(config: &Config) -> Result<Tenancy> {
        match &config.admin_url {
            None => {
                let state = local::LocalState::read(&config.data_dir)?;
                Ok(Tenancy {
                    control_conn: state.admin_conn_string(&config.data_dir, "postgres"),
                    key: SecretKey::load(&config.data_dir, false)?,
                    local: true,
                    data_dir: Some(config.data_dir.clone()),
                    progress: Default::default(),
                })
            }
            Some(url) => Ok(Tenancy {
                control_conn: url.clone(),
                key: SecretKey::load(&config.data_dir, false)?,
                local: false,
                data_dir: None,
                progress: Default::default(),
            }),
        }
    }

    /// `dl-tenancy init --admin-url URL`: bootstrap the control plane on an existing server,
    /// once (re-running is harmless): the secret key (unless `DL_TENANCY_SECRET_KEY` gives
    /// one), the control database with every migration, and that server registered as
    /// `primary` when no server is registered yet. Local clusters get all of it from
    /// `local up`.
    pub fn init(config: &Config) -> Result<Tenancy> {
        let url = config.admin_url.as_deref().ok_or_else(|| {
            error::invalid("init needs --admin-url (a local cluster is set up by `local up`)")
        })?;
        let key = SecretKey::load(&config.data_dir, true)?;
        control::ensure_control_db(url)?;
        let t = Tenancy {
            control_conn: url.to_string(),
            key,
            local: false,
            data_dir: None,
            progress: Default::default(),
        };
        t.register_primary_if_empty(url)?;
        Ok(t)
    }

    /// A handle from parts (for an HTTP front that manages its own configuration):
    /// `control_conn` is an admin connection string of the server holding `dl_control`
    /// (its database part is replaced by `dl_control`).
    pub fn from_parts(control_conn: String, key: SecretKey) -> Tenancy {
        Tenancy {
            control_conn,
            key,
            local: false,
            data_dir: None,
            progress: Default::default(),
        }
    }

    /// Report each step of long operations (move, drain, backup, restore) to `progress`.
    pub fn with_progress(mut self, progress: progress::Progress) -> Tenancy {
        self.progress = progress;
        self
    }

    pub(crate) fn control(&self) -> Result<postgres::Client> {
        connection::connect(&self.control_conn, Some(control::CONTROL_DB)).map_err(|mut e| {
            if e.sqlstate() == Some("3D000") {
                e.message.push_str(if self.local {
                    " (the local cluster has no control database: `dl-tenancy local up`)"
                } else {
                    " (no control database on this server yet: `dl-tenancy init`)"
                });
            } else if self.local && e.code == ErrorCode::ServerUnreachable {
                e.message
                    .push_str(" (is the local cluster running? `dl-tenancy local up`)");
            }
            e
        })
    }
}
