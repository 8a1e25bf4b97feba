//! Which pooler serves a workspace, and the local pooler's routes: a moved workspace keeps
//! its pooled URI, so its pooler can be another server's.

use crate::domain::types::PoolStats;

use crate::domain::error::Result;

use crate::domain::error::Error;
use crate::domain::error::ErrorCode;
use crate::domain::types::Server;
use crate::ops::Tenancy;
use crate::server::cluster::LOCAL_SERVER_ID;
use crate::server::pooler::write_routes;
use crate::server::pooler::write_server_tls;
use crate::server::pooler::Console;
use crate::server::pooler::Route;
use postgres::Client;
use std::path::Path;

impl Tenancy {
    /// Rewrite the local pooler's routes from the control database (every workspace it
    /// serves that lives on another server). `local up` calls it before the pooler starts.
    pub(crate) fn write_local_routes(&self, data_dir: &Path) -> Result<()> {
        let mut ctl = self.control()?;
        let local = crate::server::cluster::LocalState::read(data_dir)?;
        let socket_dir = std::path::absolute(data_dir.join("run"))?;
        let rows = ctl.query(
            // Routes lead to PostgreSQL itself (`platform_port` when a front serves tenants):
            // a front's lookups would refuse the pooler's remote auth user like a tenant.
            "SELECT w.database_name, w.server_id = $1, s.host, coalesce(s.platform_port, s.port), s.id, s.ca_file
               FROM workspaces AS w JOIN servers AS s ON s.id = w.server_id
              WHERE w.pooler_server_id = $1 AND w.state <> 'deleted'
              ORDER BY 1",
            &[&LOCAL_SERVER_ID],
        )?;
        let routes: Vec<Route> = rows
            .iter()
            .map(|r| {
                let here: bool = r.get(1);
                Route {
                    database: r.get(0),
                    host: if here {
                        socket_dir.display().to_string()
                    } else {
                        r.get(2)
                    },
                    port: if here {
                        local.pg_port
                    } else {
                        r.get::<_, i32>(3) as u16
                    },
                    remote: (!here).then(|| r.get(4)),
                }
            })
            .collect();
        let remote_cas: std::collections::BTreeSet<String> = rows
            .iter()
            .filter(|r| !r.get::<_, bool>(1))
            .filter_map(|r| r.get::<_, Option<String>>(5))
            .collect();
        write_server_tls(data_dir, &remote_cas)?;
        write_routes(data_dir, &routes)
    }

    /// The server whose pooler a workspace's pooled URI names: the one recorded by a move,
    /// else its own.
    pub(crate) fn pooler_server(
        &self,
        ctl: &mut Client,
        ws: &str,
        server: &Server,
    ) -> Result<Server> {
        let home: Option<String> = match ctl.query_opt(
            "SELECT pooler_server_id FROM workspaces WHERE id = $1",
            &[&ws],
        ) {
            Ok(row) => row.and_then(|r| r.get(0)),
            // A control database from before migration 7: nothing was ever moved.
            Err(e) if e.code().is_some_and(|c| c.code() == "42703") => None,
            Err(e) => return Err(e.into()),
        };
        match home {
            Some(h) if h != server.id => self.load_server(ctl, &h),
            _ => Ok(server.clone()),
        }
    }

    /// The pooler a workspace's pooled URI names.
    pub(crate) fn pooler_of(
        &self,
        ctl: &mut Client,
        ws: &str,
        server: &Server,
    ) -> Result<Option<crate::domain::types::Endpoint>> {
        Ok(self.pooler_server(ctl, ws, server)?.pooler)
    }

    /// The server whose (tool-managed) pooler keeps serving the workspace's pooled URI, or
    /// `None` when its server has no pooler (nothing to keep). A pooler the tool does not
    /// manage cannot be repointed: refused.
    pub(crate) fn pooler_home(
        &self,
        ctl: &mut Client,
        ws: &str,
        source: &Server,
    ) -> Result<Option<String>> {
        let recorded: Option<String> = ctl
            .query_one(
                "SELECT pooler_server_id FROM workspaces WHERE id = $1",
                &[&ws],
            )?
            .get(0);
        let home = recorded.unwrap_or_else(|| source.id.clone());
        let has_pooler = self.load_server(ctl, &home)?.pooler.is_some();
        if !has_pooler {
            return Ok(None);
        }
        if home != LOCAL_SERVER_ID || self.data_dir.is_none() {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "workspace {ws}'s pooled URI goes through the pooler of server {home}, which dl-tenancy does not manage; \
                     only the local pooler (`local up`) can be repointed, so the move would change the pooled URI"
                ),
            ));
        }
        Ok(Some(home))
    }

    pub(crate) fn console(&self, ctl: &mut Client, home: &str) -> Result<Console> {
        let port = self
            .load_server(ctl, home)?
            .pooler
            .map(|p| p.port)
            .ok_or_else(|| Error::new(ErrorCode::PoolerNotConfigured, "no pooler"))?;
        Console::open(port, &self.key)
    }

    /// The local pooler's pools, per workspace database: clients served and waiting, server
    /// connections, the longest wait.
    pub fn pooler_pools(&self) -> Result<Vec<PoolStats>> {
        let mut ctl = self.control()?;
        self.console(&mut ctl, LOCAL_SERVER_ID)?.pools()
    }
}
