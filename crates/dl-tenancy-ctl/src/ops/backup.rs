//! Per-workspace backup and restore: one file holding a small manifest and a `pg_dump`
//! custom-format archive of the workspace database (the extension's data tables, which it
//! registers with `pg_extension_config_dump`, the override history among them; `tenant_custom`
//! objects with their grants). No credentials, no secrets.
//!
//! File layout: the line `dl-tenancy-backup 1`, the manifest as one line of JSON, then the
//! archive's bytes (`tail -n +3 FILE | pg_restore -l` lists it).

use crate::base::connection::connect;
use crate::control::lock::with_workspace_lock;
use crate::control::records::record_event;
use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::names::{validate_workspace_id, WorkspaceNames};
use crate::ops::Tenancy;
use crate::server::archive::{
    dump_archive, has_tenant_objects, load_archive, version_key, TempDir,
};
use crate::server::counts::{count_all_rows, count_extension_rows, count_tenant_rows, verify_rows};
use postgres::Client;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// First line of a backup file.
pub const BACKUP_MAGIC: &str = "dl-tenancy-backup 1";

/// What a backup holds besides the archive. Row counts are taken in the very snapshot
/// `pg_dump` dumps (an exported snapshot), so a restore can verify them exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub workspace: String,
    /// The source database (its opaque name also names its roles).
    pub database: String,
    pub server_id: String,
    pub extension_version: String,
    pub server_version: String,
    pub created_at: String,
    /// Rows per table: the extension's data tables and every table in `tenant_custom`.
    pub rows: BTreeMap<String, i64>,
}

/// `backup`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackupReport {
    pub workspace: String,
    pub file: String,
    pub bytes: u64,
    pub manifest: Manifest,
}

/// `restore`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    pub workspace: String,
    pub database: String,
    pub from_workspace: String,
    pub from_extension_version: String,
    /// After `ALTER EXTENSION ... UPDATE` when the backup was older.
    pub extension_version: String,
    /// Rows per table after the restore, each checked against the manifest.
    pub rows: BTreeMap<String, i64>,
}

