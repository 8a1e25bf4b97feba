//! Start and stop PostgreSQL clusters and PgBouncers from Rust.
//!
//! Two layers:
//! - free functions ([`init_cluster`], [`start_cluster`], [`stop_cluster`], [`start_pgbouncer`],
//!   [`stop_pgbouncer`], ...) that operate on a directory you own and leave the servers running
//!   (the `dl-tenancy local` cluster uses these);
//! - [`PgCluster`] and [`PgBouncer`]: throwaway servers in a temporary directory on free loopback
//!   ports, stopped and deleted on `Drop` (for tests).
//!
//! PostgreSQL refuses to run as root. When the current process is root, every server command
//! runs as the `postgres` OS user (`runuser -u postgres --`) and the directories the servers need
//! are chowned to it. Otherwise the servers run as the current user.
//!
//! ```no_run
//! use pg_harness::{pgbouncer_ini, PgBouncer, PgBouncerIni, PgCluster};
//!
//! let pg = PgCluster::builder().conf("log_statement", "all").start().unwrap();
//! // Superuser over the unix socket (trust); SCRAM over TCP on 127.0.0.1:pg.port().
//! let conn = pg.conn_string("postgres", "postgres");
//! let bouncer = PgBouncer::start(|port, dir| {
//!     let ini = pgbouncer_ini(&PgBouncerIni {
//!         dir,
//!         listen_port: port,
//!         server_socket_dir: pg.socket_dir(),
//!         server_port: pg.port(),
//!         auth_type: "trust",
//!         auth_user: None,
//!         auth_query: None,
//!         pool_mode: "session",
//!         extra: &[],
//!     });
//!     (ini, "\"postgres\" \"\"\n".to_string())
//! })
//! .unwrap();
//! # let _ = (conn, bouncer.port(), pg.log());
//! // Both are stopped and their directories removed when dropped.
//! ```
//!
//! The PostgreSQL binaries are taken from `$PG_BIN_DIR`, else `pg_config --bindir` of
//! `$PG_CONFIG`, else `/usr/lib/postgresql/15/bin`. PgBouncer from `$PGBOUNCER`, else
//! `/usr/sbin/pgbouncer`, else `pgbouncer` on `$PATH`.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Errors from the harness: a message that says which command failed and its output.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

/// The OS user the servers run as: `Some("postgres")` when we are root, `None` (= us) otherwise.
pub fn server_os_user() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Some("postgres")
    } else {
        None
    }
}

/// Name of the OS user the servers run as (for pg_ident maps).
pub fn server_os_user_name() -> String {
    match server_os_user() {
        Some(u) => u.to_string(),
        None => current_os_user_name(),
    }
}

/// Name of the OS user running this process.
pub fn current_os_user_name() -> String {
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy the name at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

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

/// The pgbouncer executable: `$PGBOUNCER`, else the one scripts/setup builds
/// (/usr/local/bin, 1.21+), else Debian's, else whatever `pgbouncer` is on the PATH.
pub fn pgbouncer_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PGBOUNCER") {
        return PathBuf::from(p);
    }
    ["/usr/local/bin/pgbouncer", "/usr/sbin/pgbouncer"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pgbouncer"))
}

/// `(major, minor)` of a pgbouncer executable (`pgbouncer --version`: "PgBouncer 1.24.1").
pub fn pgbouncer_version(bin: &Path) -> Result<(u32, u32)> {
    let out = run(
        {
            let mut c = Command::new(bin);
            c.arg("--version");
            c
        },
        "pgbouncer --version",
    )?;
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("PgBouncer "))
        .ok_or_else(|| Error(format!("{}: no version in {out:?}", bin.display())))?;
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => Err(Error(format!(
            "{}: unreadable version {version:?}",
            bin.display()
        ))),
    }
}

static PORT_LOCK: Mutex<()> = Mutex::new(());
static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A loopback TCP port that is free right now (and not handed out before by this process).
pub fn free_port() -> u16 {
    let _g = PORT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Spread processes apart so parallel test binaries rarely race for the same port.
    let n = PORT_COUNTER.fetch_add(1, Ordering::SeqCst);
    let base = 20000 + ((std::process::id() * 97 + n * 7919) % 30000);
    for i in 0..30000u32 {
        let port = (20000 + (base - 20000 + i * 13) % 30000) as u16;
        if port_is_free(port) {
            PORT_COUNTER.fetch_add(1, Ordering::SeqCst);
            return port;
        }
    }
    // Fall back to the kernel's choice.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// True when nothing listens on 127.0.0.1:port and we can bind it.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(50),
        )
        .is_err()
}

