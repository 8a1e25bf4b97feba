//! Point-in-time recovery on pgBackRest (issue 24): one workspace's database as it was at a
//! time, out of the continuous archive of the server it shares with others, and the archive's
//! own commands (backup, status).
//!
//! A restore copies only that database (and the system ones) from the newest backup before
//! the target into a scratch directory, replays the archived WAL to the target in a throwaway
//! PostgreSQL on a private socket, and dumps the workspace from there with the very code of
//! `backup`; the dump then loads through `restore`'s code (the tenant's objects as the tenant,
//! never as a superuser) into a new workspace with fresh credentials, or into the workspace
//! itself, whose current state is first kept as a `backup` file. The scratch cluster and its
//! files go when the restore ends, however it ends.

use crate::base::connection::connect;
use crate::control::lock::{with_restore_lock, with_workspace_lock};
use crate::control::records::record_event;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::limits::{RECOVERY_LIMIT, RESTORE_DISK_MARGIN_MB};
use crate::domain::names::validate_workspace_id;
use crate::domain::types::ArchiveFigures;
use crate::ops::backup::{read_backup, RestoreReport};
use crate::ops::Tenancy;
use crate::plan::pitr::{
    archive_lag_bytes, check_disk, choose_set, disk_needed, format_utc, select_databases, window,
    BackupSet, SYSTEM_DATABASES,
};
use crate::server::archive::TempDir;
use crate::server::archiver::{archive_now, archived};
use crate::server::backrest::{Backrest, BackupKind, RestoreRequest};
use crate::server::cluster::{Layout, LOCAL_SERVER_ID};
use crate::server::roles::drop_database;
use crate::server::scratch::{free_bytes, Scratch};
use postgres::Client;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a point-in-time restore puts the workspace's past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreInto {
    /// A new (or empty) workspace, with fresh credentials.
    Workspace(String),
    /// The workspace itself (its current state kept as a backup file first).
    InPlace,
}

/// A backup of the repository, times in UTC.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArchiveBackup {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub started_at: String,
    pub stopped_at: String,
    /// The cluster's size, and what the backup takes in the repository.
    pub database_bytes: u64,
    pub repository_bytes: u64,
}

impl From<&BackupSet> for ArchiveBackup {
    fn from(s: &BackupSet) -> ArchiveBackup {
        ArchiveBackup {
            label: s.label.clone(),
            kind: s.kind.clone(),
            started_at: format_utc(s.started * 1_000_000),
            stopped_at: format_utc(s.stopped * 1_000_000),
            database_bytes: s.size,
            repository_bytes: s.repo_size,
        }
    }
}

/// What can be recovered: from the end of the oldest backup to the last archived WAL.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecoveryWindow {
    pub from: String,
    pub to: String,
}

/// `restore --workspace W --at TIME (--into W2 | --in-place --yes)`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PointInTimeReport {
    pub workspace: String,
    /// The target, as the server read it, in UTC.
    pub at: String,
    pub into: String,
    pub in_place: bool,
    /// The backup the copy started from.
    pub backup: ArchiveBackup,
    pub window: RecoveryWindow,
    /// In place: the file holding the workspace as it was before (a `backup` file).
    pub kept_backup: Option<String>,
    pub restored: RestoreReport,
}

/// `archive status` and `archive backup`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArchiveStatus {
    pub server: String,
    pub stanza: String,
    pub backups: Vec<ArchiveBackup>,
    pub last_backup: Option<ArchiveBackup>,
    /// `None` before the first backup.
    pub window: Option<RecoveryWindow>,
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<String>,
    /// WAL written since the end of the last archived segment: what a lost server would lose.
    pub archive_lag_bytes: Option<u64>,
    pub archive_failures: i64,
    pub last_failed_wal: Option<String>,
}

impl Tenancy {
    /// `restore --workspace W --at TIME`: see the module. One at a time per workspace.
    pub fn restore_at(
        &self,
        workspace: &str,
        at: &str,
        into: &RestoreInto,
    ) -> Result<PointInTimeReport> {
        validate_target(workspace, into)?;
        let mut ctl = self.control()?;
        with_restore_lock(&mut ctl, workspace, |ctl| {
            self.restore_at_locked(ctl, workspace, at, into)
        })
    }

