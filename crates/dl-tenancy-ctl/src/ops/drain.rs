//! Draining a server (every workspace moved off it) and removing an empty one.

use crate::domain::error::Result;
use serde::Serialize;

use crate::domain::error::Error;
use crate::domain::error::ErrorCode;
use crate::domain::names::validate_server_name;
use crate::ops::moves::MoveReport;
use crate::ops::Tenancy;

/// `server drain`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DrainReport {
    pub server: String,
    pub moved: Vec<MoveReport>,
    pub failed: Vec<crate::ops::usage::UsageError>,
}

impl Tenancy {
    /// `server drain NAME`: no new workspaces there, and every workspace moved to the other
    /// active servers (the least-loaded first), `parallel` at a time. A workspace that fails
    /// stays where it was and is reported; a re-run retries it.
    pub fn drain(&self, server: &str, parallel: usize) -> Result<DrainReport> {
        validate_server_name(server)?;
        let mut ctl = self.control()?;
        self.load_server(&mut ctl, server)?;
        ctl.execute(
            "UPDATE servers SET active = false, updated_at = now() WHERE id = $1",
            &[&server],
        )?;
        let workspaces: Vec<String> = ctl
            .query(
                "SELECT id FROM workspaces WHERE server_id = $1 AND state = 'active' ORDER BY id",
                &[&server],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let total = workspaces.len();
        self.progress
            .step(|| format!("drain {server}: {total} workspaces to move, {parallel} at a time"));
        let queue = std::sync::Mutex::new(workspaces.into_iter());
        let results = std::sync::Mutex::new((vec![], vec![]));
        std::thread::scope(|s| {
            for _ in 0..parallel.max(1) {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(ws) = next else { break };
                    let moved = self
                        .control()
                        .and_then(|mut c| self.place(&mut c))
                        .and_then(|to| self.move_workspace(&ws, &to));
                    let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
                    let done = r.0.len() + r.1.len() + 1;
                    self.progress.step(|| {
                        let how = moved.as_ref().map_or("failed", |_| "moved");
                        format!("drain {server}: {done}/{total} ({ws} {how})")
                    });
                    match moved {
                        Ok(m) => r.0.push(m),
                        Err(e) => r.1.push(crate::ops::usage::UsageError {
                            workspace: ws,
                            error: e.to_string(),
                        }),
                    }
                });
            }
        });
        let (mut moved, mut failed) = results.into_inner().unwrap_or_else(|e| e.into_inner());
        moved.sort_by(|a: &MoveReport, b| a.workspace.cmp(&b.workspace));
        failed.sort_by(|a: &crate::ops::usage::UsageError, b| a.workspace.cmp(&b.workspace));
        Ok(DrainReport {
            server: server.into(),
            moved,
            failed,
        })
    }

    /// `server remove NAME`: forget a server that holds no workspace (any not purged, or
    /// serving a moved workspace's pooled URI). Refused otherwise.
    pub fn server_remove(&self, server: &str) -> Result<crate::domain::types::ServerList> {
        validate_server_name(server)?;
        let mut ctl = self.control()?;
        let mut tx = ctl.transaction()?;
        let found = tx
            .query_opt("SELECT 1 FROM servers WHERE id = $1 FOR UPDATE", &[&server])?
            .is_some();
        if !found {
            return Err(Error::new(
                ErrorCode::ServerNotFound,
                format!("no server named {server}"),
            ));
        }
        let held: i64 = tx
            .query_one(
                "SELECT count(*) FROM workspaces
                  WHERE (server_id = $1 OR pooler_server_id = $1) AND state <> 'deleted'",
                &[&server],
            )?
            .get(0);
        if held > 0 {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("server {server} still holds {held} workspace(s); drain it first (`server drain {server}`)"),
            ));
        }
        // Purged workspaces' records go with it (their events stay).
        tx.execute(
            "DELETE FROM workspace_moves WHERE from_server = $1 OR to_server = $1",
            &[&server],
        )?;
        tx.execute(
            "DELETE FROM workspaces WHERE server_id = $1 AND state = 'deleted'",
            &[&server],
        )?;
        tx.execute("DELETE FROM servers WHERE id = $1", &[&server])?;
        tx.commit()?;
        drop(ctl);
        self.server_list()
    }
}
