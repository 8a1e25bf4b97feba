//! Scenario 14: one server, many workspaces (issue 22). The provisioning CLI's own local
//! cluster (`dl-tenancy local up`, PostgreSQL + the patched PgBouncer) with N workspaces:
//! provisioning cost at N against the first ones, a burst of every workspace at once through
//! the pooler, fleet `usage`, a no-op `upgrade --all`, and the HTTP API's status and reveal
//! throughput with `serve`'s CPU per request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dl_tenancy_ctl::{Config, Kind, Tenancy};

use crate::bench::{fail, log, Bench, R};
use crate::report::{median, Scenario, Target};
use crate::scenarios::tool::Tool;

/// How long each client of the burst holds its server connection.
const BURST_QUERY_SECS: f64 = 0.2;
/// Concurrent API clients, and how long each endpoint is driven.
const API_CLIENTS: usize = 20;

pub fn run(b: &Bench) -> R<Scenario> {
    let (n, window, api_secs) = if b.cfg.quick {
        (30, 10, 1)
    } else {
        (1000, 20, 10)
    };
    let mut s = Scenario::new(
        14,
        "One server, many workspaces",
        &format!(
            "The tool's local cluster (`dl-tenancy local up`: max_connections 200, the pooler's budget of \
             server connections for all workspaces 137) with {n} workspaces. Provisioning: one CLI call per \
             workspace, one after the other; cost at {n} = median of the last {window} calls against the \
             first {window}. Burst: every workspace opens one pooled connection (TLS, its read login), all \
             meet at a barrier, then each runs `SELECT pg_sleep({BURST_QUERY_SECS})`; wait = time to the \
             answer minus {BURST_QUERY_SECS} s. Fleet `usage` and a no-op `upgrade --all` (every workspace \
             already current): wall time of the CLI call. API: {API_CLIENTS} clients with keep-alive, each \
             with its own workspace's token, for {api_secs} s per endpoint; serve's CPU per request from \
             /proc (user + system); the baseline is the same serve with `--baseline`, whose status answers \
             from the control database alone."
        ),
    );
    let Some(bin) = b.cfg.dl_tenancy_bin.clone() else {
        s.pending = Some("pending: no dl-tenancy binary given (scripts/bench passes it)".into());
        return Ok(s);
    };
    let dir = pg_harness::temp_dir("dl-bench-many")?;
    let tool = Tool {
        bin: bin.clone(),
        data: dir.join("dt"),
    };
    let result = measure(&mut s, &tool, n, window, api_secs);
    let _ = tool.run(&["local", "down"]);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| s)
}