impl Tenancy {
    /// `backup --workspace W --to FILE`: an active or suspended workspace into a new file
    /// (written beside it and renamed into place when complete; mode 0600).
    pub fn backup(&self, workspace: &str, to: &Path) -> Result<BackupReport> {
        validate_workspace_id(workspace)?;
        if to.exists() {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("{} exists; refusing to overwrite it", to.display()),
            ));
        }
        let mut ctl = self.control()?;
        // Under the workspace's lock: never in the middle of a move (a stream's publication
        // and grants in the database would make the backup impossible to restore).
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.backup_locked(ctl, workspace, to)
        })
    }

    pub(crate) fn backup_locked(
        &self,
        ctl: &mut Client,
        workspace: &str,
        to: &Path,
    ) -> Result<BackupReport> {
        let row = ctl
            .query_opt(
                "SELECT server_id, database_name FROM workspaces
                  WHERE id = $1 AND state IN ('active', 'suspended')",
                &[&workspace],
            )?
            .ok_or_else(|| crate::domain::error::not_provisioned(workspace))?;
        let server = self.load_server(ctl, row.get(0))?;
        let names = WorkspaceNames::recorded(workspace, row.get(1))?;
        let (bytes, manifest) = self.write_backup(&server.admin_conn, &server.id, &names, to)?;
        record_event(
            ctl,
            workspace,
            "backup",
            serde_json::json!({"file": to.display().to_string(), "bytes": bytes,
                               "extension_version": manifest.extension_version}),
        )?;
        Ok(BackupReport {
            workspace: workspace.into(),
            file: to.display().to_string(),
            bytes,
            manifest,
        })
    }

    /// The backup file of the workspace `names` on the server of `admin_conn` (its own, or a
    /// scratch copy of it: `pitr.rs`), written to `to`: its size and manifest.
    pub(crate) fn write_backup(
        &self,
        admin_conn: &str,
        server_id: &str,
        names: &WorkspaceNames,
        to: &Path,
    ) -> Result<(u64, Manifest)> {
        let workspace = names.workspace.as_str();
        let db = names.database();
        // One snapshot for the counts and the dump.
        let mut source = connect(admin_conn, Some(&db))?;
        let mut tx = source
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let facts = tx.query_one(
            "SELECT pg_catalog.pg_export_snapshot(),
                    (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1),
                    pg_catalog.current_setting('server_version'), pg_catalog.now()::text",
            &[&EXTENSION],
        )?;
        let snapshot: String = facts.get(0);
        // The extension's tables counted here, the tenant's in the same snapshot as the
        // tenant (archive::count_tenant_rows: counting plans the tenant's code).
        let mut rows = count_extension_rows(&mut tx)?;
        rows.extend(count_tenant_rows(
            &mut tx,
            admin_conn,
            names,
            Some(&snapshot),
        )?);
        let manifest = Manifest {
            format: 1,
            workspace: workspace.into(),
            database: db.clone(),
            server_id: server_id.to_string(),
            extension_version: facts.get::<_, Option<String>>(1).ok_or_else(|| {
                Error::new(
                    ErrorCode::NotProvisioned,
                    format!("database {db} has no {EXTENSION} extension"),
                )
            })?,
            server_version: facts.get(2),
            created_at: facts.get(3),
            rows,
        };

        self.progress.step(|| {
            let rows: i64 = manifest.rows.values().sum();
            format!(
                "{workspace}: dumping {rows} rows of {} tables (one snapshot)",
                manifest.rows.len()
            )
        });
        let partial = to.with_extension("partial");
        let written = (|| -> Result<u64> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)?;
            writeln!(file, "{BACKUP_MAGIC}")?;
            writeln!(
                file,
                "{}",
                serde_json::to_string(&manifest).expect("a manifest serializes")
            )?;
            dump_archive(admin_conn, &db, Some(&snapshot), &mut file)?;
            file.sync_all()?;
            Ok(file.metadata()?.len())
        })();
        tx.commit()?;
        let bytes = match written {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, to)?;
        self.progress
            .step(|| format!("{workspace}: wrote {} ({bytes} bytes)", to.display()));
        Ok((bytes, manifest))
    }

    /// `restore --from FILE --workspace W2`: into a new workspace (provisioned here, with
    /// fresh credentials) or an empty active one (it keeps its own). See [`Self::backup`].
    pub fn restore(&self, from: &Path, workspace: &str) -> Result<RestoreReport> {
        validate_workspace_id(workspace)?;
        let tmp = TempDir::new()?;
        let (manifest, archive) = read_backup(from, &tmp.0)?;
        let status = self.status(workspace)?;
        if status.status == "not_provisioned" && status.database.is_none() {
            self.provision(workspace)?;
        }
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.restore_locked(ctl, workspace, &manifest, &archive, &tmp.0)
        })
    }

    pub(crate) fn restore_locked(
        &self,
        ctl: &mut Client,
        ws: &str,
        manifest: &Manifest,
        archive: &Path,
        tmp: &Path,
    ) -> Result<RestoreReport> {
        let (names, server_id) = self.active_workspace(ctl, ws)?;
        let server = self.load_server(ctl, &server_id)?;
        let db = names.database();
        let mut target = connect(&server.admin_conn, Some(&db))?;
        // The catalog first: with no tenant object, only the extension's tables hold rows.
        let filled = has_tenant_objects(&mut target)?
            || count_extension_rows(&mut target)?
                .iter()
                .any(|(t, n)| *n > 0 && t.as_str() != "dl_meta.schema_migrations");
        if filled {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("workspace {ws} is not empty (it has data or tenant_custom objects); restore only into a new or empty workspace"),
            ));
        }
        let available: String = target
            .query_one(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?
            .get(0);
        if version_key(&manifest.extension_version) > version_key(&available) {
            return Err(Error::new(
                ErrorCode::ExtensionUnavailable,
                format!(
                    "the backup is of {EXTENSION} {}, newer than the {available} server {} has",
                    manifest.extension_version, server.id
                ),
            ));
        }
        // The archive's data fits the version it was dumped at: install that one, load, update.
        self.progress.step(|| {
            format!(
                "{ws}: loading the backup of {} ({EXTENSION} {})",
                manifest.workspace, manifest.extension_version
            )
        });
        let version = load_archive(
            &mut target,
            &server.admin_conn,
            &names,
            &manifest.extension_version,
            archive,
            tmp,
        )?;
        // Grants and owners naming the source's roles never landed: the extension's guard
        // skips them in a load session. The manifest names no database we act on.
        let rows = count_all_rows(&mut target, &server.admin_conn, &names)?;
        verify_rows(&manifest.rows, &rows)?;
        self.progress.step(|| {
            format!(
                "{ws}: {} tables verified, {EXTENSION} {version}",
                rows.len()
            )
        });
        ctl.execute(
            "UPDATE workspaces SET extension_version = $2, updated_at = now() WHERE id = $1",
            &[&ws, &version],
        )?;
        record_event(
            ctl,
            ws,
            "restore",
            serde_json::json!({"from_workspace": manifest.workspace,
                               "from_extension_version": manifest.extension_version,
                               "extension_version": version}),
        )?;
        Ok(RestoreReport {
            workspace: ws.into(),
            database: db,
            from_workspace: manifest.workspace.clone(),
            from_extension_version: manifest.extension_version.clone(),
            extension_version: version,
            rows,
        })
    }
}

/// Split a backup file: the manifest, and the archive written to `tmp`.
pub(crate) fn read_backup(from: &Path, tmp: &Path) -> Result<(Manifest, PathBuf)> {
    let bad = |why: &str| {
        invalid(format!(
            "{} is not a dl-tenancy backup: {why}",
            from.display()
        ))
    };
    let file = std::fs::File::open(from)
        .map_err(|e| invalid(format!("cannot open {}: {e}", from.display())))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != BACKUP_MAGIC {
        return Err(bad("no header"));
    }
    line.clear();
    reader.read_line(&mut line)?;
    let manifest: Manifest =
        serde_json::from_str(line.trim_end()).map_err(|e| bad(&format!("manifest: {e}")))?;
    if manifest.format != 1 {
        return Err(bad("unknown format"));
    }
    validate_workspace_id(&manifest.workspace)?;
    let archive = tmp.join("archive.dump");
    let mut out = std::fs::File::create(&archive)?;
    std::io::copy(&mut reader, &mut out)?;
    Ok((manifest, archive))
}
