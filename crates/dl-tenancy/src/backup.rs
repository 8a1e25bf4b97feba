//! Per-workspace backup and restore: one file holding a small manifest and a `pg_dump`
//! custom-format archive of the workspace database (the extension's data tables, which it
//! registers with `pg_extension_config_dump`, the override history among them; `tenant_custom`
//! objects with their grants). No credentials, no secrets.
//!
//! File layout: the line `dl-tenancy-backup 1`, the manifest as one line of JSON, then the
//! archive's bytes (`tail -n +3 FILE | pg_restore -l` lists it).

use crate::connection::connect;
use crate::error::{invalid, Error, ErrorCode, Result};
use crate::names::{quote_ident, quote_literal, validate_workspace_id, WorkspaceNames};
use crate::servers::EXTENSION;
use crate::suspension::record_event;
use crate::workspaces::with_workspace_lock;
use crate::Tenancy;
use postgres::Client;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// The tables of `tenant_custom` (a macro: [`COUNTED_TABLES`] is built on it).
macro_rules! tenant_tables {
    () => {
        "SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
          WHERE c.relnamespace = 'tenant_custom'::regnamespace AND c.relkind IN ('r', 'p')"
    };
}

/// Rows per table: the extension's data tables and the tables of `tenant_custom`.
const COUNTED_TABLES: &str = concat!(
    "SELECT c.oid::regclass::text FROM pg_catalog.pg_extension AS e
      CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS t(oid)
       JOIN pg_catalog.pg_class AS c ON c.oid = t.oid
      WHERE e.extname = 'dl_tenancy'
     UNION ",
    tenant_tables!(),
    " ORDER BY 1"
);

pub(crate) fn count_rows(db: &mut impl postgres::GenericClient) -> Result<BTreeMap<String, i64>> {
    db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
    let tables: Vec<String> = db
        .query(COUNTED_TABLES, &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    count_each(db, &tables)
}

/// Rows per table of `tenant_custom`.
pub(crate) fn count_tenant_rows(db: &mut Client) -> Result<BTreeMap<String, i64>> {
    db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
    let tables: Vec<String> = db
        .query(tenant_tables!(), &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    count_each(db, &tables)
}

/// Rows of each table, named as `regclass` text prints them with the search path
/// `pg_catalog, pg_temp` (quoted and qualified).
pub(crate) fn count_each(
    db: &mut impl postgres::GenericClient,
    tables: &[String],
) -> Result<BTreeMap<String, i64>> {
    db.batch_execute("SET search_path = pg_catalog, pg_temp")?;
    let mut rows = BTreeMap::new();
    for t in tables {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])?
            .get(0);
        rows.insert(t.clone(), n);
    }
    Ok(rows)
}

/// The environment that points a PostgreSQL client program at a server as the admin: the
/// password goes in `PGPASSWORD`, never on a command line.
fn client_env(admin_conn: &str) -> Result<Vec<(&'static str, String)>> {
    let (cfg, tls) = crate::connection::parse(admin_conn)?;
    let mut env = vec![
        ("PGAPPNAME", "dl-tenancy".to_string()),
        ("PGSSLMODE", tls.sslmode.as_str().to_string()),
    ];
    if let Some(root) = tls.sslrootcert {
        env.push(("PGSSLROOTCERT", root));
    }
    match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => env.push(("PGHOST", h.clone())),
        Some(postgres::config::Host::Unix(p)) => env.push(("PGHOST", p.display().to_string())),
        None => {}
    }
    if let Some(p) = cfg.get_ports().first() {
        env.push(("PGPORT", p.to_string()));
    }
    if let Some(u) = cfg.get_user() {
        env.push(("PGUSER", u.to_string()));
    }
    if let Some(pw) = cfg.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(pw).into_owned()));
    }
    Ok(env)
}