    /// What [`Tenancy::restore_at`] would refuse before it copies anything, in a second or
    /// two: the ids, the workspace (active), its server's repository, `at` (a time, inside
    /// the window: from the end of the oldest backup to the server's clock now). For a front
    /// that runs the restore itself in the background (the HTTP API's jobs).
    pub fn check_restore_at(&self, workspace: &str, at: &str, into: &RestoreInto) -> Result<()> {
        validate_target(workspace, into)?;
        let mut ctl = self.control()?;
        let (_, server_id) = self.active_workspace(&mut ctl, workspace)?;
        let server = self.load_server(&mut ctl, &server_id)?;
        let repo = self.repo_of(&mut ctl, &server)?;
        drop(ctl);
        let mut admin = connect(&server.admin_conn, None)?;
        let target = read_time(&mut admin, at)?;
        let now: i64 = admin
            .query_one(
                "SELECT (EXTRACT(epoch FROM pg_catalog.clock_timestamp()) * 1000000)::bigint",
                &[],
            )?
            .get(0);
        drop(admin);
        choose_set(&repo.backrest.backups()?, target, now).map(|_| ())
    }

    fn restore_at_locked(
        &self,
        ctl: &mut Client,
        ws: &str,
        at: &str,
        into: &RestoreInto,
    ) -> Result<PointInTimeReport> {
        let (names, server_id) = self.active_workspace(ctl, ws)?;
        let server = self.load_server(ctl, &server_id)?;
        let repo = self.repo_of(ctl, &server)?;
        let backrest = &repo.backrest;
        let db = names.database();
        let mut admin = connect(&server.admin_conn, None)?;
        let target = read_time(&mut admin, at)?;

        // Everything committed until now in the repository: the window ends now.
        self.progress
            .step(|| format!("{ws}: archiving the server's WAL up to now"));
        let archived_to = archive_now(&server.admin_conn)?;
        let sets = backrest.backups()?;
        let set = choose_set(&sets, target, archived_to)?.clone();
        let window = describe(&sets, archived_to);
        let selection = select_databases(&db, &backrest.databases(&set.label)?);

        let scratch_root = Layout::new(&repo.home)?.scratch(&db);
        let parent = scratch_root.parent().unwrap_or(&repo.home).to_path_buf();
        make_private_dir(&parent, 0o711)?;
        let sizes = admin.query_one(
            "SELECT pg_catalog.pg_database_size($1::text),
                    (SELECT pg_catalog.sum(pg_catalog.pg_database_size(oid))::bigint
                       FROM pg_catalog.pg_database WHERE datname = ANY($2))",
            &[&db, &SYSTEM_DATABASES.to_vec()],
        )?;
        let (db_bytes, system_bytes): (i64, i64) = (sizes.get(0), sizes.get(1));
        drop(admin);
        check_disk(
            disk_needed(
                db_bytes.max(0) as u64,
                system_bytes.max(0) as u64,
                RESTORE_DISK_MARGIN_MB << 20,
            ),
            free_bytes(&parent)?,
            &parent.display().to_string(),
        )?;

        let at_text = format_utc(target);
        self.progress.step(|| {
            format!(
                "{ws}: copying {db} from backup {} into {}",
                set.label,
                scratch_root.display()
            )
        });
        let mut scratch = Scratch::create(&scratch_root, repo.base.port)?;
        backrest.restore(&RestoreRequest {
            data_dir: &scratch.data_dir(),
            set: Some(&set.label),
            selection: Some(&selection),
            target: Some(&at_text),
            archive: false,
        })?;
        self.progress
            .step(|| format!("{ws}: replaying WAL to {at_text} on a private socket"));
        scratch.start(&repo.base, RECOVERY_LIMIT)?;
        self.progress
            .step(|| format!("{ws}: recovered at {at_text}; dumping it"));
        let file = scratch_root.join("workspace.backup");
        self.write_backup(&scratch.admin_conn(), &server.id, &names, &file)?;

        let (kept_backup, restored, target_ws) = match into {
            RestoreInto::Workspace(w2) => (None, self.restore(&file, w2)?, w2.clone()),
            RestoreInto::InPlace => {
                let keep = self.kept_backup_path(ws, archived_to)?;
                self.progress
                    .step(|| format!("{ws}: keeping its current state in {}", keep.display()));
                self.backup(ws, &keep)?;
                let tmp = TempDir::new()?;
                let (manifest, archive) = read_backup(&file, &tmp.0)?;
                let restored = with_workspace_lock(ctl, ws, |ctl| {
                    self.progress
                        .step(|| format!("{ws}: replacing its database (sessions end)"));
                    drop_database(&mut connect(&server.admin_conn, None)?, &names)?;
                    self.ensure_workspace(ctl, &server, &names)?;
                    self.restore_locked(ctl, ws, &manifest, &archive, &tmp.0)
                })
                .map_err(|e| {
                    e.with_context(&format!(
                        "{ws} in place (its state before is kept in {}; `restore --from` it into an empty workspace)",
                        keep.display()
                    ))
                })?;
                (Some(keep.display().to_string()), restored, ws.to_string())
            }
        };
        drop(scratch);
        record_event(
            ctl,
            ws,
            "point_in_time_restore",
            serde_json::json!({"at": at_text, "into": target_ws, "backup": set.label,
                               "kept_backup": kept_backup}),
        )?;
        Ok(PointInTimeReport {
            workspace: ws.to_string(),
            at: at_text,
            into: target_ws,
            in_place: *into == RestoreInto::InPlace,
            backup: ArchiveBackup::from(&set),
            window,
            kept_backup,
            restored,
        })
    }

