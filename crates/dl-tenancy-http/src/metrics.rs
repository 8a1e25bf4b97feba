//! `serve --metrics-listen ADDR`: Prometheus metrics on a listener of their own, for the
//! operator's network only. They name every workspace of the server, so they are never on the
//! tenants' API port, where a tenant's token would reach them. One scrape reads one
//! [`LoadSnapshot`] (one query per server, one `SHOW POOLS`), bounded like any library call.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dl_tenancy_ctl::LoadSnapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    server: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WayLabels {
    server: String,
    way: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    workspace: String,
    server: String,
    way: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    workspace: String,
    server: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceLabels {
    workspace: String,
    server: String,
}

type Gauges<L> = Family<L, Gauge>;
type FloatGauges<L> = Family<L, Gauge<f64, AtomicU64>>;

/// The router of the metrics listener: `/metrics` and nothing else.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}

async fn scrape(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snap = st.call(|t| t.load_snapshot()).await?;
    let text = render(&snap).map_err(|_| ApiError::internal("metrics encoding"))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// The snapshot in the OpenMetrics text format.
pub fn render(snap: &LoadSnapshot) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("dl");
    let slots = Gauges::<SlotLabels>::default();
    let max = Gauges::<ServerLabels>::default();
    let unreachable = Gauges::<ServerLabels>::default();
    let way_sessions = Gauges::<WayLabels>::default();
    let way_slots = Gauges::<WayLabels>::default();
    for s in &snap.servers {
        let server = s.server.clone();
        for (way, w) in [
            ("pooled", &s.admission.pooled),
            ("direct", &s.admission.direct),
        ] {
            let l = WayLabels {
                server: server.clone(),
                way: way.into(),
            };
            way_sessions.get_or_create(&l).set(w.sessions);
            way_slots.get_or_create(&l).set(w.slots);
        }
        max.get_or_create(&ServerLabels {
            server: server.clone(),
        })
        .set(s.max_connections);
        for (state, v) in [
            ("in_use", s.in_use),
            ("reserved", s.reserved),
            ("free", s.free),
        ] {
            slots
                .get_or_create(&SlotLabels {
                    server: server.clone(),
                    state: state.into(),
                })
                .set(v);
        }
    }
    for server in &snap.unreachable {
        unreachable
            .get_or_create(&ServerLabels {
                server: server.clone(),
            })
            .set(1);
    }
    let archive_lag = Gauges::<ServerLabels>::default();
    let archive_failures = Gauges::<ServerLabels>::default();
    let last_archived = Gauges::<ServerLabels>::default();
    let last_backup = Gauges::<ServerLabels>::default();
    for a in &snap.archives {
        let l = ServerLabels {
            server: a.server.clone(),
        };
        archive_failures.get_or_create(&l).set(a.failures);
        if let Some(lag) = a.lag_bytes {
            archive_lag
                .get_or_create(&l)
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        if let Some(t) = a.last_archived_at {
            last_archived.get_or_create(&l).set(t);
        }
        if let Some(t) = a.last_backup_at {
            last_backup.get_or_create(&l).set(t);
        }
    }
    let sessions = Gauges::<WorkspaceLabels>::default();
    let bytes = Gauges::<WorkspaceLabels>::default();
    let active = Gauges::<WorkspaceLabels>::default();
    let waiting = Gauges::<WorkspaceLabels>::default();
    let servers = Gauges::<WorkspaceLabels>::default();
    let longest = FloatGauges::<WorkspaceLabels>::default();
    let refused = Family::<RefusalLabels, Counter>::default();
    let quota = Gauges::<WorkspaceLabels>::default();
    let storage_state = Gauges::<StateLabels>::default();
    for w in &snap.workspaces {
        let l = WorkspaceLabels {
            workspace: w.workspace.clone(),
            server: w.server.clone(),
        };
        quota.get_or_create(&l).set(w.storage.limit_bytes);
        storage_state
            .get_or_create(&StateLabels {
                workspace: w.workspace.clone(),
                server: w.server.clone(),
                state: w.storage.state.clone(),
            })
            .set(1);
        for (way, n) in [("pooled", w.refused_pooled), ("direct", w.refused_direct)] {
            refused
                .get_or_create(&RefusalLabels {
                    workspace: w.workspace.clone(),
                    server: w.server.clone(),
                    way: way.into(),
                })
                .inc_by(n);
        }
        let l = WorkspaceLabels {
            workspace: w.workspace.clone(),
            server: w.server.clone(),
        };
        sessions.get_or_create(&l).set(w.sessions);
        bytes.get_or_create(&l).set(w.database_bytes);
        let p = &w.pooler;
        active.get_or_create(&l).set(p.clients_active as i64);
        waiting.get_or_create(&l).set(p.clients_waiting as i64);
        servers
            .get_or_create(&l)
            .set((p.servers_active + p.servers_idle) as i64);
        longest
            .get_or_create(&l)
            .set(p.longest_wait_ms as f64 / 1000.0);
    }
    reg.register(
        "server_connections",
        "Connection slots of the server by state: in_use (every client session), reserved \
         (never taken by workspaces: superusers' and the platform's), free (max_connections - in_use)",
        slots,
    );
    reg.register(
        "server_max_connections",
        "The server's max_connections",
        max,
    );
    reg.register(
        "server_workspace_sessions",
        "Workspace sessions admission counts, by the way they arrive (pooled, direct)",
        way_sessions,
    );
    reg.register(
        "server_workspace_slots",
        "Admission's cap on workspace sessions by way (0: no cap)",
        way_slots,
    );
    reg.register(
        "server_unreachable",
        "1: the server did not answer this scrape",
        unreachable,
    );
    reg.register(
        "server_archive_lag_bytes",
        "WAL the server wrote past its last archived segment: what losing the server would lose",
        archive_lag,
    );
    reg.register(
        "server_archive_failures",
        "Failed attempts to archive a WAL segment since the server started",
        archive_failures,
    );
    reg.register(
        "server_last_archived_timestamp_seconds",
        "When the server last archived a WAL segment",
        last_archived,
    );
    reg.register(
        "server_last_backup_timestamp_seconds",
        "When the newest backup in the server's repository ended",
        last_backup,
    );
    reg.register(
        "workspace_sessions",
        "Sessions on the workspace's database: direct ones and the pooler's server connections",
        sessions,
    );
    reg.register(
        "workspace_database_bytes",
        "Size of the workspace's database",
        bytes,
    );
    reg.register(
        "workspace_pooler_clients_active",
        "The workspace's clients in the local pooler that have a server connection",
        active,
    );
    reg.register(
        "workspace_pooler_clients_waiting",
        "The workspace's clients in the local pooler waiting for a server connection",
        waiting,
    );
    reg.register(
        "workspace_pooler_server_connections",
        "The local pooler's server connections for the workspace",
        servers,
    );
    reg.register(
        "workspace_pooler_longest_wait_seconds",
        "How long the workspace's longest-waiting pooled client has waited",
        longest,
    );
    reg.register(
        "workspace_storage_limit_bytes",
        "The workspace database's storage quota (0: none)",
        quota,
    );
    reg.register(
        "workspace_storage_state",
        "1 for the quota's state: under, warned (from 80%), refused (writes that grow it fail \
         until it is below 90%), unmeasured, none",
        storage_state,
    );
    reg.register(
        "workspace_refusals",
        "The workspace's logins admission refused since the server started: pooled (57P03, \
         its clients waited in the pooler) and direct (53300)",
        refused,
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dl_tenancy_ctl::{Admission, AdmissionWay, PoolStats, ServerSlots, WorkspaceLoad};

    /// The series' names and labels, rendered from a snapshot without a server.
    #[test]
    fn a_snapshot_renders_as_labelled_series() {
        let snap = LoadSnapshot {
            servers: vec![ServerSlots {
                server: "local".into(),
                max_connections: 200,
                in_use: 12,
                reserved: 23,
                free: 188,
                admission: Admission {
                    pooled: AdmissionWay {
                        sessions: 5,
                        slots: 137,
                    },
                    direct: AdmissionWay {
                        sessions: 1,
                        slots: 40,
                    },
                    refused: vec![],
                },
            }],
            workspaces: vec![WorkspaceLoad {
                workspace: "acme".into(),
                server: "local".into(),
                sessions: 3,
                database_bytes: 8_000_000,
                pooler: PoolStats {
                    database: "dlw_0".into(),
                    clients_waiting: 2,
                    longest_wait_ms: 1500,
                    ..Default::default()
                },
                refused_pooled: 7,
                refused_direct: 0,
                storage: dl_tenancy_ctl::Storage {
                    limit_bytes: 20 << 20,
                    state: "warned".into(),
                },
            }],
            unreachable: vec!["far".into()],
            archives: vec![dl_tenancy_ctl::ArchiveFigures {
                server: "local".into(),
                last_archived_at: Some(1_800_000_000),
                last_backup_at: Some(1_799_990_000),
                lag_bytes: Some(4096),
                failures: 1,
            }],
        };
        let text = render(&snap).unwrap();
        for line in [
            "dl_server_connections{server=\"local\",state=\"free\"} 188",
            "dl_server_max_connections{server=\"local\"} 200",
            "dl_server_unreachable{server=\"far\"} 1",
            "dl_server_workspace_sessions{server=\"local\",way=\"pooled\"} 5",
            "dl_server_workspace_slots{server=\"local\",way=\"direct\"} 40",
            "dl_workspace_refusals_total{workspace=\"acme\",server=\"local\",way=\"pooled\"} 7",
            "dl_workspace_storage_state{workspace=\"acme\",server=\"local\",state=\"warned\"} 1",
            "dl_workspace_storage_limit_bytes{workspace=\"acme\",server=\"local\"} 20971520",
            "dl_workspace_sessions{workspace=\"acme\",server=\"local\"} 3",
            "dl_workspace_database_bytes{workspace=\"acme\",server=\"local\"} 8000000",
            "dl_workspace_pooler_clients_waiting{workspace=\"acme\",server=\"local\"} 2",
            "dl_workspace_pooler_longest_wait_seconds{workspace=\"acme\",server=\"local\"} 1.5",
            "dl_server_archive_lag_bytes{server=\"local\"} 4096",
            "dl_server_archive_failures{server=\"local\"} 1",
            "dl_server_last_archived_timestamp_seconds{server=\"local\"} 1800000000",
            "dl_server_last_backup_timestamp_seconds{server=\"local\"} 1799990000",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("dlw_0"), "database names stay internal");
    }
}
