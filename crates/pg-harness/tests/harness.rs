use pg_harness::{pgbouncer_ini, PgBouncer, PgBouncerIni, PgCluster};
use std::process::{Command, Output};

/// `psql` of the harness's PostgreSQL, running `sql` on `conn` (unaligned, tuples only).
fn psql(conn: &str, sql: &str) -> Output {
    Command::new(pg_harness::pg_bin_dir().join("psql"))
        .args(["-XAtqc", sql])
        .arg(conn)
        .output()
        .unwrap()
}

#[test]
fn cluster_starts_answers_and_cleans_up() {
    let root;
    {
        let c = PgCluster::builder()
            .conf("log_statement", "all")
            .start()
            .unwrap();
        root = c.root().to_path_buf();
        let out = psql(&c.conn_string("postgres", "postgres"), "SELECT 40 + 2");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        assert!(c.log().contains("SELECT 40 + 2"));
        assert!(!pg_harness::port_is_free(c.port()));
    }
    assert!(!root.exists(), "temporary directory removed on drop");
}

#[test]
fn pgbouncer_forwards_to_cluster() {
    let c = PgCluster::start().unwrap();
    let b = PgBouncer::start(|port, dir| {
        let ini = pgbouncer_ini(&PgBouncerIni {
            dir,
            listen_port: port,
            server_socket_dir: c.socket_dir(),
            server_port: c.port(),
            auth_type: "trust",
            auth_user: None,
            auth_query: None,
            pool_mode: "session",
            extra: &[],
        });
        (ini, "\"postgres\" \"\"\n".to_string())
    })
    .unwrap();
    let out = psql(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            b.port()
        ),
        "SELECT current_user",
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");
}
