//! Free loopback ports.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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
