//! An app working in the background while a test or a benchmark does something to its
//! database (a move, a burst): it repeats one step, counts what failed and keeps what was
//! acknowledged, with the time of each acknowledgement.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the app acknowledged, in order, with when.
pub type Acked<T> = Vec<(T, Instant)>;

pub struct AppLoop<T> {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked<T>>>,
    errors: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> AppLoop<T> {
    /// Runs `step(i)` until stopped. `Ok` is acknowledged and moves on to `i + 1`; `Err` is
    /// counted and `i` is tried again (the step keeps its own connection and reconnects).
    pub fn start<S>(mut step: S) -> AppLoop<T>
    where
        S: FnMut(u64) -> Result<T, ()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let (s, a, e) = (stop.clone(), acked.clone(), errors.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                match step(i) {
                    Ok(v) => {
                        lock(&a).push((v, Instant::now()));
                        i += 1;
                    }
                    Err(()) => {
                        e.fetch_add(1, Ordering::SeqCst);
                        // An app's retry, not a busy loop while nothing listens.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        });
        AppLoop {
            stop,
            acked,
            errors,
            handle: Some(handle),
        }
    }

    pub fn acked(&self) -> usize {
        lock(&self.acked).len()
    }

    /// Waits (by observed state) until `n` more steps than now are acknowledged; `limit` is
    /// only a safety net against a stalled app.
    pub fn wait_for_more(&self, n: usize, limit: Duration) -> Result<(), String> {
        let target = self.acked() + n;
        let started = Instant::now();
        while self.acked() < target {
            if started.elapsed() > limit {
                return Err(format!("the app acknowledged nothing more for {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Stops the app: what it acknowledged and how many steps failed.
    pub fn stop(mut self) -> Result<(Acked<T>, usize), String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| "the app's thread panicked".to_string())?;
        }
        let acked = std::mem::take(&mut *lock(&self.acked));
        Ok((acked, self.errors.load(Ordering::SeqCst)))
    }
}

impl<T> Drop for AppLoop<T> {
    /// A test or measurement that failed half-way must not leave the app running.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn lock<V>(m: &Mutex<V>) -> MutexGuard<'_, V> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
