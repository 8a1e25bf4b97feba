//! The pooler's port against sockets that never log in: 0.5.0's PgBouncer counted each
//! accepted socket against `max_client_conn` (4,000) for `client_login_timeout`, so a few
//! thousand bare TCP sockets, renewed, refused every workspace's pooled logins. Our patch
//! (scripts/pgbouncer/unauthenticated-socket-flood.patch) gives sockets logging in a cap of
//! their own (`max_login_clients`, 1,000) and drops the oldest past it.

use super::*;
use std::io::Read;
use std::net::TcpStream;

/// More than `max_client_conn` and `max_login_clients` together.
const BARE_SOCKETS: usize = 5_500;

#[test]
fn bare_sockets_cannot_lock_out_pooled_logins() {
    let env = Env::with_attacker_and_neighbour();
    raise_file_limit(BARE_SOCKETS + 500);
    let port = env.status.pooler.port;
    let mut neighbour = connect(&env.uri(NEIGHBOUR, Kind::Read, true)).unwrap();
    let bare: Vec<TcpStream> = (0..BARE_SOCKETS)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("bare socket {i}: {e}"))
        })
        .collect();
    // While all of them are open: the neighbour's open session, its new logins and the
    // attacker's own login through the pooler all work.
    neighbour.batch_execute(READ_QUERY).unwrap();
    for _ in 0..3 {
        env.assert_reads(NEIGHBOUR, true);
    }
    env.assert_reads(ATTACKER, true);
    // The pooler dropped the oldest bare sockets, in order: the first one reads the end of
    // the stream; the newest 1,000 at most are still logging in.
    let mut first = &bare[0];
    first.set_read_timeout(Some(SAFETY_NET)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        first.read(&mut buf).unwrap(),
        0,
        "the oldest bare socket stayed"
    );
    drop(bare);
    env.assert_reads(NEIGHBOUR, true);
}