fn measure(s: &mut Scenario, tool: &Tool, n: usize, window: usize, api_secs: u64) -> R<()> {
    tool.run(&["local", "up"])?;
    log(format!("scenario 14: provisioning {n} workspaces"));
    let names: Vec<String> = (1..=n).map(|i| format!("many-{i:04}")).collect();
    let mut times = Vec::with_capacity(n);
    for ws in &names {
        let (secs, v) = tool.run(&["provision", "--workspace", ws])?;
        if v["status"] != "active" {
            return fail(format!("provision {ws}: status {}", v["status"]));
        }
        times.push(secs);
    }
    let first = s.baseline(
        &format!("provision, workspaces 1-{window}"),
        "s",
        times[..window].to_vec(),
    );
    s.compared(
        &format!("provision, workspaces {}-{n}", n - window + 1),
        "s",
        times[n - window..].to_vec(),
        first,
        Some(Target::at_most(1.5)),
    );

    let t = Tenancy::open(&Config {
        data_dir: tool.data.clone(),
        admin_url: None,
    })?;
    log("scenario 14: the burst");
    let (errors, waits) = burst(&t, &names)?;
    s.absolute(
        &format!("burst of {n}: connects and queries that failed"),
        "count",
        vec![errors as f64],
        Some(Target::at_most(0.0)),
    );
    s.absolute(
        &format!("burst of {n}: median wait"),
        "s",
        vec![percentile(&waits, 0.5)],
        None,
    );
    s.absolute(
        &format!("burst of {n}: p99 wait"),
        "s",
        vec![percentile(&waits, 0.99)],
        Some(Target::at_most(30.0)),
    );

    log("scenario 14: fleet usage and a no-op upgrade --all");
    let mut usage = vec![];
    for _ in 0..3 {
        let (secs, v) = tool.run(&["usage"])?;
        let listed = v["servers"][0]["workspaces"].as_array().map_or(0, Vec::len);
        if listed != n {
            return fail(format!("usage listed {listed} of {n} workspaces"));
        }
        usage.push(secs);
    }
    s.absolute(&format!("fleet usage, {n} workspaces"), "s", usage, None);
    let (secs, v) = tool.run(&["upgrade", "--all"])?;
    if v["already_current"] != n {
        return fail(format!("upgrade --all: {v}"));
    }
    s.absolute(
        &format!("upgrade --all, {n} workspaces already current"),
        "s",
        vec![secs],
        Some(Target::at_most(60.0)),
    );

    log("scenario 14: the API");
    let tokens: Vec<String> = names[..API_CLIENTS.min(n)]
        .iter()
        .map(|ws| dl_tenancy_ctl::tokens::create(&t, ws).map(|i| i.token))
        .collect::<Result<_, _>>()?;
    // The baseline: the same serve, token check and handler, answering status from the
    // control database alone (`serve --baseline`).
    let status = Call::get("/api/v2/tenants/status");
    let baseline = {
        let api = Serve::start(tool, &["--baseline"])?;
        api.drive(&status, &tokens, Duration::from_secs(api_secs))?
    };
    let base_rate = s.baseline(
        "API baseline: status from the control database only, requests per second",
        "req/s",
        vec![baseline.0],
    );
    let base_cpu = s.baseline(
        "API baseline: serve's CPU per request",
        "ms",
        vec![baseline.1],
    );
    let api = Serve::start(tool, &[])?;
    for (label, call) in [
        ("status", Call::get("/api/v2/tenants/status")),
        (
            "reveal",
            Call::post(
                "/api/v2/tenants/connection-uris/reveal",
                r#"{"kind":"read"}"#,
            ),
        ),
    ] {
        let (rate, cpu_ms) = api.drive(&call, &tokens, Duration::from_secs(api_secs))?;
        s.absolute(
            &format!("API {label}: requests per second, {API_CLIENTS} clients"),
            "req/s",
            vec![rate],
            Some(Target::at_least(200.0)),
        );
        s.compared(
            &format!("API {label}: requests per second, against the baseline"),
            "req/s",
            vec![rate],
            base_rate,
            None,
        );
        s.compared(
            &format!("API {label}: serve's CPU per request"),
            "ms",
            vec![cpu_ms],
            base_cpu,
            None,
        );
    }
    Ok(())
}

/// Every workspace's pooled client at once; how many failed, and each success's wait.
fn burst(t: &Tenancy, names: &[String]) -> R<(usize, Vec<f64>)> {
    let uris: Vec<String> = names
        .iter()
        .map(|ws| t.reveal(ws, Kind::Read, true).map(|r| r.uri))
        .collect::<Result<_, _>>()?;
    let barrier = Arc::new(Barrier::new(uris.len() + 1));
    let threads: Vec<_> = uris
        .into_iter()
        .map(|uri| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<f64, String> {
                let client = dl_tenancy_ctl::connection::client_config(&uri)
                    .map_err(|e| e.to_string())
                    .and_then(|(cfg, tls)| cfg.connect(tls).map_err(|e| why("connect", &e)));
                barrier.wait();
                let started = Instant::now();
                client?
                    .batch_execute(&format!("SELECT pg_catalog.pg_sleep({BURST_QUERY_SECS})"))
                    .map_err(|e| why("query", &e))?;
                Ok(started.elapsed().as_secs_f64() - BURST_QUERY_SECS)
            })
        })
        .collect();
    barrier.wait();
    let mut errors = 0;
    let mut waits = vec![];
    for th in threads {
        match th.join().map_err(|_| "a burst client panicked")? {
            Ok(w) => waits.push(w.max(0.0)),
            Err(e) => {
                if errors < 3 {
                    log(format!("scenario 14: burst error: {e}"));
                }
                errors += 1;
            }
        }
    }
    Ok((errors, waits))
}

