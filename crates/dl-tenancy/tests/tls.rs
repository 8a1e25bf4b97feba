//! TLS on every TCP connection of the local cluster, tried the way apps and attackers connect:
//! psql (libpq) and the library's connector with the revealed URIs, direct and pooled;
//! plaintext logins refused alike for real and unknown logins; a foreign CA and a wrong host
//! name refused by verify-full; `local up` keeping its certificates.

mod common;

use common::*;
use dl_tenancy_ctl::{local, Kind};
use std::os::unix::fs::MetadataExt;

const WS: &str = "tls";

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// psql with `conninfo` runs `command`: its stdout.
fn psql_ok(conninfo: &str, command: &str, pooled: bool) -> String {
    let out = psql(conninfo, command);
    assert!(out.status.success(), "pooled={pooled}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// psql with `conninfo` cannot run `SELECT 1` (`what` says what got in if it could): its
/// stderr.
fn psql_refused(conninfo: &str, what: &str) -> String {
    let out = psql(conninfo, "SELECT 1");
    assert!(!out.status.success(), "{what}");
    stderr(&out)
}

/// An environment with the workspace [`WS`]; `None` after [`skip_or_fail`] where psql is
/// missing.
fn env_with_psql(test: &str) -> Option<Env> {
    if let Err(why) = psql_available() {
        skip_or_fail(test, &why);
        return None;
    }
    let env = Env::new();
    env.t.provision(WS).unwrap();
    Some(env)
}

#[test]
fn psql_with_the_revealed_uri_gets_verified_tls_direct_and_pooled() {
    let Some(env) = env_with_psql("psql_with_the_revealed_uri_gets_verified_tls") else {
        return;
    };
    let ca = env.dir.join("tls/ca.crt");
    for pooled in [false, true] {
        let reveal = env.t.reveal(WS, Kind::Read, pooled).unwrap();
        assert_eq!(reveal.sslmode, "verify-full");
        assert_eq!(
            reveal.ca_certificate.as_deref(),
            Some(std::fs::read_to_string(&ca).unwrap().as_str())
        );
        let uri = reveal.uri;
        assert!(uri.contains("sslmode=verify-full&sslrootcert=/"), "{uri}");
        assert!(!uri.contains('%'), "{uri}");
        // psql says how its connection is secured; the read query runs.
        let out = psql_ok(&uri, "\\conninfo", pooled);
        assert!(
            out.contains("SSL connection (protocol: TLSv1."),
            "pooled={pooled}: {out}"
        );
        psql_ok(&uri, READ_QUERY, pooled);
        // sslmode=require (encrypted, certificate not checked) works too.
        let require = with_tls(&uri, "require", None);
        let out = psql_ok(&require, "\\conninfo", pooled);
        assert!(out.contains("SSL connection"), "{out}");
        // The library's connector with the same URI.
        let mut c = connect(&uri).unwrap();
        c.batch_execute(READ_QUERY).unwrap();
    }
    // Direct: the server itself sees the session encrypted (asked by a superuser: a tenant
    // acts as its group role, which may not read its login's pg_stat_ssl row). Pooled, the
    // server's session is PgBouncer's, on the unix socket: the encrypted leg is app to pooler,
    // which psql showed above.
    let mut tenant = connect(&env.uri(WS, Kind::Read, false)).unwrap();
    let pid: i32 = tenant
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let ssl: bool = env
        .admin("postgres")
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .unwrap()
        .get(0);
    assert!(ssl, "the direct session is not encrypted");
}

/// A plaintext TCP login is refused before any password is asked, and the refusal is the same
/// for a real login and for one that does not exist (no login enumeration), direct and pooled.
#[test]
fn plaintext_tcp_logins_are_refused_alike_for_real_and_unknown_logins() {
    let Some(env) = env_with_psql("plaintext_tcp_logins_are_refused") else {
        return;
    };
    for pooled in [false, true] {
        let real = env.t.reveal(WS, Kind::Override, pooled).unwrap();
        let plain = with_tls(&real.uri, "disable", None);
        let unknown_login = "dlw_0000000000000000_read_a";
        let unknown = plain.replacen(&real.login, unknown_login, 1);
        assert_ne!(plain, unknown);
        let mut answers = vec![];
        for (uri, login) in [(&plain, real.login.as_str()), (&unknown, unknown_login)] {
            let answer = psql_refused(uri, &format!("pooled={pooled}: plaintext login got in"));
            // The answer with the login's own name taken out (a client knows what it sent).
            answers.push(answer.replace(login, "<login>"));
            let e = connect(uri).map(|_| ()).unwrap_err();
            let state = e.code().map(|c| c.code().to_string());
            answers.push(format!(
                "{state:?} {}",
                e.to_string().replace(login, "<login>")
            ));
        }
        assert_eq!(
            answers[0], answers[2],
            "pooled={pooled}: psql answers differ"
        );
        assert_eq!(answers[1], answers[3], "pooled={pooled}: answers differ");
        // Both URIs lead to a PgBouncer (the pooler, or the direct front since 0.7.0), which
        // refuses a client without TLS before it reads a login.
        assert!(answers[0].to_lowercase().contains("ssl"), "{}", answers[0]);
    }
}

#[test]
fn verify_full_refuses_another_ca_and_another_host_name() {
    let Some(env) = env_with_psql("verify_full_refuses_another_ca") else {
        return;
    };
    let (foreign, foreign_dir) = foreign_ca();
    let ca = env.dir.join("tls/ca.crt");
    for pooled in [false, true] {
        let uri = env.uri(WS, Kind::Read, pooled);
        let wrong_ca = with_tls(&uri, "verify-full", Some(&foreign));
        let err = psql_refused(&wrong_ca, &format!("pooled={pooled}: foreign CA accepted"));
        assert!(err.contains("certificate verify failed"), "{err}");
        // The library refuses it too, and says why.
        let e = dl_tenancy_ctl::connect_plain(&wrong_ca, None)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.code(), "server_unreachable");
        assert!(
            e.message.contains("not signed by a CA in sslrootcert"),
            "{}",
            e.message
        );
        assert!(!e.message.contains(&password_of(&uri)), "{}", e.message);
        // Reached by address, verified against a name the certificate does not carry:
        // verify-full refuses, verify-ca (chain only) accepts.
        let reveal = env.t.reveal(WS, Kind::Read, pooled).unwrap();
        let port = if pooled {
            env.status.pooler.port
        } else {
            env.status.postgres.port
        };
        let password = password_of(&reveal.uri);
        let kv = |mode: &str| {
            format!(
                "host=not-this-server.invalid hostaddr=127.0.0.1 port={port} user={} password={password} dbname={} sslmode={mode} sslrootcert={}",
                reveal.login,
                reveal.database,
                ca.display()
            )
        };
        let err = psql_refused(
            &kv("verify-full"),
            &format!("pooled={pooled}: wrong host name accepted"),
        );
        assert!(err.contains("does not match host name"), "{err}");
        assert!(dl_tenancy_ctl::connect_plain(&kv("verify-full"), None).is_err());
        psql_ok(&kv("verify-ca"), "SELECT 1", pooled);
        dl_tenancy_ctl::connect_plain(&kv("verify-ca"), None).unwrap();
    }
    let _ = std::fs::remove_dir_all(foreign_dir);
}

#[test]
fn local_up_keeps_its_certificates_and_remakes_missing_ones() {
    let env = Env::new();
    env.t.provision(WS).unwrap();
    let tls = env.dir.join("tls");
    let read = |f: &str| std::fs::read(tls.join(f)).unwrap();
    let before: Vec<Vec<u8>> = ["ca.crt", "ca.key", "server.crt", "server.key"]
        .iter()
        .map(|f| read(f))
        .collect();
    // Keys: 0600; the server's belongs to the user the servers run as.
    let server_uid = {
        let meta = std::fs::metadata(env.dir.join("pg/PG_VERSION")).unwrap();
        meta.uid()
    };
    for (file, owner) in [("server.key", Some(server_uid)), ("ca.key", None)] {
        let meta = std::fs::metadata(tls.join(file)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{file}");
        if let Some(uid) = owner {
            assert_eq!(meta.uid(), uid, "{file}");
        }
    }
    let opts = local::LocalOptions {
        data_dir: env.dir.clone(),
        pg_port: Some(env.status.postgres.port),
        pooler_port: Some(env.status.pooler.port),
        direct_port: Some(env.status.direct.port),
        max_connections: None,
        retention_full: None,
    };
    local::up(&opts).unwrap();
    let again: Vec<Vec<u8>> = ["ca.crt", "ca.key", "server.crt", "server.key"]
        .iter()
        .map(|f| read(f))
        .collect();
    assert_eq!(
        before, again,
        "a second `local up` changed the certificates"
    );
    // A lost server certificate is made again from the same CA; URIs keep working.
    std::fs::remove_file(tls.join("server.crt")).unwrap();
    std::fs::remove_file(tls.join("server.key")).unwrap();
    local::up(&opts).unwrap();
    assert_eq!(read("ca.crt"), before[0], "the CA changed");
    assert_ne!(read("server.crt"), before[2]);
    for pooled in [false, true] {
        env.assert_reads(WS, pooled);
    }
}
