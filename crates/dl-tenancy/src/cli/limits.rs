//! `dl-tenancy limits`: a workspace's limits, shown or changed.

use clap::Args;
use dl_tenancy_ctl::fences::LimitsChange;
use dl_tenancy_ctl::names::{self, WorkspaceId};
use dl_tenancy_ctl::{Error, ErrorCode};

#[derive(Args, Debug)]
pub struct LimitsArgs {
    /// Workspace id, ^[a-z][a-z0-9_-]{0,47}$
    #[arg(long, allow_hyphen_values = true)]
    pub workspace: WorkspaceId,
    /// Connections to the workspace database, direct and pooled together.
    #[arg(long)]
    database_connections: Option<i32>,
    /// Connections of one login.
    #[arg(long)]
    login_connections: Option<i32>,
    /// Default statement_timeout of its logins (90s, 10m, ...).
    #[arg(long)]
    statement_timeout: Option<String>,
    /// Default idle_in_transaction_session_timeout of its logins.
    #[arg(long)]
    idle_in_transaction_timeout: Option<String>,
    /// Default lock_timeout of its logins.
    #[arg(long)]
    lock_timeout: Option<String>,
    /// Default work_mem of its logins, in MB.
    #[arg(long)]
    work_mem_mb: Option<i32>,
    /// temp_file_limit of its logins, in MB (0: no temporary files).
    #[arg(long)]
    temp_file_limit_mb: Option<i32>,
    /// Storage quota of the workspace database, in MB: warned from 80%, writes that grow it
    /// refused at 100% until it is back below 90%.
    #[arg(long)]
    storage_mb: Option<i32>,
    /// Override history rows older than this are deleted (90d, 0: no age limit).
    #[arg(long)]
    history_max_age: Option<String>,
    /// Disk space each override history table may take, in MB; past it the oldest rows go
    /// (-1: a twentieth of the storage quota).
    #[arg(long, allow_hyphen_values = true)]
    history_max_mb: Option<i32>,
}

impl LimitsArgs {
    /// The change the arguments ask for (none given: only show).
    pub fn change(&self) -> Result<LimitsChange, Error> {
        let seconds = |d: &Option<String>| -> Result<Option<i32>, Error> {
            d.as_deref()
                .map(|d| {
                    let s = names::parse_duration(d)?;
                    i32::try_from(s).map_err(|_| {
                        Error::new(ErrorCode::InvalidArgument, format!("{d} is too long"))
                    })
                })
                .transpose()
        };
        Ok(LimitsChange {
            database_connections: self.database_connections,
            login_connections: self.login_connections,
            statement_timeout_seconds: seconds(&self.statement_timeout)?,
            idle_in_transaction_timeout_seconds: seconds(&self.idle_in_transaction_timeout)?,
            lock_timeout_seconds: seconds(&self.lock_timeout)?,
            work_mem_mb: self.work_mem_mb,
            temp_file_limit_mb: self.temp_file_limit_mb,
            storage_mb: self.storage_mb,
            history_max_age_seconds: seconds(&self.history_max_age)?,
            history_max_mb: self.history_max_mb,
        })
    }
}
