//! The one test-support module of this crate's tests (`http` holds the HTTP API's part).
//! Shared test setup: a local cluster + PgBouncer (via `dl_tenancy_ctl::local::up`, which uses
//! pg-harness) in a temporary directory on free loopback ports, torn down on drop.

#![allow(dead_code)]

pub mod http;

use dl_tenancy_ctl::{local, Config, Kind, Tenancy};
use postgres::{Client, NoTls};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The longest a test waits for a state it expects to observe. Only a safety net against a
/// hang: order is established by the observed state, never by how long something takes.
pub const SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether this run is CI (`CI=true`): there, a missing tool or dependency fails the test
/// instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test that cannot run here: under CI a failure, elsewhere a loud skip (the test passes).
pub fn skip_or_fail(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "{test} cannot run: {why} (CI=true: a missing tool or dependency is a failure)"
    );
    eprintln!(
        "\n{bar}\nSKIPPED {test}: {why}\nThis test did NOT run; with CI=true it fails instead.\n{bar}\n",
        bar = "!".repeat(78)
    );
}

/// The hostile tests' tenant, and its neighbour on the same server.
pub const ATTACKER: &str = "mallory";
pub const NEIGHBOUR: &str = "alice";

pub struct Env {
    pub dir: PathBuf,
    pub status: local::LocalStatus,
    pub t: Tenancy,
}

impl Env {
    pub fn new() -> Env {
        let dir = pg_harness::temp_dir("dl-tenancy-test").unwrap();
        let mut last = None;
        for _ in 0..3 {
            let pg = pg_harness::free_port();
            let mut pool = pg_harness::free_port();
            while pool == pg {
                pool = pg_harness::free_port();
            }
            match local::up(&local::LocalOptions {
                data_dir: dir.clone(),
                pg_port: Some(pg),
                pooler_port: Some(pool),
                direct_port: Some(pg_harness::free_port()),
                max_connections: None,
                retention_full: None,
            }) {
                Ok(status) => {
                    let t = Tenancy::open(&Config {
                        data_dir: dir.clone(),
                        admin_url: None,
                    })
                    .unwrap();
                    return Env { dir, status, t };
                }
                Err(e) => {
                    let _ = local::down(&dir);
                    last = Some(e)
                }
            }
        }
        panic!("local up failed: {:?}", last);
    }

    /// A fresh environment with the hostile tests' two workspaces provisioned, [`ATTACKER`]'s
    /// and [`NEIGHBOUR`]'s.
    pub fn with_attacker_and_neighbour() -> Env {
        let env = Env::new();
        env.t.provision(ATTACKER).unwrap();
        env.t.provision(NEIGHBOUR).unwrap();
        env
    }

    /// Runs `sql` as the tenant does, through the workspace's direct override login.
    pub fn run_as_override(&self, ws: &str, sql: &str) {
        connect(&self.uri(ws, Kind::Override, false))
            .unwrap()
            .batch_execute(sql)
            .unwrap();
    }

    /// The workspace serves: its read query runs through its read URI.
    pub fn assert_reads(&self, ws: &str, pooled: bool) {
        connect(&self.uri(ws, Kind::Read, pooled))
            .unwrap()
            .batch_execute(READ_QUERY)
            .unwrap();
    }

