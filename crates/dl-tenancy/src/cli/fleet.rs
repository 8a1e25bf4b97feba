//! The fleet commands of the CLI (soft delete, usage, backup and restore): thin fronts over
//! the library, flattened into the top-level command list.

use clap::{Args, Subcommand};
use dl_tenancy_ctl::names::{self, WorkspaceId};
use dl_tenancy_ctl::{Error, ErrorCode, Tenancy};

#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Delete a workspace: logins refused and sessions ended at once, API tokens revoked, data
    /// kept for --retention (default 30d), then purged. `undelete` brings it back until then.
    Deprovision(DeprovisionArgs),
    /// Bring a deleted (suspended) workspace back, with its data and fresh passwords.
    Undelete(WsArg),
    /// Drop a deleted workspace's data now (--workspace W --confirm W), or every one whose
    /// retention is over (--expired; `serve` does this on its own).
    Purge(PurgeArgs),
    /// Database size, connections, rows in the extension's tables and last activity: of one
    /// workspace, or of every workspace per server.
    Usage(UsageArgs),
    /// Write one file with a workspace's data, tenant_custom objects, overrides and history
    /// (pg_dump custom format and a manifest; no credentials).
    Backup(BackupArgs),
    /// Restore a backup into a new workspace (fresh credentials) or an empty one, through
    /// ALTER EXTENSION UPDATE when the backup is of an older version.
    Restore(RestoreArgs),
    /// Move a workspace to another server (streamed while live, then a short pause); its
    /// pooled URI stays the same (the local pooler is repointed), its direct URI names the new
    /// server.
    Move(MoveArgs),
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
    /// The server to move it to.
    #[arg(long)]
    to: String,
    /// How to copy: `logical` streams the data while the workspace stays live and pauses only
    /// to drain the last changes (the source needs wal_level = logical); `copy` dumps and
    /// restores inside the pause; `auto` streams when it can.
    #[arg(long, default_value = "auto")]
    method: String,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
    /// The file to write (must not exist).
    #[arg(long)]
    to: std::path::PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A file written by `backup`.
    #[arg(long)]
    from: std::path::PathBuf,
    /// The workspace to restore into: new, or provisioned and empty.
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// One workspace (default: all, per server).
    #[arg(long, allow_hyphen_values = true)]
    workspace: Option<WorkspaceId>,
}

#[derive(Args, Debug)]
pub struct WsArg {
    /// Workspace id, ^[a-z][a-z0-9_-]{0,47}$
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
}

#[derive(Args, Debug)]
pub struct DeprovisionArgs {
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
    /// Must repeat the workspace id.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    confirm: String,
    /// How long the data is kept before the purge sweep drops it (0, 12h, 7d, ...; at most
    /// 366d). Default: 30d.
    #[arg(long)]
    retention: Option<String>,
}

#[derive(Args, Debug)]
pub struct PurgeArgs {
    #[arg(
        long,
        allow_hyphen_values = true,
        required_unless_present = "expired",
        conflicts_with = "expired"
    )]
    workspace: Option<WorkspaceId>,
    /// Must repeat the workspace id.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    confirm: String,
    /// Purge every deleted workspace whose retention is over.
    #[arg(long)]
    expired: bool,
}

fn print<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

pub fn run(cmd: FleetCmd, open: impl Fn() -> Result<Tenancy, Error>) -> Result<(), Error> {
    match cmd {
        FleetCmd::Deprovision(d) => {
            let retention = match d.retention.as_deref() {
                Some(r) => names::parse_duration(r)?,
                None => dl_tenancy_ctl::DEFAULT_RETENTION_SECONDS,
            };
            print(&open()?.suspend(&d.workspace, &d.confirm, retention)?)
        }
        FleetCmd::Undelete(w) => print(&open()?.undelete(&w.workspace)?),
        FleetCmd::Purge(p) => match p.workspace {
            Some(ws) => print(&open()?.purge(&ws, &p.confirm)?),
            None if p.expired => print(&serde_json::json!({"purged": open()?.purge_expired()?})),
            None => {
                return Err(Error::new(
                    ErrorCode::InvalidArgument,
                    "purge needs --workspace W --confirm W, or --expired",
                ))
            }
        },
        FleetCmd::Usage(u) => match u.workspace {
            Some(ws) => print(&open()?.usage(&ws)?),
            None => print(&open()?.fleet_usage()?),
        },
        FleetCmd::Backup(b) => print(&open()?.backup(&b.workspace, &b.to)?),
        FleetCmd::Move(m) => {
            let method: dl_tenancy_ctl::MoveMethod = m.method.parse()?;
            print(&open()?.move_workspace_with(&m.workspace, &m.to, method)?)
        }
        FleetCmd::Restore(r) => print(&open()?.restore(&r.from, &r.workspace)?),
    }
    Ok(())
}
