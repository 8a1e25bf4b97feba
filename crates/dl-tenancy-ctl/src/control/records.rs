//! Records of the control database that several operations share: state transitions (only
//! along `domain::state`'s table), failures, events, limits, the live logins.

use crate::domain::error::{Error, ErrorCode, Result};
use crate::domain::limits::{Limits, DEFAULT_LIMITS};
use crate::domain::state::{MoveState, WorkspaceState};
use postgres::{Client, GenericClient};

/// Move a workspace to state `to` (with `error_message`), from a state that may become it.
/// Returns whether it moved.
pub(crate) fn set_workspace_state(
    c: &mut impl GenericClient,
    ws: &str,
    to: WorkspaceState,
    error: Option<&str>,
) -> Result<bool> {
    let from = to.comes_from_text();
    Ok(c.execute(
        "UPDATE workspaces SET state = $2, error_message = $3, updated_at = now()
          WHERE id = $1 AND state = ANY($4)",
        &[&ws, &to.as_str(), &error, &from],
    )? == 1)
}

/// A suspended (or purging) workspace leaves suspension: back to `provisioning` (undelete)
/// or `deleted` (purge), its retention dates cleared.
pub(crate) fn leave_suspension(
    c: &mut impl GenericClient,
    ws: &str,
    to: WorkspaceState,
) -> Result<()> {
    c.execute(
        "UPDATE workspaces SET state = $2, error_message = NULL, suspended_at = NULL,
                purge_after = NULL, updated_at = now()
          WHERE id = $1 AND state = ANY($3)",
        &[&ws, &to.as_str(), &to.comes_from_text()],
    )?;
    Ok(())
}

/// A provisioning step (provision, undelete) failed: the workspace shows `error`, and keeps
/// the message for operators (`list`; `status` never shows it).
pub(crate) fn record_failure(ctl: &mut Client, ws: &str, e: &Error) {
    let _ = set_workspace_state(ctl, ws, WorkspaceState::Error, Some(&e.to_string()));
}

/// Move a workspace's move to state `to`, from a state that may become it (`error` only for
/// `failed`); anything else is a bug in the move's steps.
pub(crate) fn set_move_state(
    c: &mut impl GenericClient,
    ws: &str,
    to: MoveState,
    error: Option<&str>,
) -> Result<()> {
    let from: Vec<&str> = to.comes_from().iter().map(|s| s.as_str()).collect();
    let n = c.execute(
        "UPDATE workspace_moves SET state = $2, error_message = $3, updated_at = now()
          WHERE workspace_id = $1 AND state = ANY($4)",
        &[&ws, &to.as_str(), &error, &from],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Internal,
            format!("the move of {ws} cannot become {}", to.as_str()),
        ))
    }
}

/// The logins holding the workspace's live credentials, as the control database records them.
pub(crate) fn active_logins(ctl: &mut Client, ws: &str) -> Result<Vec<String>> {
    Ok(ctl
        .query(
            "SELECT login_name FROM credentials WHERE workspace_id = $1 AND active",
            &[&ws],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Append to the workspace's event log (no secrets in `detail`).
pub(crate) fn record_event(
    ctl: &mut impl GenericClient,
    ws: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<()> {
    ctl.execute(
        "INSERT INTO workspace_events (workspace_id, action, detail) VALUES ($1, $2, $3)",
        &[&ws, &action, &detail],
    )?;
    Ok(())
}

/// The limits recorded for a workspace, or the defaults.
pub(crate) fn workspace_limits(ctl: &mut Client, ws: &str) -> Result<Limits> {
    let row = ctl.query_opt(
        "SELECT limits FROM workspace_limits WHERE workspace_id = $1",
        &[&ws],
    )?;
    match row {
        None => Ok(DEFAULT_LIMITS),
        Some(r) => serde_json::from_value(r.get(0)).map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!("the recorded limits of {ws} are unreadable: {e}"),
            )
        }),
    }
}

/// A workspace that has data on its server (active or suspended), as recorded.
pub(crate) struct Recorded {
    pub workspace: String,
    pub status: String,
    pub database: String,
}

/// Every server, oldest first, with its active and suspended workspaces by id.
pub(crate) fn workspaces_by_server(ctl: &mut Client) -> Result<Vec<(String, Vec<Recorded>)>> {
    let rows = ctl.query(
        "SELECT s.id, w.id, w.state, w.database_name
           FROM servers AS s
           LEFT JOIN workspaces AS w ON w.server_id = s.id AND w.state IN ('active', 'suspended')
          ORDER BY s.created_at, s.id, w.id",
        &[],
    )?;
    let mut listed: Vec<(String, Vec<Recorded>)> = vec![];
    for r in rows {
        let server_id: String = r.get(0);
        if listed.last().map(|(s, _)| s) != Some(&server_id) {
            listed.push((server_id, vec![]));
        }
        if let Some(workspace) = r.get::<_, Option<String>>(1) {
            let entry = &mut listed.last_mut().expect("pushed above").1;
            entry.push(Recorded {
                workspace,
                status: r.get(2),
                database: r.get(3),
            });
        }
    }
    Ok(listed)
}
