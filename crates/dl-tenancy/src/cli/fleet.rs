//! The fleet commands of the CLI (soft delete, usage, backup and restore, point-in-time
//! restore and the continuous archive): thin fronts over the library, flattened into the
//! top-level command list.

use clap::{Args, Subcommand};
use dl_tenancy_ctl::names::{self, WorkspaceId};
use dl_tenancy_ctl::{BackupKind, Error, ErrorCode, RestoreInto, Tenancy};

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
    /// Restore a backup file into a new workspace (fresh credentials) or an empty one, through
    /// ALTER EXTENSION UPDATE when the backup is of an older version (--from FILE --workspace
    /// W2); or a workspace as it was at a time, from the server's continuous archive, into a
    /// new workspace or in place (--workspace W --at TIME --into W2 | --in-place --yes).
    Restore(RestoreArgs),
    /// The servers' continuous archive (pgBackRest): backups (the local server's) and status.
    #[command(subcommand)]
    Archive(ArchiveCmd),
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
    #[arg(long, required_unless_present = "at", conflicts_with = "at")]
    from: Option<std::path::PathBuf>,
    /// With --from: the workspace to restore into (new, or provisioned and empty). With --at:
    /// the workspace whose past is restored.
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
    /// The time to restore the workspace at (a PostgreSQL timestamp; without a zone, the
    /// server's), within the recoverable window (`archive status`).
    #[arg(long, allow_hyphen_values = true)]
    at: Option<String>,
    /// With --at: a new (or empty) workspace to restore into, with fresh credentials.
    #[arg(
        long,
        allow_hyphen_values = true,
        requires = "at",
        conflicts_with = "in_place"
    )]
    into: Option<WorkspaceId>,
    /// With --at: replace the workspace's data (its current state is kept as a backup file
    /// first; its sessions end). Needs --yes.
    #[arg(long, requires = "at")]
    in_place: bool,
    /// Confirms --in-place.
    #[arg(long)]
    yes: bool,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCmd {
    /// Take a backup now (for an operator's cron): full, differential or incremental (an
    /// incremental one without a full one before it is full); then expire what retention no
    /// longer keeps.
    Backup {
        #[arg(long = "type", default_value = "incr")]
        kind: String,
    },
    /// Backups, the recoverable window, the last archived WAL and the archive lag: of the
    /// local server, or of an added one whose repository `server archive` gave.
    Status {
        #[arg(long)]
        server: Option<String>,
    },
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
        FleetCmd::Restore(r) => match (r.from, r.at) {
            (Some(from), _) => print(&open()?.restore(&from, &r.workspace)?),
            (None, Some(at)) => {
                let into = match (r.into, r.in_place, r.yes) {
                    (Some(w2), _, _) => RestoreInto::Workspace(w2.to_string()),
                    (None, true, true) => RestoreInto::InPlace,
                    (None, true, false) => {
                        return Err(Error::new(
                            ErrorCode::ConfirmationRequired,
                            format!("--in-place replaces the data of workspace {} (its sessions end); add --yes to confirm", r.workspace),
                        ))
                    }
                    (None, false, _) => {
                        return Err(Error::new(
                            ErrorCode::InvalidArgument,
                            "--at needs --into W2 (a new workspace) or --in-place --yes",
                        ))
                    }
                };
                print(&open()?.restore_at(&r.workspace, &at, &into)?)
            }
            (None, None) => unreachable!("clap requires --from or --at"),
        },
        FleetCmd::Archive(ArchiveCmd::Backup { kind }) => {
            print(&open()?.archive_backup(kind.parse::<BackupKind>()?)?)
        }
        FleetCmd::Archive(ArchiveCmd::Status { server }) => {
            print(&open()?.archive_status(server.as_deref())?)
        }
    }
    Ok(())
}
