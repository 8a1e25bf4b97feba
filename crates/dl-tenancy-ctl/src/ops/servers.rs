use crate::base::certs::check_ca_file;
use crate::domain::names::server_aad;

use crate::base::connection::connect;
use crate::control::lock::with_template_lock;
use crate::domain::error::invalid;
use crate::domain::error::Error;
use crate::domain::error::ErrorCode;
use crate::domain::error::Result;
use crate::domain::names::validate_server_name;
use crate::domain::names::EXTENSION;
use crate::domain::names::POOLER_LOOKUP_DB;
use crate::domain::names::TEMPLATE_DB;
use crate::domain::types::Endpoint;
use crate::domain::types::Server;
use crate::domain::types::ServerInfo;
use crate::domain::types::ServerList;
use crate::domain::types::ServerSpec;
use crate::ops::Tenancy;
use crate::plan::quote::quote_ident;
use crate::server::catalog::database_exists;
use postgres::Client;

impl Tenancy {
    pub(crate) fn load_server(&self, ctl: &mut Client, id: &str) -> Result<Server> {
        let row = ctl
            .query_opt(
                "SELECT admin_nonce, admin_ciphertext, host, port, pooler_host, pooler_port, template_version,
                        ca_file, coalesce(platform_port, port)
                   FROM servers WHERE id = $1",
                &[&id],
            )?
            .ok_or_else(|| {
                Error::new(ErrorCode::ServerNotFound, format!("no server named {id}"))
            })?;
        let admin_conn = self
            .key
            .decrypt_string(row.get(0), row.get(1), &server_aad(id))?;
        Ok(Server {
            id: id.to_string(),
            admin_conn,
            host: row.get(2),
            port: row.get::<_, i32>(3) as u16,
            platform_port: row.get::<_, i32>(8) as u16,
            pooler: endpoint(row.get(4), row.get(5)),
            template_version: row.get(6),
            ca_file: row.get(7),
        })
    }

    /// The active server with the fewest (not deleted) workspaces.
    pub(crate) fn place(&self, ctl: &mut Client) -> Result<String> {
        let row = ctl.query_opt(
            "SELECT s.id
               FROM servers AS s
               LEFT JOIN workspaces AS w ON w.server_id = s.id AND w.state <> 'deleted'
              WHERE s.active
              GROUP BY s.id, s.created_at
              ORDER BY count(w.id), s.created_at, s.id
              LIMIT 1",
            &[],
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| {
            Error::new(
                ErrorCode::NoServer,
                "no active server registered: run `dl-tenancy local up` or `dl-tenancy server add`",
            )
        })
    }

    pub(crate) fn register_primary_if_empty(&self, admin_url: &str) -> Result<()> {
        let mut ctl = self.control()?;
        let n: i64 = ctl.query_one("SELECT count(*) FROM servers", &[])?.get(0);
        if n == 0 {
            self.upsert_server(
                &mut ctl,
                &ServerSpec {
                    name: "primary".into(),
                    admin_url: admin_url.into(),
                    ..Default::default()
                },
                false,
            )?;
            drop(ctl);
            self.prepare_server("primary")?;
        }
        Ok(())
    }

