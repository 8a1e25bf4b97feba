//! One module per scenario; each `run` measures on the shared [`crate::bench::Bench`] and
//! returns its [`crate::report::Scenario`] (provisioning returns two); `tool.rs` runs the CLI,
//! `archive_lag.rs` is scenario 16's second half.

pub mod archive_lag;
pub mod filtered;
pub mod fleet;
pub mod load;
pub mod many;
pub mod memory;
pub mod merge_patch;
pub mod override_write;
pub mod pitr;
pub mod point;
pub mod pooled;
pub mod provisioning;
pub mod tool;
pub mod topn;

/// The names `--only` takes (or the scenario numbers, as aliases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioName {
    /// 1: top-N read (the seed's quick-start query)
    #[value(alias = "1")]
    Topn,
    /// 2: point read by identity_key
    #[value(alias = "2")]
    Point,
    /// 3: filtered reads
    #[value(alias = "3")]
    Filtered,
    /// 4: override writes
    #[value(alias = "4")]
    OverrideWrite,
    /// 5: bulk load (when not selected, the data set is loaded untimed)
    #[value(alias = "5")]
    Load,
    /// 6: dl_jsonb_merge_patch
    #[value(alias = "6")]
    MergePatch,
    /// 7 and 8: provisioning and URI rotation (needs --dl-tenancy-bin)
    #[value(alias = "7", alias = "8")]
    Provisioning,
    /// 9: backend memory
    #[value(alias = "9")]
    Memory,
    /// 10: pooled (PgBouncer) vs direct throughput of the seed's reads
    #[value(alias = "10")]
    Pooled,
    /// 11: backup and move of a workspace vs pg_dump | pg_restore (needs --dl-tenancy-bin)
    #[value(alias = "11")]
    Fleet,
    /// 14: one server, many workspaces: provisioning, a burst, usage, upgrade, the API
    /// (needs --dl-tenancy-bin)
    #[value(alias = "14")]
    Many,
    /// 16: point-in-time restore of a workspace vs pg_dump | pg_restore, and the archive lag
    /// under a write load (needs --dl-tenancy-bin)
    #[value(alias = "16")]
    Pitr,
}

impl ScenarioName {
    /// The name as `--only` takes it.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}