    /// `archive backup --type T`: a backup of the local server now (for an operator's cron),
    /// then pgBackRest's expiry of what retention no longer keeps.
    pub fn archive_backup(&self, kind: BackupKind) -> Result<ArchiveStatus> {
        let (_, backrest) = self.local_backrest(LOCAL_SERVER_ID)?;
        self.progress
            .step(|| format!("{LOCAL_SERVER_ID}: {} backup", kind.as_str()));
        backrest.backup(kind)?;
        self.archive_status(None)
    }

    /// `archive status [--server S]`: a server's backups, recoverable window and archive lag
    /// (the local server's by default; an added one's once `server archive` gave its
    /// repository).
    pub fn archive_status(&self, server: Option<&str>) -> Result<ArchiveStatus> {
        let id = server.unwrap_or(LOCAL_SERVER_ID);
        if server.is_none() {
            self.local_backrest(LOCAL_SERVER_ID)?;
        }
        let mut ctl = self.control()?;
        let server = self.load_server(&mut ctl, id)?;
        let backrest = self.repo_of(&mut ctl, &server)?.backrest;
        drop(ctl);
        let a = archived(&mut connect(&server.admin_conn, None)?)?;
        let sets = backrest.backups()?;
        let backups: Vec<ArchiveBackup> = sets.iter().map(ArchiveBackup::from).collect();
        let lag = a
            .last_wal
            .as_deref()
            .and_then(|w| archive_lag_bytes(a.current_lsn, w, a.segment_size));
        Ok(ArchiveStatus {
            server: server.id.clone(),
            stanza: backrest.stanza.clone(),
            last_backup: backups.last().cloned(),
            backups,
            window: a
                .last_at
                .map(|to| describe(&sets, to))
                .filter(|w| !w.from.is_empty()),
            last_archived_wal: a.last_wal.clone(),
            last_archived_at: a.last_at.map(format_utc),
            archive_lag_bytes: lag,
            archive_failures: a.failed_count,
            last_failed_wal: a.last_failed_wal,
        })
    }

