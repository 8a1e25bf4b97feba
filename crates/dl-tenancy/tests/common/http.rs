//! Helpers of the HTTP API tests: one local cluster (PostgreSQL + PgBouncer, via the
//! library's `local::up`) per test process, `dl-tenancy serve` processes on loopback, an HTTP
//! client, and a checker of responses against openapi.json.
//!
//! The cluster and the servers are stopped and removed when the test process exits
//! (`atexit`), whatever the outcome of the tests.

use dl_tenancy_ctl::local;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dl-tenancy");

use super::SAFETY_NET;

/// The shared local cluster of this test process.
pub struct Cluster {
    pub data_dir: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static DATA_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn cleanup_at_exit() {
    let pids: Vec<u32> = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        // SAFETY: kill(2) on a child we spawned.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    if let Some(dir) = DATA_DIR.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = local::down(&dir);
        if std::env::var_os("DL_TENANCY_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The cluster (started on first use: `local up` in a temporary directory on free ports).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir = pg_harness::temp_dir("dl-tenancy-http").expect("temp dir");
        *DATA_DIR.lock().unwrap() = Some(dir.clone());
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        let pg_port = pg_harness::free_port();
        let mut pooler_port = pg_harness::free_port();
        while pooler_port == pg_port {
            pooler_port = pg_harness::free_port();
        }
        local::up(&local::LocalOptions {
            data_dir: dir.clone(),
            pg_port: Some(pg_port),
            pooler_port: Some(pooler_port),
            direct_port: Some(pg_harness::free_port()),
            max_connections: None,
            retention_full: None,
        })
        .unwrap_or_else(|e| {
            panic!("local up failed (is the extension installed? scripts/install-extension): {e}")
        });
        Cluster { data_dir: dir }
    })
}

impl Cluster {
    /// Run the CLI; its JSON stdout on success, panics otherwise.
    pub fn cli(&self, args: &[&str]) -> Value {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let (code, out, err) = self.cli_raw(args, env);
        assert_eq!(code, 0, "dl-tenancy {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout of {args:?}: {e}: {out}"))
    }

    /// Exit code, stdout, stderr.
    pub fn cli_raw(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("DL_TENANCY_ADMIN_URL")
            .output()
            .expect("run dl-tenancy");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `tokens create --workspace ws`: (token, token_id).
    pub fn token(&self, ws: &str) -> (String, String) {
        let v = self.cli(&["tokens", "create", "--workspace", ws]);
        assert_eq!(v["workspace"], ws);
        (
            v["token"].as_str().unwrap().to_string(),
            v["token_id"].as_str().unwrap().to_string(),
        )
    }

    /// A superuser connection to a database of the cluster (unix socket).
    pub fn admin(&self, db: &str) -> postgres::Client {
        let st = local::LocalState::read(&self.data_dir).unwrap();
        postgres::Client::connect(&st.admin_conn_string(&self.data_dir, db), postgres::NoTls)
            .unwrap()
    }
}

/// A running `dl-tenancy serve`.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub base: String,
    /// `http://ADDR` of its metrics listener, when started with `--metrics-listen`.
    pub metrics: Option<String>,
    /// Its stderr (JSON log lines), collected by a thread.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// A client of this server with a new token for `ws` (made by the cluster's CLI).
    pub fn api_for(&self, ws: &str) -> Api {
        let (token, _) = cluster().token(ws);
        Api::new(&self.base, Some(&token))
    }

    /// Start a server on a free port of the shared cluster with extra `serve` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_log_level(extra, "info")
    }

    /// With `DL_TENANCY_LOG=level`.
    pub fn start_with_log_level(extra: &[&str], level: &str) -> Server {
        let c = cluster();
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&c.data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("DL_TENANCY_ADMIN_URL")
            .env("DL_TENANCY_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dl-tenancy serve");
        CHILDREN.lock().unwrap().push(child.id());
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let v: Value = serde_json::from_str(first.trim()).unwrap_or_else(|e| {
            panic!(
                "serve did not print its address ({e}): {first:?}; log: {:?}",
                log.lock().unwrap()
            )
        });
        let addr = v["listening"].as_str().unwrap().to_string();
        Server {
            child,
            base: format!("http://{addr}"),
            metrics: v["metrics"].as_str().map(|m| format!("http://{m}")),
            addr,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until a log line satisfies `pred` (`what` names it). Panics after [`SAFETY_NET`]:
    /// a guard against a hang, not a speed limit.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let t0 = Instant::now();
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| pred(&v))
            {
                return;
            }
            assert!(
                t0.elapsed() < SAFETY_NET,
                "waited {SAFETY_NET:?} for a log line ({what}); log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then wait for the exit status. Panics after [`SAFETY_NET`] (a guard against a
    /// hang, not a speed limit).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed() < SAFETY_NET,
                "waited {SAFETY_NET:?} for the server to exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The server most tests share (default options: rate limit 20/min per token).
pub fn shared_server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start(&[]))
}

