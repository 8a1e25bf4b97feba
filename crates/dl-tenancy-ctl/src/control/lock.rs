//! Advisory locks in the control database: one operation per workspace at a time, one
//! template rebuild per server at a time, across processes. Each is taken and released here
//! only.

use crate::domain::error::{Error, ErrorCode, Result};
use postgres::Client;

/// Advisory lock class ids (first key of the two-int form).
pub const LOCK_SCHEMA: i32 = 0x646c_0001;
pub const LOCK_WORKSPACE: i32 = 0x646c_0002;
pub const LOCK_TEMPLATE: i32 = 0x646c_0003;
pub const LOCK_RESTORE: i32 = 0x646c_0004;

/// How long a call waits for another operation on the same workspace.
const WORKSPACE_LOCK_WAIT: &str = "60s";

/// Run `f` holding the lock `(class, hashtext(key))`, and release it whatever `f` returns.
/// `wait`: how long to wait for it (the session's `lock_timeout` otherwise).
fn with_lock<T>(
    ctl: &mut Client,
    class: i32,
    key: &str,
    wait: Option<&str>,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    if let Some(wait) = wait {
        ctl.batch_execute(&format!("SET lock_timeout = '{wait}'"))?;
    }
    let taken = ctl.execute(
        "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))",
        &[&class, &key],
    );
    if wait.is_some() {
        ctl.batch_execute("RESET lock_timeout")?;
    }
    taken?;
    let res = f(ctl);
    let _ = ctl.execute(
        "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
        &[&class, &key],
    );
    res
}

/// Run `f` holding the workspace's lock. Another operation that holds it past
/// [`WORKSPACE_LOCK_WAIT`] makes this one `provisioning_in_progress`.
pub fn with_workspace_lock<T>(
    ctl: &mut Client,
    ws: &str,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let mut ran = false;
    with_lock(ctl, LOCK_WORKSPACE, ws, Some(WORKSPACE_LOCK_WAIT), |ctl| {
        ran = true;
        f(ctl)
    })
    .map_err(|e| {
        if !ran && e.sqlstate() == Some("55P03") {
            Error::new(
                ErrorCode::ProvisioningInProgress,
                "another operation on this workspace is still running; retry later",
            )
        } else {
            e
        }
    })
}

/// Run `f` holding the server's template lock (one template rebuild at a time).
pub fn with_template_lock<T>(
    ctl: &mut Client,
    server_id: &str,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    with_lock(ctl, LOCK_TEMPLATE, server_id, None, f)
}

/// Run `f` holding the workspace's point-in-time restore lock: one such restore of a
/// workspace at a time (each step of it still takes the workspace's own lock). A second one
/// is refused at once rather than queued behind minutes of copying.
pub fn with_restore_lock<T>(
    ctl: &mut Client,
    ws: &str,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let taken: bool = ctl
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2))",
            &[&LOCK_RESTORE, &ws],
        )?
        .get(0);
    if !taken {
        return Err(Error::new(
            ErrorCode::ProvisioningInProgress,
            format!("a point-in-time restore of workspace {ws} is running; retry when it is done"),
        ));
    }
    let res = f(ctl);
    let _ = ctl.execute(
        "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
        &[&LOCK_RESTORE, &ws],
    );
    res
}
