//! What every server and workspace holds now, for `serve`'s /metrics: per server its
//! connection slots, per workspace its sessions, database size and clients in the local
//! pooler. One connection and one query per server, whatever its number of workspaces.

use crate::base::connection::connect;
use crate::control::records::{workspaces_by_server, Recorded};
use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::types::{
    Admission, LoadSnapshot, PoolStats, Refused, ServerSlots, WorkspaceLoad,
};
use crate::ops::Tenancy;
use crate::server::catalog::database_figures;
use std::collections::BTreeMap;

/// The server's slots: `max_connections`, what is in use, and admission's figures (NULL
/// without the library preloaded).
const SLOTS: &str = "SELECT pg_catalog.current_setting('max_connections')::bigint,
        (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'),
        pg_catalog.current_setting('dl_tenancy.admission', true)";

impl Tenancy {
    /// Every server's slots and every active or suspended workspace's load. A server that
    /// does not answer is listed as unreachable instead of failing the whole snapshot.
    pub fn load_snapshot(&self) -> Result<LoadSnapshot> {
        let mut ctl = self.control()?;
        let listed = workspaces_by_server(&mut ctl)?;
        let mut servers = Vec::with_capacity(listed.len());
        for (id, workspaces) in listed {
            servers.push((self.load_server(&mut ctl, &id)?, workspaces));
        }
        drop(ctl);
        let pools: BTreeMap<String, PoolStats> = match self.pooler_pools() {
            Ok(p) => p.into_iter().map(|s| (s.database.clone(), s)).collect(),
            // No local server, or one without a pooler: no pooled clients to show.
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::PoolerNotConfigured | ErrorCode::ServerNotFound
                ) =>
            {
                BTreeMap::new()
            }
            Err(e) => return Err(e),
        };
        let mut snap = LoadSnapshot::default();
        for (server, workspaces) in servers {
            match server_load(&server.admin_conn, &server.id, &workspaces, &pools) {
                Ok((slots, loads)) => {
                    snap.servers.push(slots);
                    snap.workspaces.extend(loads);
                }
                Err(_) => snap.unreachable.push(server.id.clone()),
            }
        }
        // The archive's figures of each server whose repository the tool knows; a scrape
        // never fails for them (a server that does not answer is listed above).
        for id in self.archived_servers().unwrap_or_default() {
            if let Ok(a) = self.archive_figures(&id) {
                snap.archives.push(a);
            }
        }
        Ok(snap)
    }
}

fn server_load(
    admin_conn: &str,
    server: &str,
    workspaces: &[Recorded],
    pools: &BTreeMap<String, PoolStats>,
) -> Result<(ServerSlots, Vec<WorkspaceLoad>)> {
    let mut db = connect(admin_conn, None)?;
    let row = db.query_one(SLOTS, &[])?;
    let (max_connections, in_use): (i64, i64) = (row.get(0), row.get(1));
    let admission: Admission = match row.get::<_, Option<String>>(2) {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("dl_tenancy.admission: {e}")))?,
        None => Admission::default(),
    };
    let refused: BTreeMap<&str, &Refused> = admission
        .refused
        .iter()
        .map(|r| (r.database.as_str(), r))
        .collect();
    let names: Vec<&str> = workspaces.iter().map(|w| w.database.as_str()).collect();
    let figures = database_figures(&mut db, &names)?;
    let loads = workspaces
        .iter()
        .filter_map(|w| {
            let f = figures.get(&w.database)?;
            let r = refused.get(w.database.as_str());
            Some(WorkspaceLoad {
                refused_pooled: r.map_or(0, |r| r.pooled),
                refused_direct: r.map_or(0, |r| r.direct),
                workspace: w.workspace.clone(),
                server: server.to_string(),
                sessions: f.sessions,
                database_bytes: f.bytes,
                storage: f.storage.clone(),
                pooler: pools.get(&w.database).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let slots = ServerSlots {
        server: server.to_string(),
        max_connections,
        in_use,
        reserved: match (admission.pooled.slots, admission.direct.slots) {
            (0, _) | (_, 0) => 0,
            (pooled, direct) => max_connections - pooled - direct,
        },
        free: max_connections - in_use,
        admission,
    };
    Ok((slots, loads))
}