    /// The servers whose archive the tool knows: the local one (local mode) and those
    /// `server archive` gave a repository.
    pub(crate) fn archived_servers(&self) -> Result<Vec<String>> {
        let mut ctl = self.control_read()?;
        let rows = ctl.query(
            "SELECT id FROM servers
              WHERE active AND (backrest_stanza IS NOT NULL OR (id = $1 AND $2))
              ORDER BY id",
            &[&LOCAL_SERVER_ID, &self.local],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A server's archive in numbers (`serve`'s /metrics).
    pub(crate) fn archive_figures(&self, id: &str) -> Result<ArchiveFigures> {
        let mut ctl = self.control_read()?;
        let server = self.load_server(&mut ctl, id)?;
        let backrest = self.repo_of(&mut ctl, &server)?.backrest;
        drop(ctl);
        let mut admin = self.admin_read(&server.admin_conn)?;
        let a = archived(&mut admin)?;
        drop(admin);
        Ok(ArchiveFigures {
            server: server.id.clone(),
            last_archived_at: a.last_at.map(|us| us.div_euclid(1_000_000)),
            last_backup_at: backrest.backups()?.last().map(|b| b.stopped),
            lag_bytes: a
                .last_wal
                .as_deref()
                .and_then(|w| archive_lag_bytes(a.current_lsn, w, a.segment_size)),
            failures: a.failed_count,
        })
    }

    /// The pgBackRest of `server_id`: only the local server's archiving is set up by the tool.
    pub(crate) fn local_backrest(&self, server_id: &str) -> Result<(Layout, Backrest)> {
        let not_configured = || {
            Error::new(
                ErrorCode::ArchivingNotConfigured,
                format!("server {server_id} has no pgBackRest repository the tool knows: the local server's archiving is set up by `local up`"),
            )
        };
        let dir = self
            .data_dir
            .as_ref()
            .filter(|_| self.local && server_id == LOCAL_SERVER_ID);
        let layout = Layout::new(dir.ok_or_else(not_configured)?)?;
        let backrest = layout.backrest();
        if !backrest.configured() {
            return Err(not_configured());
        }
        Ok((layout, backrest))
    }

    /// `<data dir>/backups/<ws>-<UTC time>.backup`, in a directory only this user reads.
    fn kept_backup_path(&self, ws: &str, at: i64) -> Result<PathBuf> {
        let dir = self.home()?.join("backups");
        make_private_dir(&dir, 0o700)?;
        let stamp: String = format_utc(at)[..19]
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        Ok(dir.join(format!("{ws}-{stamp}.backup")))
    }
}

/// The workspace ids of a point-in-time restore.
fn validate_target(workspace: &str, into: &RestoreInto) -> Result<()> {
    validate_workspace_id(workspace)?;
    if let RestoreInto::Workspace(w2) = into {
        validate_workspace_id(w2)?;
        if w2 == workspace {
            return Err(invalid(
                "--into names the workspace itself: restore it in place with --in-place --yes",
            ));
        }
    }
    Ok(())
}

/// The window, in UTC text (empty before the first backup).
fn describe(sets: &[BackupSet], archived_to: i64) -> RecoveryWindow {
    match window(sets, archived_to) {
        Some(w) => RecoveryWindow {
            from: format_utc(w.from),
            to: format_utc(w.to),
        },
        None => RecoveryWindow {
            from: String::new(),
            to: format_utc(archived_to),
        },
    }
}

/// `--at`, read by the server (its calendar and time zone), as microseconds since the epoch.
fn read_time(admin: &mut Client, at: &str) -> Result<i64> {
    admin
        .query_one(
            "SELECT (EXTRACT(epoch FROM $1::text::timestamptz) * 1000000)::bigint",
            &[&at],
        )
        .map(|r| r.get(0))
        .map_err(|e| {
            let e = Error::from(e);
            if e.sqlstate().is_some_and(|s| s.starts_with("22")) {
                invalid(format!(
                    "--at {at:?} is not a time: {} (e.g. '2026-01-31 14:00:00+00')",
                    e.message
                ))
            } else {
                e
            }
        })
}

/// A directory of ours with `mode` (created if missing).
fn make_private_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