/// What failed, with the server's SQLSTATE and message when it answered.
fn why(what: &str, e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{what}: {} {}", d.code().code(), d.message()),
        None => format!("{what}: {e}"),
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    if p == 0.5 {
        return median(v);
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `dl-tenancy serve` on a free port, stopped when dropped.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(tool: &Tool, extra: &[&str]) -> R<Serve> {
        let mut child = Command::new(&tool.bin)
            .env_remove("DL_TENANCY_ADMIN_URL")
            .arg("--data-dir")
            .arg(&tool.data)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rate-limit-per-minute",
                "0",
                "--calls-per-minute",
                "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run serve: {e}"))?;
        let mut first = String::new();
        let stdout = child.stdout.take().ok_or("serve: no stdout")?;
        BufReader::new(stdout).read_line(&mut first)?;
        let v: serde_json::Value = serde_json::from_str(first.trim())
            .map_err(|e| format!("serve did not print its address ({e}): {first:?}"))?;
        let addr = v["listening"]
            .as_str()
            .ok_or("serve: no address")?
            .to_string();
        Ok(Serve { child, addr })
    }

    /// Requests per second and serve's CPU milliseconds per request, with one keep-alive
    /// client per token for `secs`, after one untimed call each (the first call of a
    /// workspace opens what later ones reuse).
    fn drive(&self, call: &Call, tokens: &[String], secs: Duration) -> R<(f64, f64)> {
        let ready = Arc::new(Barrier::new(tokens.len() + 1));
        let threads: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (addr, call, token) = (self.addr.clone(), call.clone(), token.clone());
                let ready = ready.clone();
                std::thread::spawn(move || -> Result<usize, String> {
                    let mut conn = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
                    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
                    let warm = call.send(&mut conn, &mut reader, &token);
                    ready.wait();
                    let started = Instant::now();
                    let mut done = 0;
                    let mut status = warm?;
                    while status == 200 && started.elapsed() < secs {
                        status = call.send(&mut conn, &mut reader, &token)?;
                        done += 1;
                    }
                    if status != 200 {
                        return Err(format!("{} {}: HTTP {status}", call.method, call.path));
                    }
                    Ok(done)
                })
            })
            .collect();
        ready.wait();
        let cpu_before = cpu_ticks(self.child.id())?;
        let started = Instant::now();
        let mut total = 0;
        for th in threads {
            total += th.join().map_err(|_| "an API client panicked")??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_ms = (cpu_ticks(self.child.id())? - cpu_before) as f64 * 10.0;
        Ok((total as f64 / elapsed, cpu_ms / total.max(1) as f64))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One API call, sent again and again on a keep-alive connection.
#[derive(Clone)]
struct Call {
    method: &'static str,
    path: &'static str,
    body: &'static str,
}

impl Call {
    fn get(path: &'static str) -> Call {
        Call {
            method: "GET",
            path,
            body: "",
        }
    }

    fn post(path: &'static str, body: &'static str) -> Call {
        Call {
            method: "POST",
            path,
            body,
        }
    }

    /// Sends it; the status code (the answer's body is read and dropped).
    fn send(
        &self,
        conn: &mut TcpStream,
        reader: &mut BufReader<TcpStream>,
        token: &str,
    ) -> Result<u16, String> {
        write!(
            conn,
            "{} {} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            self.method,
            self.path,
            self.body.len(),
            self.body
        )
        .map_err(|e| e.to_string())?;
        read_answer(reader)
    }
}

/// An HTTP/1.1 answer's status code; its body is read and dropped.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Result<u16, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(status)
}

/// A process's user + system CPU time in clock ticks (USER_HZ, 100 a second on Linux).
fn cpu_ticks(pid: u32) -> R<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name (in parentheses, may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    Ok(tick(11) + tick(12))
}
