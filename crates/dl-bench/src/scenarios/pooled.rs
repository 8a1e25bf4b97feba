//! Scenario 10: the seed's reads through the pooler the provisioning tool runs (PgBouncer in
//! transaction mode with the tool's own settings) vs directly to PostgreSQL: throughput
//! ratio pooled / direct, both measured in the same run on the same data, interleaved; and
//! the same pooler without its per-transaction session reset, for what the reset costs.

use pg_harness::{pgbouncer_bin, pgbouncer_ini, pgbouncer_version, PgBouncer, PgBouncerIni};
use postgres::{Client, NoTls};

use dl_tenancy_ctl::fences::POOLER_SETTINGS;
use dl_tenancy_ctl::local::MIN_POOLER_VERSION;
use dl_tenancy_ctl::secret::{random_password, scram_verifier};

use crate::bench::{fail, log, Bench, Endpoint, QueryMode, R};
use crate::report::{median, Scenario};
use crate::scenarios::point;
use crate::scenarios::topn::TOPN_EXT;

/// A read login made the way the tool makes them (a member of dl_tenant_read acting as it),
/// with a password, because both paths log in over TCP as an application would.
const LOGIN: &str = "bench_tcp_reader";

/// Not a target: what we expect of one extra loopback hop through a single-threaded proxy.
const EXPECTED_RATIO: f64 = 0.5;

