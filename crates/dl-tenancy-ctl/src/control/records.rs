use crate::domain::error::Error;
use crate::domain::error::ErrorCode;
use crate::domain::error::Result;
use crate::domain::limits::Limits;
use crate::domain::limits::DEFAULT_LIMITS;
use postgres::Client;
use postgres::GenericClient;

/// A provisioning step (provision, undelete) failed: the workspace shows `error`, and keeps
/// the message for operators (`list`; `status` never shows it).
pub(crate) fn record_failure(ctl: &mut Client, ws: &str, e: &Error) {
    let _ = ctl.execute(
        "UPDATE workspaces SET state = 'error', error_message = $2, updated_at = now()
          WHERE id = $1 AND state IN ('provisioning', 'error')",
        &[&ws, &e.to_string()],
    );
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
