use crate::domain::error::Result;

use crate::base::connection::connect;
use crate::control::lock::with_workspace_lock;
use crate::control::records::workspace_limits;
use crate::domain::error::not_provisioned;
use crate::domain::limits::LimitsChange;
use crate::domain::limits::WorkspaceLimits;
use crate::domain::limits::DEFAULT_LIMITS;
use crate::domain::names::validate_workspace_id;
use crate::ops::Tenancy;
use crate::server::roles::fence;

impl Tenancy {
    /// A workspace's limits (provisioned or not: limits may be set before provisioning).
    pub fn limits(&self, workspace: &str) -> Result<WorkspaceLimits> {
        validate_workspace_id(workspace)?;
        let limits = workspace_limits(&mut self.control()?, workspace)?;
        Ok(WorkspaceLimits {
            workspace: workspace.into(),
            limits,
            customized: limits != DEFAULT_LIMITS,
        })
    }

    /// Change some of a workspace's limits, record them, and apply them to its database and
    /// logins at once when it is active.
    pub fn set_limits(&self, workspace: &str, change: &LimitsChange) -> Result<WorkspaceLimits> {
        validate_workspace_id(workspace)?;
        let mut ctl = self.control()?;
        with_workspace_lock(&mut ctl, workspace, |ctl| {
            let limits = change.apply(workspace_limits(ctl, workspace)?);
            limits.validate()?;
            let recorded: i64 = ctl
                .query_one(
                    "SELECT count(*) FROM workspaces WHERE id = $1 AND state <> 'deleted'",
                    &[&workspace],
                )?
                .get(0);
            if recorded == 0 {
                return Err(not_provisioned(workspace));
            }
            ctl.execute(
                "INSERT INTO workspace_limits (workspace_id, limits) VALUES ($1, $2)
                 ON CONFLICT (workspace_id) DO UPDATE SET limits = EXCLUDED.limits, updated_at = now()",
                &[&workspace, &serde_json::to_value(limits).expect("limits serialize")],
            )?;
            if let Ok((names, server_id)) = self.active_workspace(ctl, workspace) {
                let server = self.load_server(ctl, &server_id)?;
                fence(&mut connect(&server.admin_conn, None)?, &names, &limits)?;
            }
            Ok(WorkspaceLimits {
                workspace: workspace.into(),
                limits,
                customized: limits != DEFAULT_LIMITS,
            })
        })
    }
}