    /// Superuser connection over the socket.
    pub fn admin(&self, db: &str) -> Client {
        postgres::Config::new()
            .host_path(self.dir.join("run"))
            .port(self.status.postgres.port)
            .user("postgres")
            .dbname(db)
            .connect(NoTls)
            .unwrap()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.status.postgres.log).unwrap_or_default()
    }

    /// The workspace's database (an opaque name: `dlw_<handle>`).
    pub fn database(&self, ws: &str) -> String {
        self.t
            .status(ws)
            .unwrap()
            .database
            .expect("a provisioned workspace")
    }

    /// A superuser connection to the workspace's database.
    pub fn admin_ws(&self, ws: &str) -> Client {
        self.admin(&self.database(ws))
    }

    pub fn uri(&self, ws: &str, kind: Kind, pooled: bool) -> String {
        self.t.reveal(ws, kind, pooled).unwrap().uri
    }

    /// Run the CLI against this environment's data directory.
    pub fn cli(&self, args: &[&str]) -> CliOut {
        cli_in(&self.dir, args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliOut {
        cli_in(&self.dir, args, env)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = local::down(&self.dir);
        if std::env::var_os("PG_HARNESS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug)]
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    pub fn json(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
    /// The `error.code` of the JSON error on stderr (asserts a failure with empty stdout).
    pub fn error_code(&self) -> String {
        assert_ne!(self.code, 0, "expected a failure, got {}", self.stdout);
        assert!(
            self.stdout.trim().is_empty(),
            "stdout on failure: {}",
            self.stdout
        );
        let v: Value = serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", self.stderr));
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().unwrap().to_string()
    }
}

pub fn cli_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOut {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dl-tenancy"));
    cmd.args(args)
        .env("DL_TENANCY_DATA_DIR", dir)
        .env_remove("DL_TENANCY_ADMIN_URL")
        .env_remove("DL_TENANCY_SECRET_KEY")
        .env_remove("DL_TENANCY_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    CliOut {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Connect with a revealed URI, with TLS as its `sslmode`/`sslrootcert` say (the library's
/// connector; the `postgres` crate's error is kept for its SQLSTATE).
pub fn connect(uri: &str) -> Result<Client, postgres::Error> {
    let (cfg, tls) = dl_tenancy_ctl::connection::client_config(uri).unwrap();
    cfg.connect(tls)
}

pub fn sqlstate(e: &postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The login of a revealed URI, `postgresql://login:password@host:port/db?...`.
pub fn login_of(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    rest.split(':').next().unwrap().to_string()
}

/// The password of a revealed URI (percent-encoding aside: ours are URL-safe).
pub fn password_of(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let userinfo = rest.split('@').next().unwrap();
    userinfo.split_once(':').unwrap().1.to_string()
}

/// Replace the database of a URI (its query, `sslmode` and all, stays).
pub fn with_db(uri: &str, db: &str) -> String {
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let i = base.rfind('/').unwrap();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{db}{query}", &base[..i])
}

pub const READ_QUERY: &str = include_str!("../../../../tests/seed/read_query.sql");

pub const UPSERT: &str = include_str!("../../../../tests/seed/override_upsert.sql");

pub const CUSTOM_TABLE: &str = include_str!("../../../../tests/seed/custom_table.sql");

/// The seed's upsert with parameters as the seed's node `pg` client sends them: one unnamed
/// prepared statement (works through PgBouncer in transaction mode).
pub fn upsert(c: &mut Client, key: &str, status: &str) -> Result<u64, postgres::Error> {
    use postgres::types::Type;
    let patch = r#"{"name":"Ada"}"#;
    let raw = r#"{"source":"test"}"#;
    c.query_typed(
        UPSERT,
        &[
            (&key, Type::TEXT),
            (&status, Type::TEXT),
            (&patch, Type::TEXT),
            (&raw, Type::TEXT),
        ],
    )
    .map(|r| r.len() as u64)
}

/// Database names on the cluster.
pub fn databases(admin: &mut Client) -> Vec<String> {
    admin
        .query("SELECT datname FROM pg_database ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The one bigint a query returns (a `count(*)`).
pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The first column of every row a query returns, as text.
pub fn strings(c: &mut Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The columns of `tenant_custom.<table>`, in order.
pub fn columns(c: &mut Client, table: &str) -> Vec<String> {
    c.query(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'tenant_custom' AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

pub fn role_exists(admin: &mut Client, role: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .is_some()
}

/// A throwaway cluster (pg-harness) with TLS on: a CA and a server certificate for
/// 127.0.0.1/localhost made by the library's `certs` module in a directory of their own, and
/// over TCP only TLS logins (SCRAM). Both are removed on drop.
pub struct TlsCluster {
    pub pg: pg_harness::PgCluster,
    pub certs: dl_tenancy_ctl::certs::CertFiles,
    cert_dir: PathBuf,
}

/// pg_hba.conf of [`TlsCluster`]: trust on the socket, TCP only with TLS.
pub const TLS_ONLY_HBA: &str = "local all all trust\n\
    hostnossl all all all reject\n\
    hostssl all all 127.0.0.1/32 scram-sha-256\n";

impl TlsCluster {
    /// With `wal_level = logical` (a move can stream off it).
    pub fn start() -> TlsCluster {
        TlsCluster::start_with_wal_level("logical")
    }

    pub fn start_with_wal_level(wal_level: &str) -> TlsCluster {
        let cert_dir = pg_harness::temp_dir("dl-tenancy-certs").unwrap();
        let (certs, made) =
            dl_tenancy_ctl::certs::ensure(&cert_dir.join("tls"), &["localhost", "127.0.0.1"])
                .unwrap();
        assert!(made);
        let mut builder = pg_harness::PgCluster::builder();
        // The extension's watchdog and admission, as `local up` sets them (README: your own
        // servers), for initdb's max_connections (100).
        let settings = dl_tenancy_ctl::fences::watchdog_settings()
            .into_iter()
            .chain(dl_tenancy_ctl::fences::admission_settings(100));
        for (name, value) in settings {
            builder = builder.conf(&name, &value);
        }
        let pg = builder
            .conf("ssl", "on")
            .conf("ssl_cert_file", certs.server_cert.to_str().unwrap())
            .conf("ssl_key_file", certs.server_key.to_str().unwrap())
            .conf("wal_level", wal_level)
            .hba(TLS_ONLY_HBA)
            .start()
            .unwrap();
        TlsCluster {
            pg,
            certs,
            cert_dir,
        }
    }

    /// PgBouncer ini settings that make clients use TLS with this cluster's certificate.
    pub fn pooler_tls_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client_tls_sslmode", "require".into()),
            (
                "client_tls_key_file",
                self.certs.server_key.display().to_string(),
            ),
            (
                "client_tls_cert_file",
                self.certs.server_cert.display().to_string(),
            ),
            (
                "client_tls_ca_file",
                self.certs.ca_cert.display().to_string(),
            ),
        ]
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cert_dir);
    }
}

/// A CA nobody's server certificate comes from (with its directory, to remove).
pub fn foreign_ca() -> (PathBuf, PathBuf) {
    let dir = pg_harness::temp_dir("dl-tenancy-foreign-ca").unwrap();
    let (files, _) = dl_tenancy_ctl::certs::ensure(&dir.join("tls"), &["127.0.0.1"]).unwrap();
    (files.ca_cert, dir)
}

/// A URI with `sslmode` set to `mode` and `sslrootcert` to `rootcert` (or none).
pub fn with_tls(uri: &str, mode: &str, rootcert: Option<&Path>) -> String {
    let base = uri.split_once('?').map_or(uri, |(b, _)| b);
    match rootcert {
        Some(ca) => format!(
            "{base}?sslmode={mode}&sslrootcert={}",
            dl_tenancy_ctl::plan::quote::query_encode(ca.to_str().unwrap())
        ),
        None => format!("{base}?sslmode={mode}"),
    }
}

/// psql, or why it cannot run.
pub fn psql_available() -> Result<(), String> {
    match Command::new("psql").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("psql is not installed (scripts/setup installs it)".into()),
    }
}

/// `cmd` without the variables of our environment whose names start with one of `prefixes`:
/// a test's program sees only what the test gives it.
pub fn without_env<'a>(cmd: &'a mut Command, prefixes: &[&str]) -> &'a mut Command {
    for (k, _) in std::env::vars() {
        if prefixes.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs a test's program: its stdout and stderr, once it has exited 0 (`what`, the exit status
/// and both outputs in the panic otherwise).
pub fn run_ok(cmd: &mut Command, what: &str) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} exited {:?}:\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `psql -X -tA -d <conninfo> -c <command>` with no PG* variables from our environment.
pub fn psql(conninfo: &str, command: &str) -> Output {
    let mut cmd = Command::new("psql");
    without_env(&mut cmd, &["PG"])
        .args([
            "-X",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            command,
        ])
        .env("PGCONNECT_TIMEOUT", "30")
        .output()
        .expect("run psql")
}

/// A second cluster (TLS on, pg-harness) registered as server `second` with its CA (no
/// pooler of its own: the local pooler keeps serving what moves there).
pub fn add_second(env: &Env) -> TlsCluster {
    add_second_with_wal_level(env, "logical")
}

pub fn add_second_with_wal_level(env: &Env, wal_level: &str) -> TlsCluster {
    let second = TlsCluster::start_with_wal_level(wal_level);
    register(env, "second", &second, true);
    second
}

/// Registers `cluster` as server `name`, reached on 127.0.0.1, with its CA (`--ca-file`) or
/// without: `server add`'s JSON.
pub fn register(env: &Env, name: &str, cluster: &TlsCluster, with_ca: bool) -> Value {
    let port = cluster.pg.port().to_string();
    let mut extra = vec!["--host", "127.0.0.1", "--port", &port];
    if with_ca {
        extra.extend(["--ca-file", cluster.certs.ca_cert.to_str().unwrap()]);
    }
    server_add(
        env,
        name,
        &cluster.pg.conn_string("postgres", "postgres"),
        &extra,
    )
    .json()
}

/// `server add --name <name>` with `extra` arguments, the admin URL given in a file
/// (`<name>.url` in the environment's directory): a URL with a password must not be an argument.
pub fn server_add(env: &Env, name: &str, admin_url: &str, extra: &[&str]) -> CliOut {
    let url_file = env.dir.join(format!("{name}.url"));
    std::fs::write(&url_file, admin_url).unwrap();
    let mut args = vec![
        "server",
        "add",
        "--name",
        name,
        "--admin-url-file",
        url_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.cli(&args)
}

/// A tenant's own objects in `tenant_custom`: a table with 40 rows, a view, grants.
pub const CUSTOM_OBJECTS: &str = r#"
    CREATE TABLE tenant_custom.segments (id text PRIMARY KEY, segment text NOT NULL);
    INSERT INTO tenant_custom.segments SELECT 'acct-' || g, 'tier-' || (g % 3) FROM generate_series(1, 40) g;
    CREATE VIEW tenant_custom.enterprise AS SELECT id FROM tenant_custom.segments WHERE segment = 'tier-0';
    GRANT SELECT ON tenant_custom.segments, tenant_custom.enterprise TO dl_tenant_read;
"#;

/// Runs the `install.sh` of a tool test's folder `tests/<folder>` (the tools installed once,
/// from their registries, into a cache): the folder and the cache directory the script prints,
/// or `None` after [`skip_or_fail`] when it failed.
pub fn install_tools(folder: &str, test: &str) -> Option<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let install = Command::new("bash")
        .arg(dir.join("install.sh"))
        .output()
        .unwrap();
    if !install.status.success() {
        skip_or_fail(test, &String::from_utf8_lossy(&install.stderr));
        return None;
    }
    let cache = String::from_utf8_lossy(&install.stdout).trim().to_string();
    Some((dir, cache))
}

/// Overrides `person:0` .. `person:{n - 1}` named `Name {i}` in a workspace, written by its
/// override login: the rows the driver and tool tests read and check.
pub fn seed_named_people(env: &Env, ws: &str, n: usize) {
    env.run_as_override(
        ws,
        &format!(
            "INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
             SELECT 'person:' || i, jsonb_build_object('display_name', 'Name ' || i)
               FROM generate_series(0, {}) i",
            n - 1
        ),
    );
}

/// Raises this process's open-file limit to its hard limit, which must exceed `need`: a
/// test's attacker sockets are its descriptors.
pub fn raise_file_limit(need: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize > need,
        "open-file limit {} too low for the test",
        lim.rlim_cur
    );
}

/// Everything committed on the server so far is in its WAL archive: a switch to a new WAL
/// segment, then the archiver observed past it. Returns the server's time after the switch.
pub fn archived_now(admin: &mut Client) -> String {
    let wal: String = admin
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    let now: String = admin.query_one("SELECT now()::text", &[]).unwrap().get(0);
    let started = std::time::Instant::now();
    loop {
        let r = admin
            .query_one(
                "SELECT coalesce(last_archived_wal >= $1, false), failed_count FROM pg_stat_archiver",
                &[&wal],
            )
            .unwrap();
        if r.get::<_, bool>(0) {
            return now;
        }
        assert!(
            started.elapsed() < SAFETY_NET,
            "WAL segment {wal} not archived after {SAFETY_NET:?} ({} failures)",
            r.get::<_, i64>(1)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