fn pg_program(name: &str, admin_conn: &str) -> Result<Command> {
    let mut cmd = Command::new(pg_harness::pg_bin_dir().join(name));
    for var in [
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGSSLROOTCERT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(client_env(admin_conn)?).arg("--no-password");
    Ok(cmd)
}

/// A failed client program: its exit status and the end of its stderr.
fn program_failed(what: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
    Error::new(
        ErrorCode::DatabaseError,
        format!("{what} failed ({status}): {tail}"),
    )
}

/// "0.10.2" > "0.4.0": compared number by number.
pub(crate) fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// A private temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!("dl-tenancy-restore-{}", crate::names::new_handle());
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
        crate::control::apply_schema(&mut ctl)?;
        let row = ctl
            .query_opt(
                "SELECT server_id, database_name FROM workspaces
                  WHERE id = $1 AND state IN ('active', 'suspended')",
                &[&workspace],
            )?
            .ok_or_else(|| crate::workspaces::not_provisioned(workspace))?;
        let server = self.load_server(&mut ctl, row.get(0))?;
        let names = WorkspaceNames::recorded(workspace, row.get(1))?;
        let db = names.database();

        // One snapshot for the counts and the dump.
        let mut source = connect(&server.admin_conn, Some(&db))?;
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
        let manifest = Manifest {
            format: 1,
            workspace: workspace.into(),
            database: db.clone(),
            server_id: server.id.clone(),
            extension_version: facts.get::<_, Option<String>>(1).ok_or_else(|| {
                Error::new(
                    ErrorCode::NotProvisioned,
                    format!("database {db} has no {EXTENSION} extension"),
                )
            })?,
            server_version: facts.get(2),
            created_at: facts.get(3),
            rows: count_rows(&mut tx)?,
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
            dump_archive(&server.admin_conn, &db, Some(&snapshot), &mut file)?;
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
        record_event(
            &mut ctl,
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
        crate::control::apply_schema(&mut ctl)?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            self.restore_locked(ctl, workspace, &manifest, &archive, &tmp.0)
        })
    }

    fn restore_locked(
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
        let before = count_rows(&mut target)?;
        let filled: Vec<&String> = before
            .iter()
            .filter(|(t, n)| **n > 0 && t.as_str() != "dl_meta.schema_migrations")
            .map(|(t, _)| t)
            .collect();
        if !filled.is_empty() || has_tenant_objects(&mut target)? {
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
            &db,
            &manifest.extension_version,
            archive,
            tmp,
        )?;
        self.disown_source_roles(&mut target, manifest, &names)?;
        let rows = count_rows(&mut target)?;
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

    /// Objects the source's own roles owned go to the group role (as `provision` intends for
    /// everything in `tenant_custom`), and privileges granted to them are dropped: a restore
    /// on the source's server must not give the source's logins anything here.
    fn disown_source_roles(
        &self,
        target: &mut Client,
        manifest: &Manifest,
        names: &WorkspaceNames,
    ) -> Result<()> {
        let source = WorkspaceNames::recorded(&manifest.workspace, &manifest.database)?;
        let ours = names.all_roles();
        for role in source.all_roles() {
            if crate::servers::role_exists(target, &role)? && !ours.contains(&role) {
                target.batch_execute(&format!(
                    "REASSIGN OWNED BY {r} TO dl_tenant_override; DROP OWNED BY {r}",
                    r = quote_ident(&role)
                ))?;
            }
        }
        Ok(())
    }
}

/// `pg_dump --format=custom` of `db` appended to `out` (in `snapshot`, when given).
pub(crate) fn dump_archive(
    admin_conn: &str,
    db: &str,
    snapshot: Option<&str>,
    out: &mut std::fs::File,
) -> Result<()> {
    match snapshot {
        Some(s) => dump_with(admin_conn, db, &["--snapshot", s], out),
        None => dump_with(admin_conn, db, &[], out),
    }
}

