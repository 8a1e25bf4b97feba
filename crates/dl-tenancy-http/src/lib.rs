//! The tenant API over HTTP (`dl-tenancy serve`): the seed's `/api/v2/tenants/...`
//! endpoints in front of the same [`Tenancy`] methods the CLI calls, and the operator's
//! `/api/v2/operator/...` ones (an operator token; [`operator`], [`jobs`]).
//!
//! Handlers only translate HTTP to library calls and back: the bearer token decides the
//! workspace ([`extract::Auth`]), the body is parsed strictly ([`extract::JsonBody`]), the
//! blocking library call runs on the blocking pool with a timeout ([`AppState::call`]), and
//! the result is the library struct as JSON (what the CLI prints) or
//! `{"error":{"code","message"}}` ([`error::ApiError`]).

pub mod conn;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod limit;
pub mod metrics;
mod operator;
mod sweepers;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use dl_tenancy_ctl::fences::GraceSeconds;
use dl_tenancy_ctl::tokens::{Caller, TokenStore};
use dl_tenancy_ctl::Kind;
use dl_tenancy_ctl::{Config, ErrorCode, Tenancy};
use error::ApiError;
use extract::{Auth, JsonBody};
use limit::RateLimiter;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

pub use extract::BODY_LIMIT;

/// The OpenAPI document, served at `GET /api/v2/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every route: (method, path). The router is built from this list (and only from it), and
/// a test checks that it equals the paths and methods of [`OPENAPI_JSON`].
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/api/v2/openapi.json"),
    ("GET", "/api/v2/tenants/status"),
    ("POST", "/api/v2/tenants/provision"),
    ("GET", "/api/v2/tenants/connection-uris/metadata"),
    ("POST", "/api/v2/tenants/connection-uris/reveal"),
    ("POST", "/api/v2/tenants/connection-uris/rotate"),
    ("GET", "/api/v2/tenants/sql-schema"),
    ("GET", "/api/v2/tenants/usage"),
    ("POST", "/api/v2/operator/workspaces/{workspace}/restore"),
    ("GET", "/api/v2/operator/jobs/{job}"),
];

pub use dl_tenancy_ctl::MAX_GRACE_SECONDS;

/// Options of `dl-tenancy serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Limit of each library call (database work); 503 `timeout` past it.
    pub call_timeout: Duration,
    /// Reveal + rotate requests per token per minute (token bucket); 0 = unlimited.
    pub rate_per_minute: u32,
    /// Requests per workspace per minute, every endpoint (token bucket); 0 = unlimited.
    pub calls_per_minute: u32,
    /// Library calls running at once (the rest wait, within their timeout).
    pub max_concurrent_calls: usize,
    /// After SIGTERM/SIGINT, how long in-flight requests may take before the process exits.
    pub drain_timeout: Duration,
    /// How often deleted workspaces whose retention is over are purged.
    pub purge_sweep_interval: Duration,
    /// Where Prometheus metrics are served (`/metrics`, [`metrics`]); none: not at all.
    pub metrics_listen: Option<SocketAddr>,
    /// The benchmark's baseline (`serve --baseline`, hidden): `GET /api/v2/tenants/status`
    /// answers from the control database alone, through the same stack.
    pub baseline: bool,
    /// Take a backup of the local server's archive this often (the first one interval after
    /// start); none: an operator's cron runs `dl-tenancy archive backup`.
    pub backup_interval: Option<Duration>,
    /// The kind of those backups.
    pub backup_kind: dl_tenancy_ctl::BackupKind,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            call_timeout: Duration::from_secs(30),
            rate_per_minute: 20,
            calls_per_minute: limit::CALLS_PER_MINUTE,
            max_concurrent_calls: 32,
            drain_timeout: Duration::from_secs(35),
            purge_sweep_interval: dl_tenancy_ctl::PURGE_SWEEP_INTERVAL,
            metrics_listen: None,
            baseline: false,
            backup_interval: None,
            backup_kind: dl_tenancy_ctl::BackupKind::Incr,
        }
    }
}

