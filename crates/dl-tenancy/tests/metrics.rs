//! `serve --metrics-listen`: Prometheus metrics of every server and workspace in one scrape,
//! on a listener of their own. Load on one workspace (direct sessions, a pooled client in a
//! transaction, a table of rows) shows in its series and not in its neighbour's; the tenants'
//! API port has no /metrics, and a tenant's token does not open it there.

mod common;

use common::connect;
use common::http::*;
use std::collections::BTreeMap;

/// One scrape: `name{labels}` -> value, for the series of this crate (`dl_`).
fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let base = server
        .metrics
        .as_deref()
        .expect("serve with --metrics-listen");
    let r = Api::new(base, None).get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    r.text
        .lines()
        .filter(|l| l.starts_with("dl_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn series(m: &BTreeMap<String, f64>, name: &str, ws: &str) -> f64 {
    let key = format!("{name}{{workspace=\"{ws}\",server=\"local\"}}");
    *m.get(&key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

fn uri(ws: &str, pooled: bool) -> String {
    let mut args = vec![
        "connection-uris",
        "reveal",
        "--workspace",
        ws,
        "--kind",
        "override",
    ];
    if pooled {
        args.push("--pooled");
    }
    cluster().cli(&args)["uri"].as_str().unwrap().to_string()
}

#[test]
fn metrics_follow_one_workspace_s_load_and_stay_off_the_tenant_port() {
    let c = cluster();
    for ws in ["met-busy", "met-calm"] {
        c.cli(&["provision", "--workspace", ws]);
    }
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let before = scrape(&server);
    for state in ["in_use", "reserved", "free"] {
        let key = format!("dl_server_connections{{server=\"local\",state=\"{state}\"}}");
        assert!(
            before.contains_key(&key),
            "no {key} in {before:?}; serve's log: {}",
            server.log_text()
        );
    }
    assert!(before["dl_server_max_connections{server=\"local\"}"] >= 30.0);
    // The continuous archive: local up took a full backup, and the server has archived.
    for key in [
        "dl_server_last_backup_timestamp_seconds{server=\"local\"}",
        "dl_server_last_archived_timestamp_seconds{server=\"local\"}",
    ] {
        assert!(
            before.get(key).is_some_and(|t| *t > 1.6e9),
            "no {key} in {before:?}"
        );
    }
    assert!(before.contains_key("dl_server_archive_failures{server=\"local\"}"));
    let sessions = |m: &BTreeMap<String, f64>, ws: &str| series(m, "dl_workspace_sessions", ws);
    let bytes = |m: &BTreeMap<String, f64>, ws: &str| series(m, "dl_workspace_database_bytes", ws);

    // Load on met-busy: three direct sessions, a pooled client inside a transaction (it holds
    // a server connection of the pooler), and a table with rows.
    let direct: Vec<_> = (0..3)
        .map(|_| connect(&uri("met-busy", false)).unwrap())
        .collect();
    let mut pooled = connect(&uri("met-busy", true)).unwrap();
    let mut tx = pooled.transaction().unwrap();
    tx.batch_execute(
        "CREATE TABLE tenant_custom.met_rows AS
           SELECT g AS id, pg_catalog.repeat('x', 200) AS pad FROM pg_catalog.generate_series(1, 20000) AS g",
    )
    .unwrap();
    let during = scrape(&server);
    // Three direct sessions and the pooler's one: sessions are there once connect returns.
    assert!(sessions(&during, "met-busy") >= 4.0, "{during:?}");
    assert_eq!(sessions(&during, "met-calm"), 0.0);
    assert_eq!(
        series(&during, "dl_workspace_pooler_clients_active", "met-busy"),
        1.0
    );
    assert!(
        series(
            &during,
            "dl_workspace_pooler_server_connections",
            "met-busy"
        ) >= 1.0
    );
    assert_eq!(
        series(&during, "dl_workspace_pooler_clients_waiting", "met-busy"),
        0.0
    );
    assert!(
        during["dl_server_connections{server=\"local\",state=\"in_use\"}"]
            >= before["dl_server_connections{server=\"local\",state=\"in_use\"}"] + 4.0
    );
    // Admission counts the direct sessions against the direct logins' cap.
    let direct_key = "dl_server_workspace_sessions{server=\"local\",way=\"direct\"}";
    assert!(during[direct_key] >= before[direct_key] + 3.0, "{during:?}");
    assert!(during["dl_server_workspace_slots{server=\"local\",way=\"direct\"}"] >= 10.0);
    let refused =
        "dl_workspace_refusals_total{workspace=\"met-busy\",server=\"local\",way=\"direct\"}";
    assert_eq!(during.get(refused), Some(&0.0), "{during:?}");
    tx.commit().unwrap();
    drop(direct);
    drop(pooled);
    let after = scrape(&server);
    assert!(
        bytes(&after, "met-busy") > bytes(&before, "met-busy") + 1_000_000.0,
        "the 20,000 rows show in the database size"
    );

    // Not on the tenants' port, with or without a token.
    let api = server.api_for("met-busy");
    assert_eq!(api.get("/metrics").status, 404);
    assert_eq!(Api::new(&server.base, None).get("/metrics").status, 404);
    // Labels are ids the platform gave: nothing a tenant wrote reaches them.
    let text = Api::new(server.metrics.as_deref().unwrap(), None)
        .get("/metrics")
        .text;
    assert!(!text.contains("met_rows"));
}

/// `serve --backup-every` backs the local server's archive up on its own: a backup appears
/// that was not there before (observed in `archive status`), and the metrics show it.
#[test]
fn serve_backs_up_the_archive_on_a_schedule() {
    let c = cluster();
    let labels = || -> Vec<String> {
        c.cli(&["archive", "status"])["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["label"].as_str().unwrap().to_string())
            .collect()
    };
    let before = labels();
    let server = Server::start(&[
        "--backup-every",
        "1s",
        "--backup-type",
        "incr",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let started = std::time::Instant::now();
    let new = loop {
        if let Some(l) = labels().into_iter().find(|l| !before.contains(l)) {
            break l;
        }
        assert!(
            started.elapsed() < common::SAFETY_NET,
            "serve took no backup; its log: {}",
            server.log_text()
        );
    };
    assert!(new.ends_with('I'), "an incremental backup: {new}");
    let m = scrape(&server);
    assert!(m["dl_server_last_backup_timestamp_seconds{server=\"local\"}"] > 1.6e9);
}