/// `pg_dump --format=custom` of the tenant's `tenant_custom` (objects and rows) only.
pub(crate) fn dump_tenant_objects(
    admin_conn: &str,
    db: &str,
    out: &mut std::fs::File,
) -> Result<()> {
    dump_with(admin_conn, db, &["--schema", "tenant_custom"], out)
}

fn dump_with(admin_conn: &str, db: &str, args: &[&str], out: &mut std::fs::File) -> Result<()> {
    let mut cmd = pg_program("pg_dump", admin_conn)?;
    cmd.args(["--format=custom", "--dbname", db]).args(args);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut buf = vec![];
        let _ = err.read_to_end(&mut buf);
        buf
    });
    std::io::copy(&mut stdout, out)?;
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(program_failed("pg_dump", status, &stderr));
    }
    Ok(())
}

/// Load an archive dumped at `from_version` into the empty database `db` (on `target`, a
/// superuser session in it): the extension at that version, the archive in one transaction,
/// the history rows the load replayed removed, then `ALTER EXTENSION UPDATE`. Returns the
/// extension version it ends at. Nothing of the archive stays when it fails.
pub(crate) fn load_archive(
    target: &mut Client,
    admin_conn: &str,
    db: &str,
    from_version: &str,
    archive: &Path,
    tmp: &Path,
) -> Result<String> {
    install_version(target, from_version)?;
    let started: String = target
        .query_one("SELECT pg_catalog.clock_timestamp()::text", &[])?
        .get(0);
    let extension_tables: Vec<String> = target
        .query(
            "SELECT n.nspname || ' ' || c.relname FROM pg_catalog.pg_extension AS e
              CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS t(oid)
               JOIN pg_catalog.pg_class AS c ON c.oid = t.oid
               JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
              WHERE e.extname = $1",
            &[&EXTENSION],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Err(e) = run_pg_restore(admin_conn, db, archive, tmp, &extension_tables) {
        // Back to an empty database at the server's version (the extension's data may have
        // loaded before the tenant's objects failed).
        let _ = target.batch_execute(&format!(
            "DROP EXTENSION IF EXISTS {ext} CASCADE; CREATE EXTENSION {ext}",
            ext = quote_ident(EXTENSION)
        ));
        return Err(e);
    } // Loading the overrides recorded each once more in the history (the trigger); the
      // dumped history is the truth.
    let replayed = target.query(
        "SELECT c.oid::regclass::text FROM pg_catalog.pg_class AS c
          WHERE c.relnamespace = 'dl_override'::regnamespace
            AND c.relname IN ('person_override_history', 'company_override_history')",
        &[],
    )?;
    for r in replayed {
        let table: String = r.get(0);
        target.execute(
            &format!(
                "DELETE FROM {table} WHERE changed_at >= $1::text::timestamptz AND changed_by = SESSION_USER"
            ),
            &[&started],
        )?;
    }
    target.batch_execute(&format!(
        "ALTER EXTENSION {} UPDATE",
        quote_ident(EXTENSION)
    ))?;
    Ok(target
        .query_one(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .get(0))
}

/// Whether the tenant made anything in `tenant_custom` (an object of any kind: each one
/// depends on its schema).
pub(crate) fn has_tenant_objects(db: &mut Client) -> Result<bool> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_depend
                             WHERE refclassid = 'pg_catalog.pg_namespace'::regclass
                               AND refobjid = 'tenant_custom'::regnamespace)",
            &[],
        )?
        .get(0))
}

/// The extension at `version` in the (empty) workspace database `target` is in: what a
/// copy made at that version loads into.
pub(crate) fn install_version(target: &mut Client, version: &str) -> Result<()> {
    let installed: String = target
        .query_one(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&EXTENSION],
        )?
        .get(0);
    if installed != version {
        target.batch_execute(&format!(
            "DROP EXTENSION {ext} CASCADE; CREATE EXTENSION {ext} VERSION {}",
            quote_literal(version),
            ext = quote_ident(EXTENSION)
        ))?;
    }
    Ok(())
}

