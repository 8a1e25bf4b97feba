//! The run's throwaway cluster and the tools every scenario uses on it: connections, pgbench,
//! the server log, progress messages and errors.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pg_harness::{pg_bin_dir, PgCluster};
use postgres::{Client, NoTls};

use crate::Config;

pub type R<T> = Result<T, Box<dyn Error>>;

pub fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(msg.into().into())
}

/// An error with the server's message, detail, hint and context when it is a database error.
pub fn describe(e: &(dyn Error + 'static)) -> String {
    if let Some(pe) = e.downcast_ref::<postgres::Error>() {
        if let Some(db) = pe.as_db_error() {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            for (k, v) in [
                ("detail", db.detail()),
                ("hint", db.hint()),
                ("where", db.where_()),
            ] {
                if let Some(v) = v {
                    s.push_str(&format!("\n  {k}: {v}"));
                }
            }
            return s;
        }
    }
    e.to_string()
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[dl-bench {}] {}", clock(), msg.as_ref());
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// pgbench's `-M`: how each statement of the script reaches the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QueryMode {
    Prepared,
    Simple,
}

impl QueryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryMode::Prepared => "prepared",
            QueryMode::Simple => "simple",
        }
    }
}

/// Where pgbench connects. The password, when there is one, goes to pgbench in its
/// environment (PGPASSWORD), never on its command line.
pub struct Endpoint {
    /// A unix socket directory or an address.
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
}

/// The throwaway cluster and the connections of the run.
pub struct Bench {
    pub cfg: Config,
    pub cluster: PgCluster,
    /// Scratch files of the run (pgbench scripts, COPY input).
    pub work: PathBuf,
    /// The private copy of the extension's library the cluster loads.
    pub lib_dir: PathBuf,
    pub settings: Vec<(&'static str, String)>,
}

impl Bench {
    pub fn connect(&self, user: &str) -> R<Client> {
        Client::connect(&self.cluster.conn_string(user, "bench"), NoTls)
            .map_err(|e| format!("connect as {user}: {e}").into())
    }

    pub fn admin(&self) -> R<Client> {
        self.connect("postgres")
    }

    /// The server log from byte `from` on (for auto_explain output).
    pub fn log_since(&self, from: usize) -> String {
        let l = self.cluster.log();
        l.get(from..).unwrap_or("").to_string()
    }

    pub fn log_len(&self) -> usize {
        self.cluster.log().len()
    }

    pub fn write_script(&self, name: &str, body: &str) -> R<PathBuf> {
        let p = self.work.join(name);
        fs::write(&p, body)?;
        Ok(p)
    }

    /// The cluster's unix socket (trust authentication).
    pub fn socket(&self) -> Endpoint {
        Endpoint {
            host: self.cluster.socket_dir().display().to_string(),
            port: self.cluster.port(),
            password: None,
        }
    }

    /// pgbench -M prepared -c N -j N -T secs -f script over the unix socket; returns tps.
    pub fn pgbench(&self, user: &str, script: &Path, clients: u32) -> R<f64> {
        self.pgbench_at(&self.socket(), user, script, clients, QueryMode::Prepared)
    }

    /// pgbench -M mode -c N -j N -T secs -f script against `to`; returns tps.
    pub fn pgbench_at(
        &self,
        to: &Endpoint,
        user: &str,
        script: &Path,
        clients: u32,
        mode: QueryMode,
    ) -> R<f64> {
        let mut cmd = Command::new(pg_bin_dir().join("pgbench"));
        cmd.args(["-n", "-M", mode.as_str()])
            .arg("-c")
            .arg(clients.to_string())
            .arg("-j")
            .arg(clients.to_string())
            .arg("-T")
            .arg(self.cfg.pgbench_secs.to_string())
            .arg("-f")
            .arg(script)
            .arg("-h")
            .arg(&to.host)
            .arg("-p")
            .arg(to.port.to_string())
            .arg("-U")
            .arg(user)
            .arg("bench");
        if let Some(pw) = &to.password {
            cmd.env("PGPASSWORD", pw);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run pgbench: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return fail(format!(
                "pgbench {} failed ({}):\n{stdout}\n{stderr}",
                script.display(),
                out.status
            ));
        }
        for line in stdout.lines() {
            if let Some(rest) = line.trim().strip_prefix("tps = ") {
                let v: f64 = rest.split_whitespace().next().unwrap_or("").parse()?;
                return Ok(v);
            }
        }
        fail(format!("no tps in pgbench output:\n{stdout}\n{stderr}"))
    }
}

/// A private copy of the installed dl_tenancy.so (taken when the source is not being written).
pub fn private_extension_lib() -> R<PathBuf> {
    let out = Command::new(pg_bin_dir().join("pg_config"))
        .arg("--pkglibdir")
        .output()?;
    if !out.status.success() {
        return fail("pg_config --pkglibdir failed");
    }
    let src = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("dl_tenancy.so");
    let dir = pg_harness::temp_dir("dl-bench-lib")?;
    let dst = dir.join("dl_tenancy.so");
    for _ in 0..20 {
        let before = fs::metadata(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        fs::copy(&src, &dst)?;
        let after = fs::metadata(&src)?;
        if before.len() == after.len()
            && before.modified()? == after.modified()?
            && fs::metadata(&dst)?.len() == after.len()
            && after
                .modified()?
                .elapsed()
                .map(|d| d.as_secs() >= 2)
                .unwrap_or(true)
        {
            log(format!(
                "using a private copy of {} ({} bytes)",
                src.display(),
                after.len()
            ));
            return Ok(dir);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    fail(format!(
        "{} kept changing; cannot take a stable copy",
        src.display()
    ))
}