pub fn run(b: &Bench) -> R<Scenario> {
    log("scenario 10: pooled vs direct");
    let mut sc = Scenario::new(
        10,
        "Pooled vs direct (PgBouncer, transaction mode)",
        "The seed's quick-start read (`SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at \
         DESC LIMIT 20`) and a point read by identity_key (keys uniform over the whole key space), with pgbench as a \
         read login, through PgBouncer in transaction mode with the provisioning tool's pooler settings \
         (crates/dl-tenancy-ctl/src/domain/limits.rs POOLER_SETTINGS, including max_prepared_statements) vs directly to \
         PostgreSQL. Both paths log in over loopback TCP with SCRAM; PgBouncer reaches PostgreSQL over its unix \
         socket, as the tool's local pooler does. Ratio = pooled tps / direct tps.",
    );
    sc.in_summary = true;
    let bin = pgbouncer_bin();
    let (major, minor) = pgbouncer_version(&bin)?;
    if (major, minor) < MIN_POOLER_VERSION {
        return fail(format!(
            "{} is PgBouncer {major}.{minor}; the pooled scenario needs {}.{} or later \
             (max_prepared_statements): run scripts/setup, or point PGBOUNCER at one",
            bin.display(),
            MIN_POOLER_VERSION.0,
            MIN_POOLER_VERSION.1
        ));
    }

    // The password stays in this process: the server and PgBouncer get its SCRAM verifier,
    // pgbench gets it in its environment.
    let password = random_password();
    let verifier = scram_verifier(&password);
    let mut a = b.admin()?;
    a.batch_execute(&format!(
        "CREATE ROLE {LOGIN} LOGIN IN ROLE dl_tenant_read PASSWORD '{verifier}';
         ALTER ROLE {LOGIN} SET role = 'dl_tenant_read';"
    ))?;
    let socket_dir = b.cluster.socket_dir().to_path_buf();
    let pg_port = b.cluster.port();
    let start = |settings: &[(&str, &str)]| {
        PgBouncer::start(|port, dir| {
            let ini = pgbouncer_ini(&PgBouncerIni {
                dir,
                listen_port: port,
                server_socket_dir: &socket_dir,
                server_port: pg_port,
                auth_type: "scram-sha-256",
                auth_user: None,
                auth_query: None,
                pool_mode: "transaction",
                extra: settings,
            });
            (ini, format!("\"{LOGIN}\" \"{verifier}\"\n"))
        })
    };
    let bouncer = start(POOLER_SETTINGS)?;
    // The same pooler without the reset of each server connection (0.6.0): what the reset
    // costs, measured beside it.
    let unreset: Vec<(&str, &str)> = POOLER_SETTINGS
        .iter()
        .filter(|(k, _)| !k.starts_with("server_reset_query"))
        .copied()
        .collect();
    let bouncer_unreset = start(&unreset)?;
    let direct = Endpoint {
        host: "127.0.0.1".into(),
        port: pg_port,
        password: Some(password.clone()),
    };
    let pooled = Endpoint {
        host: "127.0.0.1".into(),
        port: bouncer.port(),
        password: Some(password.clone()),
    };
    let pooled_unreset = Endpoint {
        host: "127.0.0.1".into(),
        port: bouncer_unreset.port(),
        password: Some(password),
    };
    check_same_answers(&direct, &pooled)?;

    let ks = b.cfg.sizes.key_space();
    let topn = b.write_script("pooled_topn.sql", &format!("{TOPN_EXT};\n"))?;
    let point = b.write_script(
        "pooled_point.sql",
        &point::pgbench_script("dl_resolved.people", ks),
    )?;
    // Quick mode only keeps the scenario working: one client count.
    let clients: &[u32] = if b.cfg.quick { &[2] } else { &[1, 2] };
    let mut configs = Vec::new();
    for (label, script) in [
        ("seed's top-N read", &topn),
        ("point read by identity_key", &point),
    ] {
        for mode in [QueryMode::Prepared, QueryMode::Simple] {
            for &c in clients {
                configs.push((label, script, mode, c));
            }
        }
    }
    let load_before = load_average();
    // Per repetition every configuration once on each path, the path order alternating, so
    // that the machine's drift hits both alike.
    let mut tps = vec![(Vec::new(), Vec::new()); configs.len()];
    let mut unreset_tps = vec![Vec::new(); configs.len()];
    for rep in 0..b.cfg.reps {
        log(format!(
            "scenario 10: repetition {}/{}",
            rep + 1,
            b.cfg.reps
        ));
        for (i, (_, script, mode, c)) in configs.iter().enumerate() {
            let pooled_first = rep % 2 == 1;
            let run = |to: &Endpoint| b.pgbench_at(to, LOGIN, script, *c, *mode);
            if pooled_first {
                tps[i].1.push(run(&pooled)?);
                unreset_tps[i].push(run(&pooled_unreset)?);
                tps[i].0.push(run(&direct)?);
            } else {
                tps[i].0.push(run(&direct)?);
                unreset_tps[i].push(run(&pooled_unreset)?);
                tps[i].1.push(run(&pooled)?);
            }
        }
    }
    let load_after = load_average();
    let mut ratios = Vec::new();
    let mut reset_costs = Vec::new();
    for (((label, _, mode, c), (d, p)), u) in configs.iter().zip(tps).zip(unreset_tps) {
        let what = format!("{label}, -M {}, {c} client(s)", mode.as_str());
        // The ratio within each repetition, whose two runs were back to back.
        let paired: Vec<f64> = p.iter().zip(&d).map(|(p, d)| p / d).collect();
        let reset_paired: Vec<f64> = p.iter().zip(&u).map(|(p, u)| p / u).collect();
        let base = sc.baseline(&format!("direct: {what}"), "tps", d);
        let unreset_base = sc.baseline(
            &format!("pooled without the session reset (0.5.0's pooler): {what}"),
            "tps",
            u,
        );
        let row = sc.compared(&format!("pooled: {what}"), "tps", p.clone(), base, None);
        if let Some(r) = sc.ratio(row) {
            ratios.push(format!("{what}: {r:.2} (paired {:.2})", median(&paired)));
        }
        let reset_row = sc.compared(
            &format!("pooled with the session reset vs without: {what}"),
            "tps",
            p,
            unreset_base,
            None,
        );
        if let Some(r) = sc.ratio(reset_row) {
            reset_costs.push(format!(
                "{what}: {r:.2} (paired {:.2})",
                median(&reset_paired)
            ));
        }
    }
    sc.notes.push(format!(
        "PgBouncer {major}.{minor} ({}), pool_mode=transaction, {}. Same login, data and run for both paths; \
         each repetition runs every configuration on both paths, alternating which goes first.",
        bin.display(),
        POOLER_SETTINGS
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    sc.notes.push(format!(
        "Ratios pooled / direct (of the medians; in brackets the median of each repetition's own ratio): {}. \
         Load average (1 min) of the machine before and after: {load_before} / {load_after}. Expectation, not a target: >= {EXPECTED_RATIO}, since the pooler \
         adds one loopback hop and a single-threaded proxy to every query and, on a small machine, competes with \
         pgbench and the backends for the same cores; the cheaper the query, the more that hop shows.",
        ratios.join("; ")
    ));
    sc.notes.push(format!(
        "The session reset (server_reset_query = RESET ALL with server_reset_query_always, 0.6.0: a client's \
         SET never reaches the next client of its server connection) costs one more round trip between \
         PgBouncer and PostgreSQL per transaction. Pooled tps with the reset / without it, same run: {}.",
        reset_costs.join("; ")
    ));
    sc.evidence(
        "pgbouncer.ini of the run (the userlist holds the login's SCRAM verifier)",
        bouncer.spec().ini.clone(),
    );
    drop(bouncer);
    drop(bouncer_unreset);
    Ok(sc)
}

/// Both paths answer the seed's query with the same rows, as the read role (before anything
/// is timed: a ratio of two different workloads would mean nothing).
fn check_same_answers(direct: &Endpoint, pooled: &Endpoint) -> R<()> {
    let mut answers = Vec::new();
    for to in [direct, pooled] {
        let mut c = Client::connect(
            &format!(
                "host={} port={} user={LOGIN} dbname=bench password={}",
                to.host,
                to.port,
                to.password.as_deref().unwrap_or("")
            ),
            NoTls,
        )
        .map_err(|e| format!("connect as {LOGIN} to port {}: {e}", to.port))?;
        let role: String = c.query_one("SELECT current_user::text", &[])?.get(0);
        if role != "dl_tenant_read" {
            return fail(format!(
                "{LOGIN} on port {} acts as {role}, not dl_tenant_read",
                to.port
            ));
        }
        let rows: Vec<(String, Option<String>)> = c
            .query(TOPN_EXT, &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        answers.push(rows);
    }
    if answers[0].is_empty() || answers[0] != answers[1] {
        return fail("the seed's read answers differently through the pooler than directly");
    }
    Ok(())
}

/// The 1-minute load average (other work on the machine shows in both paths, but widens the
/// spread).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
