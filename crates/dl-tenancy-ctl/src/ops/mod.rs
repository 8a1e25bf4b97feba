//! Layer 4, the operations: one public method of [`Tenancy`] per operation, each composed of
//! steps from `control` (records, locks) and `server` (catalog, roles, archive, pooler), with
//! the decisions taken by `plan`. The CLI and the HTTP front (other crates) call only these.

pub mod archives;
pub mod backup;
pub mod credentials;
pub mod drain;
pub mod limits;
pub mod load;
pub mod local;
pub mod migrate_names;
pub mod move_copy;
pub mod moves;
pub mod pitr;
pub mod pooling;
pub mod servers;
pub mod suspension;
pub mod tokens;
pub mod upgrade;
pub mod usage;
pub mod workspaces;

use crate::base::connection;
use crate::base::kept::{Kept, Session};
use crate::base::secret::SecretKey;
use crate::control;
use crate::domain::error::{self, ErrorCode, Result};
use crate::domain::limits::{KEPT_SESSIONS, LIVE_CHECK_TTL};
use crate::domain::progress;
use crate::server::cluster;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Environment variable naming a fault point where the process exits at once (tests only).
pub const FAULT_ENV: &str = "DL_TENANCY_FAULT";

/// Exit the process at a named point when `DL_TENANCY_FAULT` says so: a simulated crash
/// half-way for the idempotency tests. Only in test builds (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub(crate) fn fault_point(name: &str) {
    if std::env::var(FAULT_ENV).as_deref() == Ok(name) {
        eprintln!("{{\"error\":{{\"code\":\"simulated_crash\",\"message\":\"{name}\"}}}}");
        std::process::exit(97);
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) fn fault_point(_name: &str) {}

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
    /// The tool's data directory in both modes (an added server's repository settings, the
    /// scratch clusters of its point-in-time restores).
    home: Option<PathBuf>,
    /// Where steps of long operations go ([`Tenancy::with_progress`]).
    progress: progress::Progress,
    /// Set once this handle has brought the control database's schema up to date: the
    /// migrations are applied at the first connection, not by each operation.
    schema: Arc<OnceLock<()>>,
    /// Sessions kept for read-only calls ([`Tenancy::with_kept_sessions`]; `serve`).
    kept: Option<Arc<Kept>>,
    /// With kept sessions: each workspace's extension version as last seen live, and when.
    seen_live: Arc<Mutex<HashMap<String, (Instant, String)>>>,
}

impl Tenancy {
    /// Open the control plane described by `config`. Nothing is created here (the control
    /// database is bootstrapped by [`Tenancy::init`], or by `local up` for the local cluster);
    /// the first operation brings its schema up to date ([`Tenancy::control`]).
    ///
    /// Local mode reads `<data_dir>/local.json` (written by `local up`); with `admin_url` the
    /// control database lives on that server.
    pub fn open(config: &Config) -> Result<Tenancy> {
        match &config.admin_url {
            None => {
                let state = cluster::LocalState::read(&config.data_dir)?;
                let mut t = Tenancy::from_parts(
                    state.admin_conn_string(&config.data_dir, "postgres"),
                    SecretKey::load(&config.data_dir, false)?,
                );
                t.local = true;
                t.data_dir = Some(config.data_dir.clone());
                t.home = Some(config.data_dir.clone());
                Ok(t)
            }
            Some(url) => {
                let mut t =
                    Tenancy::from_parts(url.clone(), SecretKey::load(&config.data_dir, false)?);
                t.home = Some(config.data_dir.clone());
                Ok(t)
            }
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
        let t = Tenancy::from_parts(url.to_string(), key);
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
            home: None,
            progress: Default::default(),
            schema: Default::default(),
            kept: None,
            seen_live: Default::default(),
        }
    }

    /// Keep sessions for read-only calls (status, metadata, reveal, token lookups): up to
    /// [`KEPT_SESSIONS`] to the control database and to each server, instead of new ones per
    /// call. For a long-running front (`serve`); a CLI call opens what it needs.
    pub fn with_kept_sessions(mut self) -> Tenancy {
        self.kept = Some(Arc::new(Kept::new(KEPT_SESSIONS)));
        self
    }

    /// A session in the control database for reading: a kept one when this handle keeps
    /// sessions, else a new one.
    pub(crate) fn control_read(&self) -> Result<Session> {
        let Some(kept) = &self.kept else {
            return self.control().map(Session::Own);
        };
        if self.schema.get().is_none() {
            drop(self.control()?);
        }
        kept.get(&self.control_conn, Some(control::CONTROL_DB))
    }

    /// A superuser session on `server`'s maintenance database for reading (kept or new).
    pub(crate) fn admin_read(&self, admin_conn: &str) -> Result<Session> {
        match &self.kept {
            Some(kept) => kept.get(admin_conn, None),
            None => connection::connect(admin_conn, None).map(Session::Own),
        }
    }

    /// A workspace's extension version as last seen live within [`LIVE_CHECK_TTL`] (kept
    /// sessions only: a CLI call always looks).
    pub(crate) fn seen_live(&self, workspace: &str) -> Option<String> {
        self.kept.as_ref()?;
        let seen = self.seen_live.lock().unwrap_or_else(|e| e.into_inner());
        let (at, version) = seen.get(workspace)?;
        (at.elapsed() < LIVE_CHECK_TTL).then(|| version.clone())
    }

    pub(crate) fn saw_live(&self, workspace: &str, version: Option<&str>) {
        if self.kept.is_none() {
            return;
        }
        let mut seen = self.seen_live.lock().unwrap_or_else(|e| e.into_inner());
        match version {
            Some(v) => seen.insert(workspace.to_string(), (Instant::now(), v.to_string())),
            None => seen.remove(workspace),
        };
    }

    /// Report each step of long operations (move, drain, backup, restore) to `progress`.
    pub fn with_progress(mut self, progress: progress::Progress) -> Tenancy {
        self.progress = progress;
        self
    }

    /// A session in the control database, its schema brought up to date on this handle's
    /// first connection (the migrations of `control/migrations/`).
    pub(crate) fn control(&self) -> Result<postgres::Client> {
        let mut ctl = connection::connect(&self.control_conn, Some(control::CONTROL_DB)).map_err(
            |mut e| {
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
            },
        )?;
        if self.schema.get().is_none() {
            control::apply_schema(&mut ctl)?;
            let _ = self.schema.set(());
        }
        Ok(ctl)
    }
}