/// Load an archive of `tenant_custom` only ([`dump_tenant_objects`]) into `db` as the
/// tenant (see [`run_pg_restore`]).
pub(crate) fn load_tenant_objects(
    admin_conn: &str,
    db: &str,
    archive: &Path,
    tmp: &Path,
) -> Result<()> {
    run_pg_restore(admin_conn, db, archive, tmp, &[])
}

/// Split a backup file: the manifest, and the archive written to `tmp`.
fn read_backup(from: &Path, tmp: &Path) -> Result<(Manifest, PathBuf)> {
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

/// `pg_restore` of the archive into `db`, without the extension's own entry (the database
/// has the extension at the archive's version already), in two transactions:
///
/// 1. the rows of the extension's data tables (`extension_tables`: "schema table"), as the
///    admin: nobody else may write them all, and only the extension's own constraints and
///    triggers (trusted code) run on them;
/// 2. everything else, the tenant's `tenant_custom` objects and their rows, as
///    `dl_tenant_override` (`--role`): the tenant's own code that loading runs (CHECK
///    constraints, generated columns, domains calling its functions) runs with the tenant's
///    privileges, never the admin's.
fn run_pg_restore(
    admin_conn: &str,
    db: &str,
    archive: &Path,
    tmp: &Path,
    extension_tables: &[String],
) -> Result<()> {
    let listed = pg_program("pg_restore", admin_conn)?
        .arg("--list")
        .arg(archive)
        .output()?;
    if !listed.status.success() {
        return Err(program_failed(
            "pg_restore --list",
            listed.status,
            &listed.stderr,
        ));
    }
    let (mut platform, mut tenant) = (String::new(), String::new());
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        // "<id>; <catalog oid> <oid> <description>": only the extension itself (and its
        // comment) has a description starting so; no tenant object can.
        let what = line.splitn(4, ' ').nth(3).unwrap_or("");
        if line.starts_with(';')
            || what.starts_with("EXTENSION - ")
            || what.starts_with("COMMENT - EXTENSION ")
        {
            continue;
        }
        // "TABLE DATA <schema> <table> <owner>": tenants cannot create in the extension's
        // schemas, so a match names one of its tables.
        let data_of = what.strip_prefix("TABLE DATA ").map(|rest| {
            let mut parts = rest.split(' ');
            format!(
                "{} {}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            )
        });
        let into = match data_of {
            Some(table) if extension_tables.contains(&table) => &mut platform,
            _ => &mut tenant,
        };
        into.push_str(line);
        into.push('\n');
    }
    for (name, list, role) in [
        ("extension data", platform, None),
        ("tenant objects", tenant, Some("dl_tenant_override")),
    ] {
        if list.is_empty() {
            continue;
        }
        let path = tmp.join(format!("{}.list", name.replace(' ', "_")));
        std::fs::write(&path, list)?;
        let mut cmd = pg_program("pg_restore", admin_conn)?;
        cmd.args(["--single-transaction", "--exit-on-error", "--dbname", db]);
        if let Some(role) = role {
            cmd.arg(format!("--role={role}"));
        }
        let out = cmd.arg("--use-list").arg(&path).arg(archive).output()?;
        if !out.status.success() {
            return Err(program_failed(
                &format!("pg_restore ({name})"),
                out.status,
                &out.stderr,
            ));
        }
    }
    Ok(())
}

/// Every table of the backup has as many rows after the restore (the migrations log may
/// have more: the update appends to it).
pub(crate) fn verify_rows(
    expected: &BTreeMap<String, i64>,
    got: &BTreeMap<String, i64>,
) -> Result<()> {
    for (table, n) in expected {
        let have = got.get(table).copied().unwrap_or(-1);
        let ok = if table == "dl_meta.schema_migrations" {
            have >= *n
        } else {
            have == *n
        };
        if !ok {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("restore verification failed: {table} has {have} rows, the backup {n}"),
            ));
        }
    }
    Ok(())
}
