//! Operator jobs: library calls that take longer than a request may (a point-in-time restore:
//! 10-60 s and more), run on the blocking pool in the background and polled by id.
//!
//! Bounded: at most [`MAX_RUNNING_JOBS`] run at once (their threads, counted until they really
//! end), one per workspace, and at most [`MAX_KEPT_JOBS`] are kept, each for [`JOB_KEEP`]
//! after it ended. A job ends as `succeeded` with the call's answer or `failed` with a JSON
//! error, whatever happens: a library error keeps its code (a 5xx one with a generic message,
//! its cause in the log), a panic is `internal`, and a call past [`JOB_LIMIT`] is `timeout`.
//! Jobs live in the serving process: a restart forgets them (the library's own locks and
//! scratch clean-up cover a restore cut short).

use crate::error::ApiError;
use dl_tenancy_ctl::plan::pitr::format_utc;
use dl_tenancy_ctl::ErrorCode;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Jobs running at once (each a restore: a scratch server, a dump and a load).
pub const MAX_RUNNING_JOBS: usize = 2;
/// How long an ended job stays to be polled.
pub const JOB_KEEP: Duration = Duration::from_secs(3600);
/// Jobs kept at most; past it the oldest ended ones go first.
pub const MAX_KEPT_JOBS: usize = 1000;
/// A job still running after this ends as failed (`timeout`): a guard against a hang, far
/// above a restore's own steps' limits being reached together.
pub const JOB_LIMIT: Duration = Duration::from_secs(3 * 3600);

/// A job as `GET /api/v2/operator/jobs/{job}` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub job: String,
    pub kind: &'static str,
    pub workspace: String,
    /// `running`, `succeeded` or `failed`.
    pub state: &'static str,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// The call's answer (`succeeded`).
    pub result: Option<serde_json::Value>,
    /// `{"code","message"}` (`failed`).
    pub error: Option<serde_json::Value>,
}

struct Job {
    view: JobView,
    ended: Option<Instant>,
}

/// The registry of one serving process.
pub struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
    running: Arc<Semaphore>,
    limit: Duration,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs::new(JOB_LIMIT)
    }
}

fn now_text() -> String {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    format_utc(us)
}

fn new_id() -> String {
    let bytes = dl_tenancy_ctl::secret::random_bytes::<8>();
    format!(
        "job_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A job id's shape: `job_` and 16 lowercase hex digits.
pub fn well_formed(id: &str) -> bool {
    id.strip_prefix("job_").is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

impl Jobs {
    pub fn new(limit: Duration) -> Jobs {
        Jobs {
            jobs: Mutex::default(),
            running: Arc::new(Semaphore::new(MAX_RUNNING_JOBS)),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start `work` for `workspace` in the background: its view (`running`), or 409 while a
    /// job of that workspace runs, 429 while [`MAX_RUNNING_JOBS`] do.
    pub fn start<F>(
        self: &Arc<Self>,
        kind: &'static str,
        workspace: &str,
        work: F,
    ) -> Result<JobView, ApiError>
    where
        F: FnOnce() -> dl_tenancy_ctl::Result<serde_json::Value> + Send + 'static,
    {
        let mut jobs = self.lock();
        prune(&mut jobs, Instant::now());
        if let Some(j) = jobs
            .values()
            .find(|j| j.ended.is_none() && j.view.workspace == workspace)
        {
            return Err(ApiError::new(
                ErrorCode::ProvisioningInProgress,
                format!(
                    "a point-in-time restore of workspace {workspace} is running (job {}); retry when it is done",
                    j.view.job
                ),
            ));
        }
        let permit = self.running.clone().try_acquire_owned().map_err(|_| ApiError {
            retry_after: Some(30),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("{MAX_RUNNING_JOBS} jobs are running, the most at once; retry when one is done"),
            )
        })?;
        let view = JobView {
            job: new_id(),
            kind,
            workspace: workspace.to_string(),
            state: "running",
            created_at: now_text(),
            finished_at: None,
            result: None,
            error: None,
        };
        jobs.insert(
            view.job.clone(),
            Job {
                view: view.clone(),
                ended: None,
            },
        );
        drop(jobs);
        let (registry, id, limit) = (self.clone(), view.job.clone(), self.limit);
        tokio::spawn(async move {
            // The permit goes with the thread: the cap counts calls until they really end.
            let call = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                work()
            });
            let outcome = match tokio::time::timeout(limit, call).await {
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(ApiError::from_lib(e)),
                Ok(Err(e)) => Err(ApiError::internal(&format!("job {id} panicked: {e}"))),
                Err(_) => Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("the job did not end within {limit:?}; the server log has the details"),
                )),
            };
            if let Err(e) = &outcome {
                tracing::warn!(job = %id, code = e.code.as_str(), "job failed");
            } else {
                tracing::info!(job = %id, "job succeeded");
            }
            registry.finish(&id, outcome);
        });
        Ok(view)
    }

    fn finish(&self, id: &str, outcome: Result<serde_json::Value, ApiError>) {
        let mut jobs = self.lock();
        if let Some(j) = jobs.get_mut(id) {
            j.ended = Some(Instant::now());
            j.view.finished_at = Some(now_text());
            match outcome {
                Ok(v) => {
                    j.view.state = "succeeded";
                    j.view.result = Some(v);
                }
                Err(e) => {
                    j.view.state = "failed";
                    j.view.error = Some(e.body()["error"].clone());
                }
            }
        }
    }

    /// A job's view; `None` for an unknown (or forgotten) one.
    pub fn get(&self, id: &str) -> Option<JobView> {
        let mut jobs = self.lock();
        prune(&mut jobs, Instant::now());
        jobs.get(id).map(|j| j.view.clone())
    }
}

