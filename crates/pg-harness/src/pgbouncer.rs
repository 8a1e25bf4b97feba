//! PgBouncer: the executable and its version, the usual ini, the free functions on a directory
//! you own, and [`PgBouncer`] (a throwaway one for tests).

use crate::{
    err, free_port, make_server_dir, run, server_command_with_many_files, temp_dir,
    write_server_file,
};
use crate::{Error, Result};
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    let mut cmd = server_command_with_many_files(pgbouncer_bin());
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

/// Make a running PgBouncer read its ini again (SIGHUP), TLS files included. No-op when it
/// does not run.
pub fn reload_pgbouncer(spec: &PgBouncerSpec) -> Result<bool> {
    match read_pid(&spec.pid_path()) {
        Some(pid) if pid_alive(pid) => {
            // SAFETY: sending a signal to a pid we read from our own pid file.
            if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
                return err(format!(
                    "pgbouncer reload: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(true)
        }
        _ => Ok(false),
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
