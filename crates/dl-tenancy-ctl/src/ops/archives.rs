//! Each server's continuous archive as the tool reaches it: the local server's (set up by
//! `local up`), and the repository of a server added with `server add` whose host archives
//! its WAL (its operator sets `archive_command` there): `server archive` (or `server add
//! --backrest-stanza S --backrest-config FILE`) checks the operator's settings against the
//! server (the stanza holds this very cluster, and it archives), stores them 0600 under the
//! tool's data directory and records the stanza; `restore --at` and `archive status` of its
//! workspaces then use that repository.

use crate::base::connection::connect;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::validate_server_name;
use crate::domain::types::Server;
use crate::ops::Tenancy;
use crate::server::backrest::Backrest;
use crate::server::cluster::{Layout, LocalState, LOCAL_SERVER_ID};
use crate::server::repos::{self, stanza_system_ids, validate_stanza, RepoSettings};
use pg_harness::ClusterSpec;
use postgres::Client;
use serde::Serialize;
use std::path::PathBuf;

/// `server archive` (and `server add --backrest-*`): what the tool now knows of the
/// server's repository (no secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerArchive {
    pub server: String,
    pub stanza: String,
    /// `posix:/path`, `s3:bucket/path`, ...
    pub repository: String,
    /// Where the settings are stored (0600, the server OS user's).
    pub config_file: String,
    /// The cluster the stanza archives: the server's own.
    pub system_id: String,
    pub backups: usize,
}

/// The repository a server's archive commands use, and where and how its scratch clusters run.
pub(crate) struct Repo {
    pub backrest: Backrest,
    /// The tool's data directory: scratch clusters go under its `pitr/`.
    pub home: PathBuf,
    /// The settings a scratch cluster starts with: the local server's own; none for an added
    /// server (its own configuration comes with the backup; the scratch pins its privacy).
    pub base: ClusterSpec,
}

impl Tenancy {
    /// `server archive --name S --backrest-stanza ST --backrest-config FILE`: `settings` is
    /// the file's text (pgBackRest `repo1-*` options).
    pub fn server_archive(
        &self,
        server_id: &str,
        stanza: &str,
        settings: &str,
    ) -> Result<ServerArchive> {
        validate_server_name(server_id)?;
        validate_stanza(stanza)?;
        let settings = RepoSettings::parse(settings)?;
        if self.local && server_id == LOCAL_SERVER_ID {
            return Err(invalid(
                "the local server's archive is set up by `local up` (its own settings go in .dl-tenancy/pgbackrest/conf.d/)",
            ));
        }
        let home = self.home()?;
        let mut ctl = self.control()?;
        let server = self.load_server(&mut ctl, server_id)?;
        let mut admin = connect(&server.admin_conn, None)?;
        let row = admin.query_one(
            "SELECT system_identifier::text, pg_catalog.current_setting('archive_mode')
               FROM pg_catalog.pg_control_system()",
            &[],
        )?;
        let (system_id, archive_mode): (String, String) = (row.get(0), row.get(1));
        drop(admin);
        if archive_mode == "off" {
            return Err(Error::new(
                ErrorCode::ArchivingNotConfigured,
                format!(
                    "server {server_id} does not archive its WAL (archive_mode = off): set archive_mode = on and archive_command = 'pgbackrest --stanza={stanza} archive-push %p' there first (README: Point-in-time recovery)"
                ),
            ));
        }
        // Checked from a staging copy: settings that fail leave the stored ones as they were.
        let staging = repos::store(&home, &format!(".{server_id}.new"), stanza, &settings)?;
        let checked = stanza_system_ids(&staging);
        let _ = std::fs::remove_dir_all(&staging.dir);
        let ids = checked?;
        if !ids.iter().any(|id| id.to_string() == system_id) {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "stanza {stanza} of that repository archives another cluster (system id {}), not server {server_id} ({system_id})",
                    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let backrest = repos::store(&home, server_id, stanza, &settings)?;
        ctl.execute(
            "UPDATE servers SET backrest_stanza = $2, backrest_repo = $3, backrest_system_id = $4,
                    updated_at = now()
              WHERE id = $1",
            &[&server_id, &stanza, &settings.describe(), &system_id],
        )?;
        Ok(ServerArchive {
            server: server_id.to_string(),
            stanza: stanza.to_string(),
            repository: settings.describe(),
            config_file: backrest.config_file().display().to_string(),
            system_id,
            backups: backrest.backups()?.len(),
        })
    }

    /// The repository of `server`: the local server's, or the one recorded by `server
    /// archive`; `archiving_not_configured` otherwise.
    pub(crate) fn repo_of(&self, ctl: &mut Client, server: &Server) -> Result<Repo> {
        if self.local && server.id == LOCAL_SERVER_ID {
            let (layout, backrest) = self.local_backrest(&server.id)?;
            let state = LocalState::read(&layout.dir)?;
            return Ok(Repo {
                base: layout.cluster(&state),
                home: layout.dir.clone(),
                backrest,
            });
        }
        let stanza: Option<String> = ctl
            .query_one(
                "SELECT backrest_stanza FROM servers WHERE id = $1",
                &[&server.id],
            )?
            .get(0);
        let Some(stanza) = stanza else {
            return Err(Error::new(
                ErrorCode::ArchivingNotConfigured,
                format!(
                    "server {id} has no pgBackRest repository the tool knows: once its host archives its WAL, give it with `dl-tenancy server archive --name {id} --backrest-stanza S --backrest-config FILE`",
                    id = server.id
                ),
            ));
        };
        let home = self.home()?;
        Ok(Repo {
            backrest: repos::stored(&home, &server.id, &stanza)?,
            base: ClusterSpec {
                data_dir: PathBuf::new(),
                socket_dir: PathBuf::new(),
                port: server.port,
                log_file: PathBuf::new(),
                conf: vec![],
                hba: None,
                ident: None,
            },
            home: Layout::new(&home)?.dir,
        })
    }

    /// The tool's data directory (both modes).
    pub(crate) fn home(&self) -> Result<PathBuf> {
        self.home
            .clone()
            .ok_or_else(|| invalid("this handle has no data directory"))
    }
}