/// Shared state of the server.
pub struct AppState {
    pub tenancy: Tenancy,
    pub tokens: TokenStore,
    limiter: RateLimiter,
    workspace_calls: RateLimiter,
    in_flight: Arc<limit::InFlight>,
    call_timeout: Duration,
    calls: Semaphore,
    /// Token lookups: their own slots, and a budget of failed ones per client address.
    lookups: Semaphore,
    failed_lookups: RateLimiter,
    baseline: bool,
    /// The operator's background jobs (point-in-time restores).
    jobs: Arc<jobs::Jobs>,
}

impl AppState {
    /// Opens the token store (creates its table when missing). Blocking.
    pub fn new(tenancy: Tenancy, opts: &ServeOptions) -> dl_tenancy_ctl::Result<Arc<AppState>> {
        let tokens = TokenStore::open(tenancy.clone())?;
        Ok(Arc::new(AppState {
            tenancy,
            tokens,
            limiter: RateLimiter::new(opts.rate_per_minute),
            workspace_calls: RateLimiter::new(opts.calls_per_minute),
            in_flight: Arc::default(),
            call_timeout: opts.call_timeout,
            calls: Semaphore::new(opts.max_concurrent_calls.max(1)),
            lookups: Semaphore::new(limit::LOOKUPS_IN_FLIGHT),
            failed_lookups: RateLimiter::new(limit::FAILED_LOOKUPS_PER_MINUTE),
            baseline: opts.baseline,
            jobs: Arc::default(),
        }))
    }

    /// Run blocking work on the blocking pool, bounded in concurrency and time.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> dl_tenancy_ctl::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.blocking_on(&self.calls, f).await
    }

    /// Who a bearer token is, on the lookups' own slots; a client address past its budget of
    /// failed lookups gets 429 without one (none, with no address: the in-process tests).
    pub(crate) async fn principal(
        self: &Arc<Self>,
        token: String,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, ApiError> {
        // Each lookup takes one from its address's budget before it runs (so that many at once
        // cannot all pass), and a token that matched gives it back.
        let peer = peer.map(limit::address_key);
        if let Some(peer) = &peer {
            self.failed_lookups.check(peer).map_err(|wait| {
                ApiError::too_many_failed_lookups(wait.as_secs_f64().ceil() as u64)
            })?;
        }
        let st = self.clone();
        let found = self
            .blocking_on(&self.lookups, move || st.tokens.verify(&token))
            .await;
        if let (Ok(Some(_)), Some(peer)) = (&found, &peer) {
            self.failed_lookups.refund(peer);
        }
        found?.ok_or_else(ApiError::invalid_token)
    }

    async fn blocking_on<T, F>(&self, slots: &Semaphore, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> dl_tenancy_ctl::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let work = async {
            let _permit = slots
                .acquire()
                .await
                .map_err(|_| ApiError::internal("call semaphore closed"))?;
            match tokio::task::spawn_blocking(f).await {
                Ok(r) => r.map_err(ApiError::from_lib),
                Err(e) => Err(ApiError::internal(&format!("library call panicked: {e}"))),
            }
        };
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::timeout()),
        }
    }

    /// A library call on the tenancy.
    pub(crate) async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Tenancy) -> dl_tenancy_ctl::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let st = self.clone();
        self.blocking(move || f(&st.tenancy)).await
    }

    /// A workspace's call past its token: within its calls per minute, then its turn among
    /// its calls running (waiting within the call's time limit).
    pub(crate) async fn admit(&self, workspace: &str) -> Result<limit::CallSlot, ApiError> {
        self.workspace_calls
            .check(workspace)
            .map_err(|wait| ApiError::too_many_calls(wait.as_secs_f64().ceil() as u64))?;
        match tokio::time::timeout(self.call_timeout, self.in_flight.enter(workspace)).await {
            Ok(Some(slot)) => Ok(slot),
            Ok(None) => Err(ApiError::calls_in_flight()),
            Err(_) => Err(ApiError::timeout()),
        }
    }

    fn rate_limit(&self, auth: &Auth) -> Result<(), ApiError> {
        self.limiter
            .check(&auth.0.token_id)
            .map_err(|wait| ApiError::rate_limited(wait.as_secs_f64().ceil() as u64))
    }
}