/// Ended jobs older than [`JOB_KEEP`] go; past [`MAX_KEPT_JOBS`], the oldest ended ones too.
fn prune(jobs: &mut HashMap<String, Job>, now: Instant) {
    jobs.retain(|_, j| {
        j.ended
            .is_none_or(|t| now.saturating_duration_since(t) < JOB_KEEP)
    });
    if jobs.len() >= MAX_KEPT_JOBS {
        let mut ended: Vec<(Instant, String)> = jobs
            .iter()
            .filter_map(|(id, j)| j.ended.map(|t| (t, id.clone())))
            .collect();
        ended.sort();
        for (_, id) in ended.into_iter().take(jobs.len() + 1 - MAX_KEPT_JOBS) {
            jobs.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ended(jobs: &Jobs, id: &str) -> JobView {
        loop {
            let v = jobs.get(id).unwrap();
            if v.state != "running" {
                return v;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_ends_whatever_its_call_does() {
        let jobs = Arc::new(Jobs::default());
        let ok = jobs
            .start("restore", "a", || Ok(serde_json::json!({"rows": 3})))
            .unwrap();
        assert!(well_formed(&ok.job), "{}", ok.job);
        let v = ended(&jobs, &ok.job).await;
        assert_eq!(
            (v.state, v.result),
            ("succeeded", Some(serde_json::json!({"rows": 3})))
        );
        assert!(v.finished_at.is_some());

        let err = jobs
            .start("restore", "a", || {
                Err(dl_tenancy_ctl::Error::new(
                    ErrorCode::DatabaseError,
                    "cannot connect to /srv/run as admin password=hunter2",
                ))
            })
            .unwrap();
        let v = ended(&jobs, &err.job).await;
        assert_eq!(v.state, "failed");
        assert_eq!(v.error.as_ref().unwrap()["code"], "database_error");
        assert!(!v.error.unwrap().to_string().contains("hunter2"));

        let boom = jobs.start("restore", "b", || panic!("a bug")).unwrap();
        let v = ended(&jobs, &boom.job).await;
        assert_eq!(v.state, "failed");
        assert_eq!(v.error.unwrap()["code"], "internal");
        assert!(jobs.get("job_0000000000000000").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn running_jobs_are_capped_one_per_workspace_and_time_limited() {
        let jobs = Arc::new(Jobs::new(Duration::from_millis(200)));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let hold = |rx: Arc<Mutex<std::sync::mpsc::Receiver<()>>>| {
            move || {
                let _ = rx.lock().unwrap().recv();
                Ok(serde_json::Value::Null)
            }
        };
        let a = jobs.start("restore", "a", hold(rx.clone())).unwrap();
        let e = jobs.start("restore", "a", hold(rx.clone())).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (409, ErrorCode::ProvisioningInProgress)
        );
        assert!(e.message.contains(&a.job));
        let _b = jobs.start("restore", "b", hold(rx.clone())).unwrap();
        let e = jobs.start("restore", "c", hold(rx.clone())).unwrap_err();
        assert_eq!((e.status.as_u16(), e.retry_after), (429, Some(30)));
        // Past the limit a held job ends as failed; its thread still counts until it ends.
        let v = ended(&jobs, &a.job).await;
        assert_eq!(v.error.unwrap()["code"], "timeout");
        assert!(jobs.start("restore", "c", hold(rx.clone())).is_err());
        tx.send(()).unwrap();
        tx.send(()).unwrap();
        while jobs.running.available_permits() < MAX_RUNNING_JOBS {
            tokio::task::yield_now().await;
        }
        let c = jobs
            .start("restore", "c", || Ok(serde_json::Value::Null))
            .unwrap();
        assert_eq!(ended(&jobs, &c.job).await.state, "succeeded");
    }

    #[test]
    fn ended_jobs_are_kept_a_bounded_time_and_number() {
        let now = Instant::now();
        let job = |ended: Option<Instant>| Job {
            view: JobView {
                job: String::new(),
                kind: "restore",
                workspace: String::new(),
                state: "running",
                created_at: String::new(),
                finished_at: None,
                result: None,
                error: None,
            },
            ended,
        };
        let mut jobs = HashMap::new();
        jobs.insert(
            "old".to_string(),
            job(now.checked_sub(JOB_KEEP + Duration::from_secs(1))),
        );
        jobs.insert("running".to_string(), job(None));
        prune(&mut jobs, now);
        assert_eq!(jobs.keys().collect::<Vec<_>>(), ["running"]);
        for i in 0..MAX_KEPT_JOBS + 5 {
            jobs.insert(format!("j{i}"), job(Some(now)));
        }
        prune(&mut jobs, now);
        assert!(jobs.len() < MAX_KEPT_JOBS && jobs.contains_key("running"));
    }
}
