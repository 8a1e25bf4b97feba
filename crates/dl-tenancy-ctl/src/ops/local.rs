use crate::domain::limits::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_RETENTION_FULL, MAX_MAX_CONNECTIONS, MAX_RETENTION_FULL,
    MIN_MAX_CONNECTIONS, RECOVERY_LIMIT,
};
use crate::server::backrest::{check_backrest, BackupKind, RestoreRequest};

use crate::base::connection::connect;
use crate::base::secret::SecretKey;
use crate::control;
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::names::EXTENSION;
use crate::domain::types::ServerSpec;
use crate::ops::Tenancy;
use crate::plan::quote::quote_ident;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn up(opts: &LocalOptions) -> Result<LocalStatus> {
    let layout = Layout::new(&opts.data_dir)?;
    let dir = &layout.dir;
    fs::create_dir_all(dir)?;
    // The server user must be able to traverse to pg/, run/, pgbouncer/.
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o001 == 0 && pg_harness::server_os_user().is_some() {
        fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o711))?;
    }
    check_reachable(dir)?;
    check_pooler_version()?;
    SecretKey::load(dir, true)?;

    let mut state = match LocalState::read(dir) {
        Ok(s) => s,
        Err(_) => {
            let pg_port = pick_port(opts.pg_port, DEFAULT_PG_PORT, &[]);
            let pooler_port = pick_port(opts.pooler_port, DEFAULT_POOLER_PORT, &[pg_port]);
            LocalState {
                pg_port,
                pooler_port,
                direct_port: None,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                retention_full: DEFAULT_RETENTION_FULL,
            }
        }
    };
    if let Some(p) = opts.pg_port {
        state.pg_port = p;
    }
    if let Some(p) = opts.pooler_port {
        state.pooler_port = p;
    }
    if opts.direct_port.is_some() || state.direct_port.is_none() {
        state.direct_port = Some(pick_port(
            opts.direct_port,
            DEFAULT_DIRECT_PORT,
            &[state.pg_port, state.pooler_port],
        ));
    }
    if let Some(n) = opts.max_connections {
        if !(MIN_MAX_CONNECTIONS..=MAX_MAX_CONNECTIONS).contains(&n) {
            return Err(crate::domain::error::invalid(format!(
                "--max-connections must be between {MIN_MAX_CONNECTIONS} and {MAX_MAX_CONNECTIONS}"
            )));
        }
        state.max_connections = n;
    }
    if let Some(n) = opts.retention_full {
        if !(1..=MAX_RETENTION_FULL).contains(&n) {
            return Err(crate::domain::error::invalid(format!(
                "--backup-retention-full must be between 1 and {MAX_RETENTION_FULL}"
            )));
        }
        state.retention_full = n;
    }
    let direct_port = state.direct_port.unwrap_or(DEFAULT_DIRECT_PORT);
    if state.pg_port == state.pooler_port
        || direct_port == state.pg_port
        || direct_port == state.pooler_port
    {
        return Err(crate::domain::error::invalid(
            "the PostgreSQL, PgBouncer and direct front ports must differ",
        ));
    }
    state.write(dir)?;

    for sub in ["run", "log"] {
        pg_harness::make_server_dir(&dir.join(sub), 0o755)?;
    }
    // Kept when valid; a new certificate reaches running servers by the reloads below.
    crate::base::certs::ensure(&dir.join("tls"), CERT_NAMES)?;
    // pgBackRest's configuration first: the server's archive_command names it.
    let backrest = layout.backrest();
    check_backrest()?;
    backrest.write_config(&layout.pg_side(&state), state.retention_full)?;
    let spec = layout.cluster(&state);
    let admin_conn = state.admin_conn_string(dir, "postgres");
    if !spec.data_dir.join("PG_VERSION").exists() && !backrest.backups()?.is_empty() {
        // A new cluster beside a repository of the old one would be a different server.
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} holds no cluster but the repository has backups of it: run `dl-tenancy local recover` to rebuild it from them",
                spec.data_dir.display()
            ),
        ));
    }
    pg_harness::init_cluster(&spec)?;
    if pg_harness::cluster_running(&spec.data_dir) {
        // Running already: refresh hba/ident and settings (the tool owns them) and reload;
        // a cluster of a version before continuous archiving restarts once to turn it on.
        pg_harness::write_cluster_config(&spec)?;
        pg_harness::reload_cluster(&spec.data_dir)?;
        let archiving: String = connect(&admin_conn, None)?
            .query_one("SELECT pg_catalog.current_setting('archive_mode')", &[])?
            .get(0);
        if archiving != "on" {
            pg_harness::stop_cluster(&spec.data_dir)?;
            pg_harness::start_cluster(&spec)?;
        }
    } else {
        pg_harness::start_cluster(&spec)?;
    }

    control::ensure_control_db(&admin_conn)?;

    let tenancy = Tenancy::from_parts(admin_conn.clone(), SecretKey::load(dir, false)?);
    {
        let mut ctl = tenancy.control()?;
        tenancy.upsert_server(
            &mut ctl,
            &ServerSpec {
                name: LOCAL_SERVER_ID.into(),
                admin_url: admin_conn.clone(),
                host: Some("127.0.0.1".into()),
                // Tenants' direct URIs lead to the front; PostgreSQL's port is the platform's.
                port: Some(direct_port),
                platform_port: Some(state.pg_port),
                pooler_host: Some("127.0.0.1".into()),
                pooler_port: Some(state.pooler_port),
                ca_file: Some(layout.certs().ca_cert),
            },
            true,
        )?;
    }
    // The template creates the extension's cluster-wide group roles.
    tenancy.prepare_server(LOCAL_SERVER_ID)?;

    let mut admin = connect(&admin_conn, None)?;
    let q = quote_ident(POOLER_AUTH_USER);
    if !crate::server::catalog::role_exists(&mut admin, POOLER_AUTH_USER)? {
        admin.batch_execute(&format!("CREATE ROLE {q} LOGIN"))?;
    }
    // The pooler's auth role connects to the lookup database only (AUTH_DBNAME; before 0.5.0
    // it also had the platform databases).
    admin.batch_execute(&format!(
        "ALTER ROLE {q} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD NULL;
         GRANT dl_pooler_auth TO {q};
         REVOKE CONNECT ON DATABASE {} FROM dl_pooler_auth",
        quote_ident(control::CONTROL_DB)
    ))?;
    drop(admin);

    let bouncer = layout.pgbouncer(&state);
    tenancy.write_local_routes(dir)?;
    for bouncer in [bouncer, layout.direct_front(&state)] {
        if !pg_harness::start_pgbouncer(&bouncer)? {
            // Running already: the ini just written (TLS files included) takes effect.
            pg_harness::reload_pgbouncer(&bouncer)?;
        }
    }
    // The stanza, and a first full backup: from its end on, any time can be recovered.
    backrest.stanza_create()?;
    if backrest.backups()?.is_empty() {
        backrest.backup(BackupKind::Full)?;
    }
    status(&opts.data_dir)
}