    pub(crate) fn upsert_server(
        &self,
        ctl: &mut Client,
        spec: &ServerSpec,
        check: bool,
    ) -> Result<()> {
        validate_server_name(&spec.name)?;
        let (cfg, _) = crate::base::connection::parse(&spec.admin_url)
            .map_err(|e| invalid(format!("malformed admin URL: {}", e.message)))?;
        let ca_file = spec.ca_file.as_deref().map(check_ca_file).transpose()?;
        let (url_host, url_port) = match (cfg.get_hosts().first(), cfg.get_ports().first()) {
            (Some(postgres::config::Host::Tcp(h)), p) => (Some(h.clone()), p.copied()),
            (_, p) => (None, p.copied()),
        };
        let host = spec
            .host
            .clone()
            .or(url_host)
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = spec.port.or(url_port).unwrap_or(5432);
        let pooler_host = match (spec.pooler_host.clone(), spec.pooler_port) {
            (Some(h), _) => Some(h),
            (None, Some(_)) => Some(host.clone()),
            (None, None) => None,
        };
        if pooler_host.is_some() && spec.pooler_port.is_none() {
            return Err(invalid("--pooler-host needs --pooler-port"));
        }
        if check {
            let mut admin = connect(&spec.admin_url, None)?;
            let row = admin.query_opt(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?;
            if row.is_none() {
                return Err(Error::new(
                    ErrorCode::ExtensionUnavailable,
                    format!(
                        "the {EXTENSION} extension is not installed on server {}",
                        spec.name
                    ),
                ));
            }
        }
        let (nonce, ct) = self
            .key
            .encrypt(spec.admin_url.as_bytes(), &server_aad(&spec.name));
        ctl.execute(
            "INSERT INTO servers (id, admin_nonce, admin_ciphertext, host, port, pooler_host, pooler_port, ca_file,
                                  platform_port)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE
                SET admin_nonce = EXCLUDED.admin_nonce, admin_ciphertext = EXCLUDED.admin_ciphertext,
                    host = EXCLUDED.host, port = EXCLUDED.port, pooler_host = EXCLUDED.pooler_host,
                    pooler_port = EXCLUDED.pooler_port, ca_file = EXCLUDED.ca_file,
                    platform_port = EXCLUDED.platform_port, active = true,
                    updated_at = now()",
            &[
                &spec.name,
                &nonce,
                &ct,
                &host,
                &(port as i32),
                &pooler_host,
                &spec.pooler_port.map(|p| p as i32),
                &ca_file,
                &spec.platform_port.map(|p| p as i32),
            ],
        )?;
        Ok(())
    }