type Api<T> = Result<T, ApiError>;

fn no_store<T: serde::Serialize>(v: T) -> Response {
    let mut res = Json(v).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn status(State(st): State<Arc<AppState>>, Auth(p, _slot): Auth) -> Api<Response> {
    let ws = p.workspace;
    if st.baseline {
        return Ok(Json(st.call(move |t| t.status_recorded(&ws)).await?).into_response());
    }
    Ok(Json(st.call(move |t| t.status(&ws)).await?).into_response())
}

/// Provision takes no parameters; a body, if any, must be `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionBody {}

async fn provision(
    State(st): State<Arc<AppState>>,
    Auth(p, _slot): Auth,
    JsonBody(ProvisionBody {}): JsonBody<ProvisionBody>,
) -> Api<Response> {
    let ws = p.workspace;
    match st.call(move |t| t.provision(&ws)).await {
        Ok(v) => Ok(Json(v).into_response()),
        // The library call goes on (and finishes or records an error); status says which.
        Err(e) if e.code == ErrorCode::Timeout => Err(ApiError::new(
            ErrorCode::ProvisioningInProgress,
            "provisioning is still running; poll GET /api/v2/tenants/status",
        )),
        Err(e) => Err(e),
    }
}

async fn metadata(State(st): State<Arc<AppState>>, Auth(p, _slot): Auth) -> Api<Response> {
    let ws = p.workspace;
    Ok(Json(st.call(move |t| t.metadata(&ws)).await?).into_response())
}

async fn sql_schema(State(st): State<Arc<AppState>>, Auth(p, _slot): Auth) -> Api<Response> {
    let ws = p.workspace;
    Ok(Json(st.call(move |t| t.sql_schema(&ws)).await?).into_response())
}

/// The token's own workspace only: nothing in the request can name another.
async fn usage(State(st): State<Arc<AppState>>, Auth(p, _slot): Auth) -> Api<Response> {
    let ws = p.workspace;
    Ok(Json(st.call(move |t| t.usage(&ws)).await?).into_response())
}

fn default_pooled() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealBody {
    kind: Kind,
    #[serde(default = "default_pooled")]
    pooled: bool,
}

async fn reveal(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody<RevealBody>,
) -> Api<Response> {
    st.rate_limit(&auth)?;
    let ws = auth.0.workspace;
    let r = st
        .call(move |t| t.reveal(&ws, body.kind, body.pooled))
        .await?;
    Ok(no_store(r))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    kind: Kind,
    #[serde(default)]
    grace_seconds: GraceSeconds,
}

async fn rotate(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody<RotateBody>,
) -> Api<Response> {
    st.rate_limit(&auth)?;
    let ws = auth.0.workspace;
    let r = st
        .call(move |t| t.rotate(&ws, body.kind, body.grace_seconds.get()))
        .await?;
    Ok(no_store(r))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

fn handler_for(method: &str, path: &str) -> MethodRouter<Arc<AppState>> {
    let filter = match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        _ => unreachable!("ROUTES uses GET and POST only"),
    };
    match path {
        "/healthz" => on(filter, healthz),
        "/api/v2/openapi.json" => on(filter, openapi),
        "/api/v2/tenants/status" => on(filter, status),
        "/api/v2/tenants/provision" => on(filter, provision),
        "/api/v2/tenants/connection-uris/metadata" => on(filter, metadata),
        "/api/v2/tenants/connection-uris/reveal" => on(filter, reveal),
        "/api/v2/tenants/connection-uris/rotate" => on(filter, rotate),
        "/api/v2/tenants/sql-schema" => on(filter, sql_schema),
        "/api/v2/tenants/usage" => on(filter, usage),
        "/api/v2/operator/workspaces/{workspace}/restore" => on(filter, operator::restore),
        "/api/v2/operator/jobs/{job}" => on(filter, operator::job),
        _ => unreachable!("a path of ROUTES without a handler: {path}"),
    }
}

/// The application: [`ROUTES`], JSON 404/405, request logs.
pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new();
    for (method, path) in ROUTES {
        r = r.route(path, handler_for(method, path));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // The path only: no query string, no headers (Authorization).
                    let path: String = req.uri().path().chars().take(200).collect();
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %path,
                        workspace = tracing::field::Empty,
                        token_id = tracing::field::Empty,
                    )
                })
                .on_request(|_req: &Request, _span: &tracing::Span| {
                    tracing::info!("request started");
                })
                .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "request finished"
                    );
                })
                .on_failure(()),
        )
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and let in-flight
/// requests finish (at most `drain_timeout`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut graceful = rx.clone();
    let app = app
        .layer(axum::middleware::from_fn(conn::track))
        .into_make_service_with_connect_info::<conn::ConnHandle>();
    let listener = conn::FencedListener::new(listener);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|v| *v).await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
    });
    let mut deadline = rx;
    let drain = async move {
        let _ = deadline.wait_for(|v| *v).await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        r = server => r,
        () = drain => {
            tracing::warn!("drain timeout: exiting with requests in flight");
            Ok(())
        }
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}

