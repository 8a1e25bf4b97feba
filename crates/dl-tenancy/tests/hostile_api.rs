//! A hostile tenant against the API the workspaces share (issue 21): its token floods every
//! endpoint from many clients at once, and it holds thousands of sockets open without a
//! request (idle, or with headers that never end). A neighbour's calls run throughout and
//! each must succeed; timings are never asserted, order comes from what was observed (the
//! attacker's first 429, the server's closing of its sockets).

mod common;

use common::http::*;
use common::SAFETY_NET;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The attacker's concurrent clients: more than the calls a workspace may have in flight.
const FLOODERS: usize = 12;

/// Idle sockets: more than `serve` keeps open (`dl_tenancy_http::conn::MAX_CONNECTIONS`).
const IDLE_SOCKETS: usize = dl_tenancy_http::conn::MAX_CONNECTIONS + 400;

#[test]
fn one_token_s_flood_and_idle_sockets_leave_the_neighbour_s_calls_working() {
    common::raise_file_limit(IDLE_SOCKETS + 500);
    let c = cluster();
    for ws in ["api-attacker", "api-neighbour"] {
        c.cli(&["provision", "--workspace", ws]);
    }
    let server = Server::start(&[]);
    let attacker = server.api_for("api-attacker");
    let neighbour = server.api_for("api-neighbour");

    // A socket whose headers never end: closed by the server (it has no request running).
    let host = server.addr.clone();
    let mut slow = TcpStream::connect(&host).unwrap();
    slow.write_all(b"GET /api/v2/tenants/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();

    // The flood: every endpoint, from more clients than a workspace may have calls running.
    let flood = Flood::start(
        (0..FLOODERS).map(|_| attacker.clone()).collect(),
        |api, i| match i % 3 {
            0 => api.get("/api/v2/tenants/usage"),
            1 => api.post("/api/v2/tenants/provision", serde_json::json!({})),
            _ => api.get("/api/v2/tenants/status"),
        },
    );
    flood.wait_until_limited("the flood was never limited");
    // While the flood runs (observed: it is being refused), the neighbour's calls work.
    for _ in 0..10 {
        let r = neighbour.get("/api/v2/tenants/status");
        assert_eq!(r.status, 200, "neighbour during the flood: {}", r.text);
        check("GET", "/api/v2/tenants/status", &r);
    }
    let r = neighbour.get("/api/v2/tenants/usage");
    assert_eq!(r.status, 200, "{}", r.text);
    let answers = flood.stop();
    eprintln!("the attacker's answers: {answers:?}");
    assert!(answers.contains_key(&200), "{answers:?}");
    assert!(
        answers.keys().all(|s| *s < 500),
        "the flood made the API fail: {answers:?}"
    );

    // Idle sockets past the cap: each new one closes the one idle longest; the neighbour's
    // connection gets in the same way, and its call runs.
    let idle: Vec<TcpStream> = (0..IDLE_SOCKETS)
        .map(|_| TcpStream::connect(&host).unwrap())
        .collect();
    let r = Api::new(&server.base, neighbour.token.as_deref()).get("/api/v2/tenants/status");
    assert_eq!(r.status, 200, "neighbour past the idle sockets: {}", r.text);
    assert_eq!(
        Api::new(&server.base, None).get("/healthz").status,
        200,
        "healthz past the idle sockets"
    );
    // The oldest idle socket was closed by the server: it reads the end of the stream.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(SAFETY_NET))
        .expect("a read timeout");
    let mut buf = [0u8; 16];
    assert_eq!(
        first.read(&mut buf).unwrap(),
        0,
        "the oldest idle socket stayed"
    );
    drop(idle);

    // The slow headers' socket is closed (without an answer, or with a 4xx).
    slow.set_read_timeout(Some(SAFETY_NET)).unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest)
        .expect("the slow socket is closed, not left open");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 4"), "{rest}");
}

/// Made-up tokens (well formed, matching none) from many clients at one address: each costs
/// a lookup in the control database, so past the address's budget of failed lookups the API
/// answers 429 without one, and the neighbour (another address) is never held behind them.
#[test]
fn made_up_tokens_from_one_address_leave_the_neighbour_s_calls_working() {
    let c = cluster();
    c.cli(&["provision", "--workspace", "api-neighbour"]);
    let server = Server::start(&[]);
    let neighbour = server.api_for("api-neighbour");
    let flood = Flood::start(
        (0..FLOODERS)
            .map(|i| {
                let token = format!("dlt_{}", format!("{i:02}").repeat(22).get(..43).unwrap());
                Api::new(&server.base, Some(&token)).bound_to("127.0.0.2".parse().unwrap())
            })
            .collect(),
        |api, _| api.get("/api/v2/tenants/status"),
    );
    flood.wait_until_limited("the made-up tokens were never limited");
    for _ in 0..10 {
        let r = neighbour.get("/api/v2/tenants/status");
        assert_eq!(r.status, 200, "neighbour during the flood: {}", r.text);
    }
    let answers = flood.stop();
    assert!(
        answers.keys().all(|s| *s == 401 || *s == 429),
        "a made-up token got past the lookup: {answers:?}"
    );
    eprintln!("answers to the made-up tokens: {answers:?}");
    assert!(answers.contains_key(&429), "{answers:?}");
}

/// Clients calling the API in a loop, each on its own thread, until stopped; every 429 must be
/// `rate_limited` with a Retry-After.
struct Flood {
    stop: Arc<AtomicBool>,
    limited: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<std::collections::BTreeMap<u16, usize>>>,
}

impl Flood {
    /// `call(api, i)`: what client `i` asks, again and again.
    fn start(clients: Vec<Api>, call: fn(&Api, usize) -> Resp) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let limited = Arc::new(AtomicUsize::new(0));
        let threads = clients
            .into_iter()
            .enumerate()
            .map(|(i, api)| {
                let (stop, limited) = (stop.clone(), limited.clone());
                std::thread::spawn(move || {
                    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
                    while !stop.load(Ordering::Acquire) {
                        let r = call(&api, i);
                        if r.status == 429 {
                            assert_eq!(r.code(), "rate_limited", "{}", r.text);
                            assert!(r.header("retry-after").is_some());
                            limited.fetch_add(1, Ordering::AcqRel);
                        }
                        *answers.entry(r.status).or_default() += 1;
                    }
                    answers
                })
            })
            .collect();
        Flood {
            stop,
            limited,
            threads,
        }
    }

    /// Waits (observed, bounded by the safety net) for the first 429.
    fn wait_until_limited(&self, never: &str) {
        let started = Instant::now();
        while self.limited.load(Ordering::Acquire) == 0 {
            assert!(started.elapsed() < SAFETY_NET, "{never}");
        }
    }

    /// Stops the clients; how many answers of each status they got.
    fn stop(self) -> std::collections::BTreeMap<u16, usize> {
        self.stop.store(true, Ordering::Release);
        let mut answers = std::collections::BTreeMap::<u16, usize>::new();
        for t in self.threads {
            for (status, n) in t.join().unwrap() {
                *answers.entry(status).or_default() += n;
            }
        }
        answers
    }
}