/// A tokio runtime for the HTTP client (tests themselves are synchronous, so that the sync
/// `postgres` client can be used directly).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A response: status, headers, body text and the body as JSON (Null if not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The error code of a JSON error body.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// An HTTP client on one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
    /// Headers sent with every request (see [`Api::with_headers`]).
    pub headers: Vec<(String, String)>,
}

pub enum Body<'a> {
    None,
    Json(Value),
    Raw(&'a [u8]),
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            token: token.map(str::to_string),
            headers: vec![],
        }
    }

    /// This client connecting from another loopback address (`127.0.0.2`, say): the API
    /// budgets some things per client address.
    #[allow(clippy::wrong_self_convention)]
    pub fn bound_to(&self, local: std::net::IpAddr) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .local_address(local)
                .build()
                .unwrap(),
            ..self.clone()
        }
    }

    /// This client sending `headers` as well with every request.
    pub fn with_headers(&self, headers: &[(&str, &str)]) -> Api {
        let mut api = self.clone();
        api.headers
            .extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        api
    }

    pub async fn send_async(&self, method: &str, path: &str, body: Body<'_>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.client.request(m, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            rb = rb.header(k, v);
        }
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(&v),
            Body::Raw(b) => rb.body(b.to_vec()),
        };
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn send(&self, method: &str, path: &str, body: Body<'_>) -> Resp {
        rt().block_on(self.send_async(method, path, body))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send("GET", path, Body::None)
    }

    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.send("POST", path, Body::Json(body))
    }
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document and a validator for the subset of JSON Schema it uses.

pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        // The HTTP front's document (crates/dl-tenancy-http/openapi.json, the one it serves).
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dl-tenancy-http/openapi.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    })
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("local $ref");
            resolve(
                doc,
                doc.pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => schema,
    }
}

/// Errors of `value` against an OpenAPI 3.0 schema (type, nullable, enum, properties,
/// required, additionalProperties, items, minimum/maximum, pattern-free strings, allOf).
pub fn schema_errors(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut errs = vec![];
    if value.is_null() {
        if schema["nullable"] == Value::Bool(true) || schema.get("type").is_none() {
            return errs;
        }
        errs.push(format!("{at}: null but not nullable"));
        return errs;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            errs.extend(schema_errors(doc, s, value, at));
        }
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => panic!("unknown type {t}"),
        };
        if !ok {
            errs.push(format!("{at}: expected {t}, got {value}"));
            return errs;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errs.push(format!("{at}: {value} not in {e:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                errs.push(format!("{at}: {n} < {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                errs.push(format!("{at}: {n} > {max}"));
            }
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req {
                if !obj.contains_key(r.as_str().unwrap()) {
                    errs.push(format!("{at}: missing required {r}"));
                }
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            if obj.len() as u64 > max {
                errs.push(format!("{at}: more than {max} properties"));
            }
        }
        for (k, v) in obj {
            let sub = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => errs.extend(schema_errors(doc, s, v, &sub)),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{sub}: not allowed")),
                    Some(s @ Value::Object(_)) => errs.extend(schema_errors(doc, s, v, &sub)),
                    _ => {}
                },
            }
        }
    }
    if let (Some(arr), Some(items)) = (value.as_array(), schema.get("items")) {
        for (i, v) in arr.iter().enumerate() {
            errs.extend(schema_errors(doc, items, v, &format!("{at}[{i}]")));
        }
    }
    errs
}

/// The response conforms to the document: its status is documented for the operation
/// (unknown routes: 404 and wrong methods: 405, both with the Error body), its body matches
/// the documented schema, and documented required headers are present.
pub fn check(method: &str, path: &str, r: &Resp) {
    let doc = openapi();
    let op = doc["paths"]
        .get(path)
        .and_then(|p| p.get(method.to_ascii_lowercase()));
    let (schema, headers) = match op {
        Some(op) => {
            let resp = op["responses"]
                .get(r.status.to_string())
                .unwrap_or_else(|| {
                    panic!(
                        "{method} {path}: status {} is not documented; body {}",
                        r.status, r.text
                    )
                });
            (
                resp["content"]["application/json"]["schema"].clone(),
                resp.get("headers").cloned(),
            )
        }
        None => {
            assert!(
                r.status == 404 || r.status == 405,
                "{method} {path} is not an operation but answered {}",
                r.status
            );
            (
                serde_json::json!({"$ref": "#/components/schemas/Error"}),
                None,
            )
        }
    };
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{method} {path}: content-type {:?}",
        r.header("content-type")
    );
    let errs = schema_errors(doc, &schema, &r.json, "$");
    assert!(
        errs.is_empty(),
        "{method} {path} {}: body does not match the document: {errs:?}\n{}",
        r.status,
        r.text
    );
    if let Some(Value::Object(hs)) = headers {
        for (name, h) in hs {
            if h["required"] == Value::Bool(true) {
                assert!(
                    r.header(&name).is_some(),
                    "{method} {path} {}: header {name} missing",
                    r.status
                );
            }
        }
    }
}

/// p-th percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