/// JSON request logs on stderr; `DL_TENANCY_LOG` (an `EnvFilter`, default `info`). The
/// database driver logs statements and parameters at debug level (`ALTER ROLE ... PASSWORD`
/// with a SCRAM verifier among them): it stays at `warn` whatever the filter says.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DL_TENANCY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive("tokio_postgres=warn".parse().expect("a valid directive"))
        .add_directive("postgres=warn".parse().expect("a valid directive"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `dl-tenancy serve`: open the control plane, bind, print `{"listening":"<addr>"}` on stdout,
/// serve until SIGTERM/SIGINT. Blocking.
pub fn run(config: &Config, opts: &ServeOptions) -> dl_tenancy_ctl::Result<()> {
    init_logging();
    raise_file_limit();
    // A call the API gives up on must not leave its backend running behind it: its
    // statements end a moment after the call's `timeout` answer.
    dl_tenancy_ctl::connection::limit_platform_statements(
        opts.call_timeout + Duration::from_secs(1),
    );
    // Read-only calls (status, metadata, reveal, token lookups) reuse a few sessions.
    let tenancy = Tenancy::open(config)?.with_kept_sessions();
    sweepers::spawn_grace_sweeper(tenancy.clone());
    sweepers::spawn_purge_sweeper(tenancy.clone(), opts.purge_sweep_interval);
    if let Some(every) = opts.backup_interval {
        sweepers::spawn_backup_scheduler(tenancy.clone(), every, opts.backup_kind);
    }
    let state = AppState::new(tenancy, opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dl-tenancy-http")
        .build()?;
    let res = rt.block_on(async {
        let listener = bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let mut announce = serde_json::json!({"listening": addr.to_string()});
        if let Some(at) = opts.metrics_listen {
            let metrics = bind(at).await?;
            announce["metrics"] = metrics.local_addr()?.to_string().into();
            let app = metrics::router(state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(metrics, app).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
        }
        println!("{announce}");
        tracing::info!(listen = %addr, "serving");
        let started = Instant::now();
        serve(
            listener,
            router(state),
            shutdown_signal(),
            opts.drain_timeout,
        )
        .await?;
        tracing::info!(uptime_s = started.elapsed().as_secs(), "stopped");
        Ok::<(), dl_tenancy_ctl::Error>(())
    });
    // Library calls still running past their timeout are not waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// Each API connection is a file descriptor: the soft limit (often 1,024) goes up to the
/// hard one, so that [`conn::MAX_CONNECTIONS`] and the database sessions fit.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("cannot raise the open-file limit");
            }
        }
    }
}

async fn bind(at: SocketAddr) -> dl_tenancy_ctl::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(at).await.map_err(|e| {
        dl_tenancy_ctl::Error::new(
            dl_tenancy_ctl::ErrorCode::InvalidArgument,
            format!("cannot listen on {at}: {e}"),
        )
    })
}