/// `local recover`: rebuild a lost local server from its pgBackRest repository, to the last
/// WAL it holds, then bring everything up as `local up` does. Refused while a cluster runs
/// or its data directory still holds one (move it away first).
pub fn recover(opts: &LocalOptions) -> Result<LocalStatus> {
    let layout = Layout::new(&opts.data_dir)?;
    let state = LocalState::read(&layout.dir)?;
    let spec = layout.cluster(&state);
    if pg_harness::cluster_running(&spec.data_dir) {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "PostgreSQL runs on {}: `local recover` rebuilds a lost server; stop it (`local down`) and move its data directory away first",
                spec.data_dir.display()
            ),
        ));
    }
    if spec.data_dir.join("PG_VERSION").exists() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} still holds a cluster; move it away before recovering from the repository",
                spec.data_dir.display()
            ),
        ));
    }
    check_backrest()?;
    let backrest = layout.backrest();
    backrest.write_config(&layout.pg_side(&state), state.retention_full)?;
    if backrest.backups()?.is_empty() {
        return Err(Error::new(
            ErrorCode::ArchivingNotConfigured,
            "the repository holds no backup of this server to recover from",
        ));
    }
    pg_harness::make_server_dir(&spec.data_dir, 0o700)?;
    backrest.restore(&RestoreRequest {
        data_dir: &spec.data_dir,
        set: None,
        selection: None,
        target: None,
        archive: true,
    })?;
    // Replays every archived segment, then promotes (a new timeline, archived too).
    pg_harness::start_cluster_no_wait(&spec)?;
    crate::server::scratch::wait_promoted(&spec, RECOVERY_LIMIT)?;
    up(opts)
}

/// `local down`: stop PgBouncer and PostgreSQL (data stays).
pub fn down(data_dir: &Path) -> Result<LocalStatus> {
    let layout = Layout::new(data_dir)?;
    let state = LocalState::read(&layout.dir)?;
    pg_harness::stop_pgbouncer(&layout.direct_front(&state))?;
    pg_harness::stop_pgbouncer(&layout.pgbouncer(&state))?;
    pg_harness::stop_cluster(&layout.dir.join("pg"))?;
    status(data_dir)
}

/// `local status`: whether the servers run, their ports and logs.
pub fn status(data_dir: &Path) -> Result<LocalStatus> {
    let layout = Layout::new(data_dir)?;
    let state = LocalState::read(&layout.dir)?;
    let pg_running = pg_harness::cluster_running(&layout.dir.join("pg"));
    let bouncer = layout.pgbouncer(&state);
    let front = layout.direct_front(&state);
    let mut version = None;
    if pg_running {
        if let Ok(mut c) = connect(&state.admin_conn_string(&layout.dir, "postgres"), None) {
            version = c
                .query_opt(
                    "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                    &[&EXTENSION],
                )
                .ok()
                .flatten()
                .and_then(|r| r.get(0));
        }
    }
    Ok(LocalStatus {
        data_dir: layout.dir.display().to_string(),
        postgres: LocalServerStatus {
            host: "127.0.0.1".into(),
            port: state.pg_port,
            running: pg_running,
            log: layout.dir.join("log/postgresql.log").display().to_string(),
        },
        pooler: LocalServerStatus {
            host: "127.0.0.1".into(),
            port: state.pooler_port,
            running: pg_harness::pgbouncer_running(&bouncer),
            log: bouncer.log_path().display().to_string(),
        },
        direct: LocalServerStatus {
            host: "127.0.0.1".into(),
            port: front.listen_port,
            running: pg_harness::pgbouncer_running(&front),
            log: front.log_path().display().to_string(),
        },
        control_database: control::CONTROL_DB.into(),
        server_id: LOCAL_SERVER_ID.into(),
        extension_version: version,
        ca_file: layout.certs().ca_cert.display().to_string(),
    })
}
pub use crate::server::cluster::*;
