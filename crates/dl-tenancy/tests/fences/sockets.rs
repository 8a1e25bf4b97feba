//! The pooler's port against sockets that never log in: 0.5.0's PgBouncer counted each
//! accepted socket against `max_client_conn` (4,000) for `client_login_timeout`, so a few
//! thousand bare TCP sockets, renewed, refused every workspace's pooled logins. Our patch
//! (scripts/pgbouncer/unauthenticated-socket-flood.patch) gives sockets logging in a cap of
//! their own (`max_login_clients`, 1,000) and drops the oldest past it.
//!
//! Direct URIs: 0.6.0 led them to PostgreSQL's own port, where about 460 bare sockets (the
//! postmaster's limit on processes, twice `max_connections`) refused every login of the
//! server, the platform's included. They now lead to the direct front, a session-mode
//! PgBouncer with the same cap; PostgreSQL's port is in no URI.

use super::*;
use std::io::Read;
use std::net::TcpStream;

/// More than `max_client_conn` and `max_login_clients` together.
const BARE_SOCKETS: usize = 5_500;

/// `BARE_SOCKETS` sockets to `port` that never log in, opened while the neighbour holds a
/// session through `pooled`'s URI; while all are open, `check` runs, then the oldest socket
/// reads the end of its stream (the front dropped it, in order).
fn flood(env: &Env, port: u16, pooled: bool, check: impl FnOnce()) {
    raise_file_limit(BARE_SOCKETS + 500);
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, pooled)).unwrap();
    let bare: Vec<TcpStream> = (0..BARE_SOCKETS)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("bare socket {i}: {e}"))
        })
        .collect();
    neighbour.batch_execute(READ_QUERY).unwrap();
    check();
    let mut first = &bare[0];
    first.set_read_timeout(Some(SAFETY_NET)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        first.read(&mut buf).unwrap(),
        0,
        "the oldest bare socket stayed"
    );
    drop(bare);
    env.assert_reads(NEIGHBOUR, pooled);
}

#[test]
fn bare_sockets_cannot_lock_out_pooled_logins() {
    let env = Env::with_attacker_and_neighbour();
    // While all are open: the neighbour's new logins and the attacker's own login through
    // the pooler work.
    flood(&env, env.status.pooler.port, true, || {
        for _ in 0..3 {
            env.assert_reads(NEIGHBOUR, true);
        }
        env.assert_reads(ATTACKER, true);
    });
}

#[test]
fn bare_sockets_cannot_lock_out_direct_logins_or_the_platform() {
    let env = Env::with_attacker_and_neighbour();
    // Direct URIs name the front, never PostgreSQL's own port.
    let direct = env.uri(NEIGHBOUR, Kind::Read, false);
    assert!(
        direct.contains(&format!(":{}/", env.status.direct.port)),
        "{direct}"
    );
    assert_ne!(env.status.direct.port, env.status.postgres.port);
    flood(&env, env.status.direct.port, false, || {
        // Direct and pooled logins of the neighbour and the attacker, a session's own
        // state (an advisory lock held across statements, as migration tools take), and
        // the platform's own work: a new workspace provisioned.
        for pooled in [false, true] {
            env.assert_reads(NEIGHBOUR, pooled);
            env.assert_reads(ATTACKER, pooled);
        }
        let mut session = connect(&env.uri(NEIGHBOUR, Kind::Override, false)).unwrap();
        session
            .batch_execute("SELECT pg_advisory_lock(42)")
            .unwrap();
        let held: i64 = session
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(held, 1, "the session kept its lock between statements");
        env.t.provision("late-comer").unwrap();
        env.assert_reads("late-comer", false);
    });
}

/// Stalled logins at the direct front: sockets that speak TLS, name a made-up login and never
/// answer the password request, `STALLED` at a time, renewed as fast as they go. Each makes the
/// front look the login up (`auth_query`) before the password exchange: a review found the
/// lookups on new server processes each (some 44 a second) and the sockets waiting for them
/// outside `max_login_clients` and inside `max_client_conn`, so they filled its 4,000 clients
/// and the neighbour's direct logins got `no more connections allowed`. While it runs, the
/// neighbour and the attacker log in directly and read.
#[test]
fn stalled_logins_cannot_lock_out_direct_logins() {
    const STALLED: usize = 300;
    let env = Env::with_attacker_and_neighbour();
    raise_file_limit(STALLED * 4 + 500);
    let port = env.status.direct.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, asked) = (stop.clone(), asked.clone());
            std::thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    n += 1;
                    if let Some(s) = stalled_login(port, &format!("nobody_{worker}_{n}")) {
                        asked.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        held.push_back(s);
                        if held.len() > STALLED / 4 {
                            held.pop_front();
                        }
                    }
                }
            })
        })
        .collect();
    // The flood is under way before the first login: it has had logins asked for passwords.
    let started = std::time::Instant::now();
    while asked.load(std::sync::atomic::Ordering::Acquire) < STALLED {
        assert!(
            started.elapsed() < SAFETY_NET,
            "the front never asked for a password"
        );
        std::thread::yield_now();
    }
    for _ in 0..5 {
        env.assert_reads(NEIGHBOUR, false);
        env.assert_reads(ATTACKER, false);
    }
    env.assert_reads(NEIGHBOUR, true);
    stop.store(true, std::sync::atomic::Ordering::Release);
    for t in flood {
        t.join().unwrap();
    }
    assert!(asked.load(std::sync::atomic::Ordering::Acquire) >= STALLED);
}

/// A TLS connection to `port` that sent a startup message for `user` and read the server's
/// password request, then stays silent; `None` when the front closed it first.
fn stalled_login(port: u16, user: &str) -> Option<openssl::ssl::SslStream<TcpStream>> {
    use std::io::Write;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).ok()?; // SSLRequest
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).ok()?;
    let mut tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).ok()?;
    tls.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let mut stream = tls.build().connect("localhost", tcp).ok()?;
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", "x")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    stream.write_all(&startup).ok()?;
    // 'R': the password request (AuthenticationSASL), after the front looked the login up.
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind).ok()?;
    (kind[0] == b'R').then_some(stream)
}
