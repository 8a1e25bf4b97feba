//! PostgreSQL clusters: the free functions on a directory you own, and [`PgCluster`] (a
//! throwaway one for tests).

use crate::free_port;
use crate::{err, make_server_dir, run, server_command, temp_dir, write_server_file, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directory with initdb, pg_ctl, postgres.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(pg_config) = std::env::var("PG_CONFIG") {
        if let Ok(out) = Command::new(pg_config).arg("--bindir").output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    PathBuf::from("/usr/lib/postgresql/15/bin")
}

/// Where and how a cluster runs. `data_dir` is created by initdb; `socket_dir` and the log
/// file's directory must exist (use [`make_server_dir`]).
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log_file: PathBuf,
    /// Extra `postgresql.conf` settings, written to `harness.conf` (included last) at each start.
    pub conf: Vec<(String, String)>,
    /// Replacement `pg_hba.conf` (written at each start) or `None` for the harness default
    /// (`local all all trust`, `host all all 127.0.0.1/32 scram-sha-256`).
    pub hba: Option<String>,
    /// Replacement `pg_ident.conf` (written at each start).
    pub ident: Option<String>,
}

impl ClusterSpec {
    /// `host=<socket_dir> port=<port> user=<user> dbname=<db>` (libpq key/value form).
    pub fn conn_string(&self, user: &str, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.socket_dir.display(),
            self.port,
            user,
            db
        )
    }
}

/// Default pg_hba.conf of throwaway clusters: anyone over the socket, passwords over TCP.
pub const DEFAULT_HBA: &str = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";

/// initdb the data directory unless it already holds a cluster. Superuser `postgres`.
pub fn init_cluster(spec: &ClusterSpec) -> Result<bool> {
    if spec.data_dir.join("PG_VERSION").exists() {
        return Ok(false);
    }
    if let Some(parent) = spec.data_dir.parent() {
        fs::create_dir_all(parent)?;
    }
    make_server_dir(&spec.data_dir, 0o700)?;
    let mut cmd = server_command(pg_bin_dir().join("initdb"));
    cmd.arg("-D")
        .arg(&spec.data_dir)
        .args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=peer",
        ])
        .args(["--auth-host=scram-sha-256", "--no-instructions"]);
    run(cmd, "initdb")?;
    let conf = spec.data_dir.join("postgresql.conf");
    let mut f = fs::OpenOptions::new().append(true).open(&conf)?;
    writeln!(f, "\ninclude_if_exists = 'harness.conf'")?;
    Ok(true)
}

fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Write harness.conf, pg_hba.conf, pg_ident.conf for `spec`.
pub fn write_cluster_config(spec: &ClusterSpec) -> Result<()> {
    let mut conf = String::new();
    conf.push_str(&format!("port = {}\n", spec.port));
    conf.push_str("listen_addresses = '127.0.0.1'\n");
    conf.push_str(&format!(
        "unix_socket_directories = {}\n",
        conf_quote(&spec.socket_dir.to_string_lossy())
    ));
    conf.push_str("password_encryption = 'scram-sha-256'\n");
    for (k, v) in &spec.conf {
        conf.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    write_server_file(&spec.data_dir.join("harness.conf"), &conf, 0o600)?;
    write_server_file(
        &spec.data_dir.join("pg_hba.conf"),
        spec.hba.as_deref().unwrap_or(DEFAULT_HBA),
        0o600,
    )?;
    write_server_file(
        &spec.data_dir.join("pg_ident.conf"),
        spec.ident.as_deref().unwrap_or(""),
        0o600,
    )?;
    Ok(())
}

/// True when `pg_ctl status` says a postmaster runs on this data directory.
pub fn cluster_running(data_dir: &Path) -> bool {
    if !data_dir.join("postmaster.pid").exists() {
        return false;
    }
    let mut cmd = server_command(pg_bin_dir().join("pg_ctl"));
    cmd.arg("status").arg("-D").arg(data_dir);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    matches!(cmd.status(), Ok(s) if s.success())
}

/// Write the config and start the cluster (waits until it accepts connections). No-op when it
/// already runs. A stale postmaster.pid left by a crash is handled by PostgreSQL itself.
pub fn start_cluster(spec: &ClusterSpec) -> Result<bool> {
    start_with(spec, true)
}

/// [`start_cluster`] without waiting for connections: for a cluster that starts by recovering
/// from an archive for as long as that takes, which the caller watches itself.
pub fn start_cluster_no_wait(spec: &ClusterSpec) -> Result<bool> {
    start_with(spec, false)
}

fn start_with(spec: &ClusterSpec, wait: bool) -> Result<bool> {
    write_cluster_config(spec)?;
    if cluster_running(&spec.data_dir) {
        return Ok(false);
    }
    if let Some(dir) = spec.log_file.parent() {
        if !dir.exists() {
            make_server_dir(dir, 0o700)?;
        }
    }
    let mut cmd = server_command(pg_bin_dir().join("pg_ctl"));
    cmd.arg("start");
    if wait {
        cmd.arg("-w").args(["-t", "60"]);
    } else {
        cmd.arg("-W");
    }
    cmd.arg("-D")
        .arg(&spec.data_dir)
        .arg("-l")
        .arg(&spec.log_file)
        .stdout(Stdio::null());
    if let Err(e) = run(cmd, "pg_ctl start") {
        let log = fs::read_to_string(&spec.log_file).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return err(format!("{e}\nserver log:\n{tail}"));
    }
    Ok(true)
}

/// Reload the configuration of a running cluster (after [`write_cluster_config`]).
pub fn reload_cluster(data_dir: &Path) -> Result<()> {
    let mut cmd = server_command(pg_bin_dir().join("pg_ctl"));
    cmd.arg("reload").arg("-D").arg(data_dir);
    run(cmd, "pg_ctl reload").map(|_| ())
}

/// Stop the cluster (fast mode). No-op when it does not run.
pub fn stop_cluster(data_dir: &Path) -> Result<bool> {
    stop_with(data_dir, "fast")
}

/// Stop the cluster at once (immediate mode: no checkpoint, the next start recovers), for a
/// throwaway cluster whose data is deleted next. No-op when it does not run.
pub fn stop_cluster_immediate(data_dir: &Path) -> Result<bool> {
    stop_with(data_dir, "immediate")
}

fn stop_with(data_dir: &Path, mode: &str) -> Result<bool> {
    if !cluster_running(data_dir) {
        return Ok(false);
    }
    let mut cmd = server_command(pg_bin_dir().join("pg_ctl"));
    cmd.arg("stop")
        .args(["-m", mode, "-w", "-t", "60"])
        .arg("-D")
        .arg(data_dir)
        .stdout(Stdio::null());
    run(cmd, "pg_ctl stop").map(|_| true)
}

/// Builder for [`PgCluster`].
#[derive(Clone, Debug, Default)]
pub struct PgClusterBuilder {
    conf: Vec<(String, String)>,
    hba: Option<String>,
    ident: Option<String>,
    keep: bool,
}

impl PgClusterBuilder {
    /// Add a `postgresql.conf` setting (e.g. `("log_statement", "all")`).
    pub fn conf(mut self, key: &str, value: &str) -> Self {
        self.conf.push((key.into(), value.into()));
        self
    }
    /// Replace pg_hba.conf.
    pub fn hba(mut self, hba: &str) -> Self {
        self.hba = Some(hba.into());
        self
    }
    /// Replace pg_ident.conf.
    pub fn ident(mut self, ident: &str) -> Self {
        self.ident = Some(ident.into());
        self
    }
    /// Keep the directory after drop (for debugging); also via `PG_HARNESS_KEEP=1`.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }
    /// initdb + start on a free loopback port in a fresh temporary directory.
    pub fn start(self) -> Result<PgCluster> {
        let root = temp_dir("pg-harness")?;
        let socket_dir = root.join("run");
        make_server_dir(&socket_dir, 0o755)?;
        let spec = ClusterSpec {
            data_dir: root.join("data"),
            socket_dir,
            port: 0,
            log_file: root.join("log").join("postgresql.log"),
            conf: self.conf,
            hba: self.hba,
            ident: self.ident,
        };
        make_server_dir(&root.join("log"), 0o755)?;
        let mut cluster = PgCluster {
            root,
            spec,
            keep: self.keep || std::env::var_os("PG_HARNESS_KEEP").is_some(),
            stopped: false,
        };
        init_cluster(&cluster.spec)?;
        // Retry on a port race with another process.
        let mut last = None;
        for _ in 0..5 {
            cluster.spec.port = free_port();
            match start_cluster(&cluster.spec) {
                Ok(_) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }
}

/// A throwaway PostgreSQL cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    spec: ClusterSpec,
    keep: bool,
    stopped: bool,
}

impl PgCluster {
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }
    /// Start with the defaults (trust over the socket, SCRAM over TCP).
    pub fn start() -> Result<PgCluster> {
        Self::builder().start()
    }
    pub fn port(&self) -> u16 {
        self.spec.port
    }
    pub fn socket_dir(&self) -> &Path {
        &self.spec.socket_dir
    }
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn log_file(&self) -> &Path {
        &self.spec.log_file
    }
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }
    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.spec.log_file).unwrap_or_default()
    }
    /// Socket connection string for `user` on `db` (key/value form).
    pub fn conn_string(&self, user: &str, db: &str) -> String {
        self.spec.conn_string(user, db)
    }
    /// Stop the server (the directory stays until drop).
    pub fn stop(&mut self) -> Result<()> {
        self.stopped = true;
        stop_cluster(&self.spec.data_dir).map(|_| ())
    }
    /// Start again after [`PgCluster::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.stopped = false;
        start_cluster(&self.spec).map(|_| ())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = stop_cluster(&self.spec.data_dir);
        if !self.keep {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