/// Give `path` to the server OS user (no-op when not root).
pub fn chown_to_server_user(path: &Path) -> Result<()> {
    if let Some(user) = server_os_user() {
        let (uid, gid) = os_user_ids(user)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error(format!("chown {}: {e}", path.display())))?;
    }
    Ok(())
}

fn os_user_ids(user: &str) -> Result<(u32, u32)> {
    let c = std::ffi::CString::new(user).unwrap();
    // SAFETY: getpwnam returns static storage or null; we read two integers at once.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            return err(format!("OS user {user:?} does not exist"));
        }
        Ok(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A `Command` that runs `program` as the server OS user.
pub fn server_command(program: impl AsRef<OsStr>) -> Command {
    match server_os_user() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program.as_ref());
            c.current_dir("/");
            c
        }
        None => Command::new(program),
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Create a directory (and parents) owned by the server user with the given mode.
pub fn make_server_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error(format!("mkdir {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_to_server_user(path)
}

/// Write a file readable by the server user.
pub fn write_server_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut f =
        fs::File::create(path).map_err(|e| Error(format!("write {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_to_server_user(path)
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
    cmd.arg("start")
        .arg("-w")
        .args(["-t", "60"])
        .arg("-D")
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
    if !cluster_running(data_dir) {
        return Ok(false);
    }
    let mut cmd = server_command(pg_bin_dir().join("pg_ctl"));
    cmd.arg("stop")
        .args(["-m", "fast", "-w", "-t", "60"])
        .arg("-D")
        .arg(data_dir)
        .stdout(Stdio::null());
    run(cmd, "pg_ctl stop").map(|_| true)
}

/// Where and how a PgBouncer runs: `dir` holds `pgbouncer.ini`, the pid and log files.
#[derive(Clone, Debug)]
pub struct PgBouncerSpec {
    pub dir: PathBuf,
    pub listen_port: u16,
    /// Full ini text; see [`pgbouncer_ini`] for the usual one.
    pub ini: String,
    /// Contents of `userlist.txt` (the ini should reference it as `auth_file`).
    pub userlist: String,
}

impl PgBouncerSpec {
    pub fn ini_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.pid")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }
    pub fn userlist_path(&self) -> PathBuf {
        self.dir.join("userlist.txt")
    }
}

/// Options for [`pgbouncer_ini`].
#[derive(Clone, Debug)]
pub struct PgBouncerIni<'a> {
    pub dir: &'a Path,
    pub listen_port: u16,
    pub server_socket_dir: &'a Path,
    pub server_port: u16,
    pub auth_type: &'a str,
    pub auth_user: Option<&'a str>,
    pub auth_query: Option<&'a str>,
    pub pool_mode: &'a str,
    pub extra: &'a [(&'a str, &'a str)],
}

/// An ini that forwards every database (`* =`) to the cluster's unix socket.
pub fn pgbouncer_ini(o: &PgBouncerIni<'_>) -> String {
    let mut s = String::new();
    s.push_str("[databases]\n");
    s.push_str(&format!(
        "* = host={} port={}\n\n",
        o.server_socket_dir.display(),
        o.server_port
    ));
    s.push_str("[pgbouncer]\n");
    s.push_str("listen_addr = 127.0.0.1\n");
    s.push_str(&format!("listen_port = {}\n", o.listen_port));
    s.push_str("unix_socket_dir =\n");
    s.push_str(&format!("auth_type = {}\n", o.auth_type));
    s.push_str(&format!(
        "auth_file = {}\n",
        o.dir.join("userlist.txt").display()
    ));
    if let Some(u) = o.auth_user {
        s.push_str(&format!("auth_user = {u}\n"));
    }
    if let Some(q) = o.auth_query {
        s.push_str(&format!("auth_query = {q}\n"));
    }
    s.push_str(&format!("pool_mode = {}\n", o.pool_mode));
    s.push_str(&format!(
        "logfile = {}\n",
        o.dir.join("pgbouncer.log").display()
    ));
    s.push_str(&format!(
        "pidfile = {}\n",
        o.dir.join("pgbouncer.pid").display()
    ));
    // Defaults the caller's `extra` may replace.
    for (k, v) in [("max_client_conn", "500"), ("default_pool_size", "10")] {
        if !o.extra.iter().any(|(key, _)| *key == k) {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    s.push_str("ignore_startup_parameters = extra_float_digits\n");
    for (k, v) in o.extra {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // A zombie (killed, not yet reaped) is dead for our purposes.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// True when the pid file names a live process.
pub fn pgbouncer_running(spec: &PgBouncerSpec) -> bool {
    read_pid(&spec.pid_path()).is_some_and(pid_alive)
}

/// Write the ini and userlist and start PgBouncer as a daemon (waits until it listens).
/// No-op when it already runs; a stale pid file is removed first.
pub fn start_pgbouncer(spec: &PgBouncerSpec) -> Result<bool> {
    if !spec.dir.exists() {
        make_server_dir(&spec.dir, 0o700)?;
    }
    write_server_file(&spec.ini_path(), &spec.ini, 0o600)?;
    write_server_file(&spec.userlist_path(), &spec.userlist, 0o600)?;
    if pgbouncer_running(spec) {
        return Ok(false);
    }
    let _ = fs::remove_file(spec.pid_path());
    let mut cmd = server_command(pgbouncer_bin());
    cmd.arg("-d").arg(spec.ini_path());
    run(cmd, "pgbouncer")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, spec.listen_port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(true);
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(spec.log_path()).unwrap_or_default();
            return err(format!("pgbouncer did not start listening; log:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop PgBouncer (SIGINT = safe shutdown is slow with clients; SIGTERM = immediate).
pub fn stop_pgbouncer(spec: &PgBouncerSpec) -> Result<bool> {
    let Some(pid) = read_pid(&spec.pid_path()) else {
        return Ok(false);
    };
    if !pid_alive(pid) {
        let _ = fs::remove_file(spec.pid_path());
        return Ok(false);
    }
    // SAFETY: sending a signal to a pid we read from our own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_file(spec.pid_path());
    Ok(true)
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh temporary directory (0711, owned by us; subdirectories go to the server user).
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let base = std::env::var_os("PG_HARNESS_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for _ in 0..100 {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = base.join(format!(
            "{prefix}-{}-{n}-{:x}",
            std::process::id(),
            nanos % 0xfffff
        ));
        match fs::create_dir(&p) {
            Ok(()) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o711))?;
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    err("cannot create a temporary directory")
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

/// A throwaway PgBouncer in front of a cluster's unix socket; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgBouncer {
    root: PathBuf,
    spec: PgBouncerSpec,
}

impl PgBouncer {
    /// Start a PgBouncer on a free port. `configure` gets the port and the directory and
    /// returns the full ini and userlist (see [`pgbouncer_ini`]).
    pub fn start(configure: impl Fn(u16, &Path) -> (String, String)) -> Result<PgBouncer> {
        let root = temp_dir("pgbouncer-harness")?;
        let dir = root.join("pgbouncer");
        make_server_dir(&dir, 0o700)?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let (ini, userlist) = configure(port, &dir);
            let spec = PgBouncerSpec {
                dir: dir.clone(),
                listen_port: port,
                ini,
                userlist,
            };
            match start_pgbouncer(&spec) {
                Ok(_) => return Ok(PgBouncer { root, spec }),
                Err(e) => {
                    let _ = stop_pgbouncer(&spec);
                    last = Some(e)
                }
            }
        }
        let _ = fs::remove_dir_all(&root);
        Err(last.unwrap())
    }
    pub fn port(&self) -> u16 {
        self.spec.listen_port
    }
    pub fn spec(&self) -> &PgBouncerSpec {
        &self.spec
    }
    pub fn log(&self) -> String {
        fs::read_to_string(self.spec.log_path()).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = stop_pgbouncer(&self.spec);
        if std::env::var_os("PG_HARNESS_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