    /// `server add`: register (or update) a server; checks that it is reachable and has the
    /// extension installed.
    pub fn server_add(&self, spec: &ServerSpec) -> Result<ServerInfo> {
        validate_server_name(&spec.name)?;
        let mut ctl = self.control()?;
        self.upsert_server(&mut ctl, spec, true)?;
        drop(ctl);
        self.prepare_server(&spec.name)?;
        self.server_list()?
            .servers
            .into_iter()
            .find(|s| s.id == spec.name)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "server vanished"))
    }

    /// `server list`.
    pub fn server_list(&self) -> Result<ServerList> {
        let mut ctl = self.control()?;
        let rows = ctl.query(
            "SELECT s.id, s.host, s.port, s.pooler_host, s.pooler_port, s.active, s.template_version,
                    count(w.id) AS n
               FROM servers AS s
               LEFT JOIN workspaces AS w ON w.server_id = s.id AND w.state <> 'deleted'
              GROUP BY s.id ORDER BY s.created_at, s.id",
            &[],
        )?;
        Ok(ServerList {
            servers: rows
                .iter()
                .map(|r| ServerInfo {
                    id: r.get(0),
                    direct: Endpoint {
                        host: r.get(1),
                        port: r.get::<_, i32>(2) as u16,
                    },
                    pooled: endpoint(r.get(3), r.get(4)),
                    active: r.get(5),
                    template_version: r.get(6),
                    workspaces: r.get(7),
                })
                .collect(),
        })
    }

    /// Create (or recreate, when the installed extension version changed) the server's
    /// template database. Returns the template's extension version.
    pub fn ensure_server_template(&self, server_id: &str) -> Result<String> {
        let mut ctl = self.control()?;
        let server = self.load_server(&mut ctl, server_id)?;
        let mut admin = connect(&server.admin_conn, None)?;
        self.ensure_template(&mut ctl, &mut admin, &server)
    }

    /// Get a server ready for workspaces: the template database (creates the extension's
    /// group roles), the pooler's lookup database at the newest extension version, and no
    /// CONNECT for PUBLIC on `postgres`/`template1` (tenant logins must not get in there).
    /// Safe to run again; `local up`, `server add` and `upgrade` do.
    pub fn prepare_server(&self, server_id: &str) -> Result<String> {
        let version = self.ensure_server_template(server_id)?;
        let mut ctl = self.control()?;
        let server = self.load_server(&mut ctl, server_id)?;
        drop(ctl);
        let mut admin = connect(&server.admin_conn, None)?;
        admin.batch_execute(
            "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
             REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
             REVOKE CONNECT ON DATABASE postgres, template1 FROM dl_pooler_auth",
        )?;
        ensure_pooler_lookup_db(&mut admin, &server)?;
        Ok(version)
    }

    pub(crate) fn ensure_template(
        &self,
        ctl: &mut Client,
        admin: &mut Client,
        server: &Server,
    ) -> Result<String> {
        let installed: Option<String> = admin
            .query_opt(
                "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1",
                &[&EXTENSION],
            )?
            .and_then(|r| r.get(0));
        let Some(installed) = installed else {
            return Err(Error::new(
                ErrorCode::ExtensionUnavailable,
                format!(
                    "the {EXTENSION} extension is not installed on server {}",
                    server.id
                ),
            ));
        };
        if server.template_version.as_deref() == Some(installed.as_str())
            && database_exists(admin, TEMPLATE_DB)?
        {
            return Ok(installed);
        }
        with_template_lock(ctl, &server.id, |ctl| {
            let recorded: Option<String> = ctl
                .query_one(
                    "SELECT template_version FROM servers WHERE id = $1",
                    &[&server.id],
                )?
                .get(0);
            let t = quote_ident(TEMPLATE_DB);
            if database_exists(admin, TEMPLATE_DB)? {
                if recorded.as_deref() == Some(installed.as_str()) {
                    return Ok(()); // done by a concurrent call
                }
                admin.batch_execute(&format!("ALTER DATABASE {t} WITH IS_TEMPLATE false"))?;
                admin.batch_execute(&format!("DROP DATABASE {t} WITH (FORCE)"))?;
            }
            ctl.execute(
                "UPDATE servers SET template_version = NULL WHERE id = $1",
                &[&server.id],
            )?;
            admin.batch_execute(&format!("CREATE DATABASE {t} TEMPLATE template0"))?;
            admin.batch_execute(&format!("REVOKE ALL ON DATABASE {t} FROM PUBLIC"))?;
            {
                let mut tdb = connect(&server.admin_conn, Some(TEMPLATE_DB))?;
                tdb.batch_execute(&format!("CREATE EXTENSION {}", quote_ident(EXTENSION)))?;
            }
            admin.batch_execute(&format!(
                "ALTER DATABASE {t} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            ))?;
            ctl.execute(
                "UPDATE servers SET template_version = $2, updated_at = now() WHERE id = $1",
                &[&server.id, &installed],
            )?;
            Ok(())
        })
        .map(|()| installed)
    }
}

/// The server's [`POOLER_LOOKUP_DB`], created when missing, its extension updated.
fn ensure_pooler_lookup_db(admin: &mut Client, server: &Server) -> Result<()> {
    let db = quote_ident(POOLER_LOOKUP_DB);
    if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {db} TEMPLATE template0")) {
        // Made by a concurrent call, or before: fine.
        if e.code() != Some(&postgres::error::SqlState::DUPLICATE_DATABASE) {
            return Err(e.into());
        }
    }
    admin.batch_execute(&format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
         GRANT CONNECT ON DATABASE {db} TO dl_pooler_auth"
    ))?;
    let mut lookup = connect(&server.admin_conn, Some(POOLER_LOOKUP_DB))?;
    let ext = quote_ident(EXTENSION);
    lookup.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS {ext}; ALTER EXTENSION {ext} UPDATE"
    ))?;
    Ok(())
}

fn endpoint(host: Option<String>, port: Option<i32>) -> Option<Endpoint> {
    match (host, port) {
        (Some(host), Some(port)) => Some(Endpoint {
            host,
            port: port as u16,
        }),
        _ => None,
    }
}
