//! The API's fences per caller, in memory: token buckets of `per_minute` requests, refilled
//! continuously (every call of a workspace; reveal and rotate of a token, tighter), and the
//! calls a workspace may have in flight at once, so that one token cannot take the call
//! slots every workspace shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Calls of all endpoints per workspace per minute unless `serve --calls-per-minute` says
/// otherwise (a client polling status every 0.1 s stays under it).
pub const CALLS_PER_MINUTE: u32 = 600;

/// Calls one workspace may have running at once, of the `max_concurrent_calls` (32) all
/// share; more wait their turn, in the workspace's own queue.
pub const CALLS_IN_FLIGHT: usize = 4;

/// Calls of one workspace that may wait for one of its [`CALLS_IN_FLIGHT`]; past it, 429 at
/// once. Bounded, because a waiting call holds its connection open.
pub const CALLS_WAITING: usize = 32;

/// Lookups of tokens that matched none, per client address per minute; past it, 429 before
/// any lookup. A token is checked against the control database (a revoked one fails from the
/// next request on), so a flood of made-up tokens would otherwise take the lookups every
/// workspace's calls need; a real client fails a lookup only when its token was revoked.
pub const FAILED_LOOKUPS_PER_MINUTE: u32 = 60;

/// The budget's key for a client address: an IPv6 client holds a whole /64 (one host's
/// share), so it is counted by its /64, not by each of its addresses.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Token lookups running at once, outside the calls all workspaces share: a lookup is one
/// indexed query on a kept session.
pub const LOOKUPS_IN_FLIGHT: usize = 4;

/// The calls each workspace has running and waiting.
#[derive(Default)]
pub struct InFlight {
    queues: Mutex<HashMap<String, Queue>>,
}

struct Queue {
    running: Arc<tokio::sync::Semaphore>,
    waiting: usize,
}

/// One call running for a workspace, until dropped.
#[derive(Debug)]
pub struct CallSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Queues are dropped (idle ones) when there are more than this many.
const PRUNE_QUEUES_ABOVE: usize = 10_000;

impl InFlight {
    /// A slot for `workspace` once one of its [`CALLS_IN_FLIGHT`] is free, or none at once
    /// when [`CALLS_WAITING`] of its calls already wait.
    pub async fn enter(&self, workspace: &str) -> Option<CallSlot> {
        let running = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            if queues.len() > PRUNE_QUEUES_ABOVE {
                queues.retain(|_, q| {
                    q.waiting > 0 || q.running.available_permits() < CALLS_IN_FLIGHT
                });
            }
            let q = queues
                .entry(workspace.to_string())
                .or_insert_with(|| Queue {
                    running: Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT)),
                    waiting: 0,
                });
            if q.waiting >= CALLS_WAITING {
                return None;
            }
            q.waiting += 1;
            q.running.clone()
        };
        // Counted as waiting until it runs (also when the request is dropped meanwhile).
        let _waiting = Waiting(self, workspace);
        let permit = running.acquire_owned().await.ok()?;
        Some(CallSlot { _permit: permit })
    }
}

struct Waiting<'a>(&'a InFlight, &'a str);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut queues = self.0.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get_mut(self.1) {
            q.waiting -= 1;
        }
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets are pruned (full ones dropped) when there are more than this many.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    /// `per_minute = 0` disables the limit.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let cap = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * cap / 60.0).min(cap);
        b.at = now;
    }

    /// Take one request for `key`, or the time until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let cap = f64::from(self.per_minute);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(60));
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - b.tokens;
            Err(Duration::from_secs_f64(missing * 60.0 / cap))
        }
    }

    /// Gives back one request taken for `key` (up to the bucket's size).
    pub fn refund(&self, key: &str) {
        let cap = f64::from(self.per_minute);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_ne!(
            address_key(a),
            address_key("2001:db8:1:3::1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_workspace_runs_a_few_calls_and_queues_a_bounded_number() {
        let f = Arc::new(InFlight::default());
        let mut running = Vec::new();
        for _ in 0..CALLS_IN_FLIGHT {
            running.push(f.enter("a").await.unwrap());
        }
        let waiters: Vec<_> = (0..CALLS_WAITING)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move { f.enter("a").await.is_some() })
            })
            .collect();
        // Observed: every waiter is queued before the next one is refused.
        while f.queues.lock().unwrap()["a"].waiting < CALLS_WAITING {
            tokio::task::yield_now().await;
        }
        assert!(f.enter("a").await.is_none(), "past the queue: refused");
        assert!(
            f.enter("b").await.is_some(),
            "another workspace is not held up"
        );
        drop(running);
        for w in waiters {
            assert!(w.await.unwrap(), "a queued call runs once a slot frees");
        }
        assert_eq!(f.queues.lock().unwrap()["a"].waiting, 0);
    }

    #[test]
    fn bucket() {
        let l = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        assert!(l.check("b").is_ok());
        let off = RateLimiter::new(0);
        for _ in 0..100 {
            assert!(off.check("a").is_ok());
        }
    }
}
