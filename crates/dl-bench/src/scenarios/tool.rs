//! The `dl-tenancy` CLI as scenarios 7, 8 and 11 run it: on their own data directory (local
//! mode: `DL_TENANCY_ADMIN_URL` is not passed on), timed, its JSON answer parsed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::bench::{fail, R};

/// The CLI on the scenario's data directory.
pub struct Tool {
    pub bin: PathBuf,
    pub data: PathBuf,
}

impl Tool {
    /// Runs one command; returns its wall time in seconds and its JSON output.
    pub fn run(&self, args: &[&str]) -> R<(f64, Value)> {
        let t = Instant::now();
        let out = Command::new(&self.bin)
            .env_remove("DL_TENANCY_ADMIN_URL")
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            return fail(format!(
                "dl-tenancy {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("dl-tenancy {}: output is not JSON: {e}", args.join(" ")))?;
        Ok((secs, v))
    }
}
