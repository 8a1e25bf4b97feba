//! A workspace database through PostgreSQL's client programs: `pg_dump` archives, loaded
//! with `pg_restore` in two parts (the extension's data as the admin, everything else as the
//! tenant, through a login made for the load: see [`TenantLoader`]). Backup, restore and both
//! ways of moving use it; `counts.rs` verifies what they copied.

use crate::server::catalog::extension_version;

use crate::domain::limits::TENANT_LOAD_LIMIT;

use crate::base::connection::connect;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::WorkspaceNames;
use crate::domain::names::EXTENSION;
use crate::plan::quote::{quote_ident, quote_literal};

use crate::server::roles::{ensure_tool_login, remove_loader};
use postgres::Client;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment that points a PostgreSQL client program at a server as the admin: the
/// password goes in `PGPASSWORD`, never on a command line.
fn client_env(admin_conn: &str) -> Result<Vec<(&'static str, String)>> {
    let (cfg, tls) = crate::base::connection::parse(admin_conn)?;
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
    Ok(pg_program_with(name, client_env(admin_conn)?))
}

/// A client program with exactly this connection environment (none inherited).
fn pg_program_with(name: &str, env: Vec<(&'static str, String)>) -> Command {
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
    cmd.envs(env).arg("--no-password");
    cmd
}

/// A failed client program: its exit status and the end of its stderr.
fn program_failed(what: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    // pg_dump's --lock-wait-timeout, or the platform's lock timeout in a load: a lock held in
    // the workspace, not a broken archive.
    if text.contains("could not obtain lock") || text.contains("due to lock timeout") {
        return crate::domain::error::busy();
    }
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
        let name = format!("dl-tenancy-restore-{}", crate::base::secret::new_handle());
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

/// `pg_dump --format=custom` of `db` without the rows of `tables` (regclass text of the
/// extension's tables, which a stream copied): the tenant's objects and rows, and what it
/// made outside `tenant_custom` (default privileges, casts).
pub(crate) fn dump_without_data_of(
    admin_conn: &str,
    db: &str,
    tables: &[String],
    out: &mut std::fs::File,
) -> Result<()> {
    let args: Vec<String> = tables
        .iter()
        .map(|t| format!("--exclude-table-data={t}"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dump_with(admin_conn, db, &args, out)
}

fn dump_with(admin_conn: &str, db: &str, args: &[&str], out: &mut std::fs::File) -> Result<()> {
    let mut cmd = pg_program("pg_dump", admin_conn)?;
    // A tenant holding a lock on one of its tables makes the dump answer `busy`, not wait.
    let lock_wait = format!(
        "--lock-wait-timeout={}",
        crate::domain::limits::PLATFORM_LOCK_TIMEOUT_MS
    );
    cmd.args(["--format=custom", &lock_wait, "--dbname", db])
        .args(args);
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
    names: &WorkspaceNames,
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
    if let Err(e) = run_pg_restore(admin_conn, names, archive, tmp, &extension_tables) {
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
    Ok(extension_version(target)?.unwrap_or_default())
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

/// Whether a database holds anything of the tenant's to copy: objects in `tenant_custom`,
/// default privileges, casts.
pub(crate) fn has_tenant_state(db: &mut Client) -> Result<bool> {
    Ok(has_tenant_objects(db)?
        || db
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_default_acl)
                     OR EXISTS (SELECT FROM pg_catalog.pg_cast WHERE oid >= 16384)",
                &[],
            )?
            .get::<_, bool>(0))
}

/// The extension at `version` in the (empty) workspace database `target` is in: what a
/// copy made at that version loads into.
pub(crate) fn install_version(target: &mut Client, version: &str) -> Result<()> {
    if extension_version(target)?.as_deref() != Some(version) {
        reinstall(target, version)?;
    }
    Ok(())
}

/// The extension dropped and made again at `version` (its tables empty, as installed).
pub(crate) fn reinstall(target: &mut Client, version: &str) -> Result<()> {
    target.batch_execute(&format!(
        "DROP EXTENSION {ext} CASCADE; CREATE EXTENSION {ext} VERSION {}",
        quote_literal(version),
        ext = quote_ident(EXTENSION)
    ))?;
    Ok(())
}

/// Load an archive without the extension's rows ([`dump_without_data_of`]) into the
/// workspace's database, all of it as the tenant (see [`run_pg_restore`]).
pub(crate) fn load_tenant_objects(
    admin_conn: &str,
    names: &WorkspaceNames,
    archive: &Path,
    tmp: &Path,
) -> Result<()> {
    run_pg_restore(admin_conn, names, archive, tmp, &[])
}

/// A login made for loading one workspace's tenant part, named `<database>_load`: the powers
/// of the workspace's override login (members of the workspace role and `dl_tenant_override`)
/// and a random password, dropped after the load.
///
/// `pg_restore` logs in as it rather than as the admin with `--role`: behind `SET ROLE`, the
/// tenant's code that a load runs (CHECK constraints, generated columns, domains) could
/// `RESET ROLE` back to a superuser session user.
pub(crate) struct TenantLoader {
    admin_conn: String,
    db: String,
    role: String,
    password: String,
}

impl TenantLoader {
    pub(crate) fn create(admin_conn: &str, names: &WorkspaceNames) -> Result<TenantLoader> {
        let role = names.loader();
        let password = crate::base::secret::random_password();
        let mut admin = connect(admin_conn, None)?;
        ensure_tool_login(
            &mut admin,
            &role,
            "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 2",
            &password,
        )?;
        admin.batch_execute(&format!(
            "GRANT {}, dl_tenant_override TO {q}; GRANT CONNECT ON DATABASE {} TO {q}",
            quote_ident(&names.workspace_role()),
            quote_ident(&names.database()),
            q = quote_ident(&role),
        ))?;
        Ok(TenantLoader {
            admin_conn: admin_conn.into(),
            db: names.database(),
            role,
            password,
        })
    }

    /// A client program connecting as this login (the admin's host, port and TLS).
    fn program(&self, name: &str) -> Result<Command> {
        let mut env: Vec<(&'static str, String)> = client_env(&self.admin_conn)?
            .into_iter()
            .filter(|(k, _)| *k != "PGUSER" && *k != "PGPASSWORD")
            .collect();
        env.push(("PGUSER", self.role.clone()));
        env.push(("PGPASSWORD", self.password.clone()));
        Ok(pg_program_with(name, env))
    }

    /// A session as this login on the workspace database (the admin's host, port and TLS),
    /// with the platform's lock and statement timeouts: the tenant's code may run in it.
    pub(crate) fn connect(&self) -> Result<Client> {
        let (mut cfg, tls) = crate::base::connection::client_config(&self.admin_conn)?;
        cfg.user(&self.role)
            .password(&self.password)
            .dbname(&self.db)
            .application_name("dl-tenancy")
            .connect_timeout(std::time::Duration::from_secs(10))
            .options(&format!(
                "-c lock_timeout={} -c statement_timeout={}",
                crate::domain::limits::PLATFORM_LOCK_TIMEOUT_MS,
                crate::domain::limits::PLATFORM_STATEMENT_TIMEOUT_MS
            ));
        Ok(cfg.connect(tls)?)
    }

    /// The login and its sessions gone.
    pub(crate) fn remove(&self) -> Result<()> {
        let mut admin = connect(&self.admin_conn, None)?;
        remove_loader(&self.admin_conn, &mut admin, &self.role)
    }
}

/// Run a program to its end, or kill it at `limit`.
pub(crate) fn output_within(
    mut cmd: Command,
    limit: std::time::Duration,
) -> Result<std::process::Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let readers = (
        std::thread::spawn(move || {
            let mut buf = vec![];
            let _ = out.read_to_end(&mut buf);
            buf
        }),
        std::thread::spawn(move || {
            let mut buf = vec![];
            let _ = err.read_to_end(&mut buf);
            buf
        }),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                ErrorCode::DatabaseError,
                format!("stopped after {limit:?}"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: readers.0.join().unwrap_or_default(),
        stderr: readers.1.join().unwrap_or_default(),
    })
}

/// `pg_restore` of the archive into `db`, without the extension's own entry (the database
/// has the extension at the archive's version already), in two transactions:
///
/// 1. the rows of the extension's data tables (`extension_tables`: "schema table"), as the
///    admin: nobody else may write them all, and only the extension's own constraints and
///    triggers (trusted code) run on them;
/// 2. everything else, the tenant's `tenant_custom` objects and their rows, as
///    `dl_tenant_override` in a session of the workspace's [`TenantLoader`]: the tenant's own
///    code that loading runs (CHECK constraints, generated columns, domains calling its
///    functions) runs with the tenant's privileges, never the admin's, and for at most
///    [`TENANT_LOAD_LIMIT`].
fn run_pg_restore(
    admin_conn: &str,
    names: &WorkspaceNames,
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
    let db = names.database();
    let restore = |name: &str, list: &str, mut cmd: Command| -> Result<std::process::Output> {
        let path = tmp.join(format!("{}.list", name.replace(' ', "_")));
        std::fs::write(&path, list)?;
        cmd.args(["--single-transaction", "--exit-on-error", "--dbname", &db]);
        cmd.arg("--use-list").arg(&path).arg(archive);
        Ok(cmd)
            .and_then(|cmd| output_within(cmd, TENANT_LOAD_LIMIT))
            .map_err(|e| e.with_context(&format!("pg_restore ({name})")))
    };
    let succeeded = |name: &str, out: std::process::Output| {
        if out.status.success() {
            Ok(())
        } else {
            Err(program_failed(
                &format!("pg_restore ({name})"),
                out.status,
                &out.stderr,
            ))
        }
    };
    if !platform.is_empty() {
        let cmd = pg_program("pg_restore", admin_conn)?;
        succeeded("extension data", restore("extension data", &platform, cmd)?)?;
    }
    if !tenant.is_empty() {
        let loader = TenantLoader::create(admin_conn, names)?;
        let out = loader.program("pg_restore").and_then(|mut cmd| {
            cmd.arg("--role=dl_tenant_override");
            restore("tenant objects", &tenant, cmd)
        });
        let removed = loader.remove();
        succeeded("tenant objects", out?)?;
        removed?;
    }
    Ok(())
}
