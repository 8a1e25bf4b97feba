//! The one way the library (and its tests) connects to PostgreSQL or PgBouncer: TLS over TCP
//! as the connection string's `sslmode` and `sslrootcert` ask, no TLS over a unix socket.
//!
//! The `postgres` crate understands only `sslmode=disable|prefer|require` and no
//! `sslrootcert`, so both are taken out of the string here and applied to an OpenSSL
//! connector with libpq's meaning:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | - |
//! | `prefer` (libpq's default) | if the server offers TLS | no |
//! | `require` | yes | no; with an `sslrootcert`, its chain (as libpq does) |
//! | `verify-ca` | yes | chain to `sslrootcert` |
//! | `verify-full` | yes | chain to `sslrootcert` and the host name (or IP) |
//!
//! `sslrootcert` is a PEM file of trusted CA certificates (only those are trusted), or
//! `system` for the system's store; `verify-ca`/`verify-full` without it use the system's
//! store.

use crate::domain::error::{invalid, Error, ErrorCode, Result};
use crate::domain::limits::{PLATFORM_LOCK_TIMEOUT_MS, PLATFORM_STATEMENT_TIMEOUT_MS};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use postgres::config::{Host, SslMode as PgSslMode};
use postgres::Client;
use postgres_openssl::MakeTlsConnector;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            // `allow` tries without TLS first; we never prefer plaintext, so it means prefer.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(invalid(format!("unknown sslmode {other:?}"))),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub sslmode: SslMode,
    /// `sslrootcert`: a PEM file, or `system`.
    pub sslrootcert: Option<String>,
}

/// A parsed connection string: the `postgres` crate's config (without `sslmode`/`sslrootcert`)
/// and what they asked for.
pub fn parse(conn: &str) -> Result<(postgres::Config, TlsOptions)> {
    let (rest, mode, rootcert) =
        if conn.starts_with("postgresql://") || conn.starts_with("postgres://") {
            split_url(conn)
        } else {
            split_key_value(conn)?
        };
    let cfg: postgres::Config = rest
        .parse()
        .map_err(|e: postgres::Error| invalid(format!("malformed connection string: {e}")))?;
    let sslmode = match mode {
        Some(m) => SslMode::parse(&m)?,
        None => SslMode::Prefer,
    };
    Ok((
        cfg,
        TlsOptions {
            sslmode,
            sslrootcert: rootcert.filter(|r| !r.is_empty()),
        },
    ))
}

/// A config and a connector for `conn` (what [`connect`] uses; tests use it to keep the
/// `postgres` crate's errors).
pub fn client_config(conn: &str) -> Result<(postgres::Config, MakeTlsConnector)> {
    let (cfg, tls, _) = prepare(conn)?;
    Ok((cfg, tls))
}

fn prepare(conn: &str) -> Result<(postgres::Config, MakeTlsConnector, TlsOptions)> {
    let (mut cfg, tls) = parse(conn)?;
    let unix_only =
        !cfg.get_hosts().is_empty() && cfg.get_hosts().iter().all(|h| matches!(h, Host::Unix(_)));
    // PostgreSQL offers no TLS on a unix socket (nor does it need it).
    cfg.ssl_mode(match tls.sslmode {
        _ if unix_only => PgSslMode::Disable,
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    let connector = connector(&tls)?;
    Ok((cfg, connector, tls))
}

/// An OpenSSL connector that checks what `tls.sslmode` asks for.
pub fn connector(tls: &TlsOptions) -> Result<MakeTlsConnector> {
    let tls_err = |e: openssl::error::ErrorStack| {
        Error::new(ErrorCode::Internal, format!("TLS setup failed: {e}"))
    };
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls_err)?;
    let rootcert = tls.sslrootcert.as_deref().filter(|r| *r != "system");
    if let Some(path) = rootcert {
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format!("sslrootcert {path}: cannot read it: {e}")))?;
        let certs = X509::stack_from_pem(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| invalid(format!("sslrootcert {path}: no PEM certificate in it")))?;
        // Only the given CAs: not the system's store as well, as libpq.
        let mut store = X509StoreBuilder::new().map_err(tls_err)?;
        for cert in certs {
            store.add_cert(cert).map_err(tls_err)?;
        }
        builder
            .set_verify_cert_store(store.build())
            .map_err(tls_err)?;
    }
    let verify_chain =
        tls.sslmode >= SslMode::VerifyCa || (tls.sslmode == SslMode::Require && rootcert.is_some());
    if !verify_chain {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    let check_host = tls.sslmode == SslMode::VerifyFull;
    connector.set_callback(move |config, _domain| {
        config.set_verify_hostname(check_host);
        Ok(())
    });
    Ok(connector)
}

/// The statement timeout of platform sessions in this process (see
/// [`crate::domain::limits::PLATFORM_STATEMENT_TIMEOUT_MS`]).
static STATEMENT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(PLATFORM_STATEMENT_TIMEOUT_MS);

/// Lower the statement timeout of every platform session this process opens from now on
/// (`serve`: to its call timeout, so a backend never outlives the call that gave up on it).
pub fn limit_platform_statements(limit: Duration) {
    let ms = (limit.as_millis() as u64).clamp(1_000, PLATFORM_STATEMENT_TIMEOUT_MS);
    STATEMENT_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The startup `options` of a platform session: the connection string's own, then the
/// platform's lock and statement timeouts, so no tenant lock or slow statement can keep a
/// session of ours waiting (an operation that needs longer sets its own, as upgrade does).
pub(crate) fn platform_options(own: Option<&str>) -> String {
    let ours = format!(
        "-c lock_timeout={PLATFORM_LOCK_TIMEOUT_MS} -c statement_timeout={}",
        STATEMENT_TIMEOUT_MS.load(Ordering::Relaxed)
    );
    match own {
        Some(o) if !o.trim().is_empty() => format!("{o} {ours}"),
        _ => ours,
    }
}

/// A platform session on a PostgreSQL server: [`connect_plain`] with the platform's lock and
/// statement timeouts ([`platform_options`]).
pub fn connect(conn: &str, dbname: Option<&str>) -> Result<Client> {
    open(conn, dbname, true)
}

/// Connect with a connection string (URL or key/value), optionally to another database:
/// TLS as its `sslmode`/`sslrootcert` say ([`client_config`]), a 10 s connect timeout and
/// `application_name=dl-tenancy` unless it sets them. For a pooler (PgBouncer's console, a
/// pooled URI), which takes no startup options.
pub fn connect_plain(conn: &str, dbname: Option<&str>) -> Result<Client> {
    open(conn, dbname, false)
}

fn open(conn: &str, dbname: Option<&str>, platform: bool) -> Result<Client> {
    let (mut cfg, tls, opts) = prepare(conn)?;
    if platform {
        let options = platform_options(cfg.get_options());
        cfg.options(&options);
    }
    if let Some(db) = dbname {
        cfg.dbname(db);
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("dl-tenancy");
    }
    cfg.connect(tls).map_err(|e| {
        let tls_failure = is_tls_failure(&e);
        let mut err = Error::from(e);
        if err.code == ErrorCode::DatabaseError {
            // Authentication and similar failures at connect time.
            err.code = ErrorCode::ServerUnreachable;
        }
        if tls_failure {
            err.code = ErrorCode::ServerUnreachable;
            err.message = tls_hint(&opts, &err.message);
        }
        err.with_context(&format!("cannot connect to {}", describe_target(&cfg)))
    })
}

fn is_tls_failure(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<openssl::ssl::Error>() || s.is::<openssl::error::ErrorStack>() {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("TLS")
}

fn tls_hint(opts: &TlsOptions, message: &str) -> String {
    let what = match (opts.sslmode, &opts.sslrootcert) {
        (SslMode::VerifyCa | SslMode::VerifyFull, Some(ca)) => format!(
            "TLS handshake failed (sslmode={}): the server's certificate is not signed by a CA in sslrootcert {ca}{}",
            opts.sslmode.as_str(),
            if opts.sslmode == SslMode::VerifyFull { ", or does not name this host" } else { "" }
        ),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => format!(
            "TLS handshake failed (sslmode={}): the server's certificate is not trusted by the system's CAs (give sslrootcert)",
            opts.sslmode.as_str()
        ),
        (mode, _) => format!("TLS handshake failed (sslmode={})", mode.as_str()),
    };
    format!("{what}: {message}")
}

/// `host:port/db` of a config, without user or password.
pub fn describe_target(cfg: &postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or(""))
}

type Split = (String, Option<String>, Option<String>);

/// Take `sslmode` and `sslrootcert` out of a URL's query.
fn split_url(url: &str) -> Split {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut mode, mut rootcert, mut kept) = (None, None, vec![]);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(k).as_str() {
            "sslmode" => mode = Some(percent_decode(v)),
            "sslrootcert" => rootcert = Some(percent_decode(v)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, mode, rootcert)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Take `sslmode` and `sslrootcert` out of a key/value string (`host=... sslmode=require`),
/// with libpq's quoting (`key='va\'lue'`).
fn split_key_value(s: &str) -> Result<Split> {
    let (mut mode, mut rootcert, mut kept) = (None, None, String::new());
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(invalid(format!(
                "malformed connection string: no value for {key:?}"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(invalid("malformed connection string: unclosed quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                } else {
                    value.push(c);
                    chars.next();
                }
            }
        }
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => rootcert = Some(value),
            _ => {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push_str(&format!("{key}='{quoted}' "));
            }
        }
    }
    Ok((kept.trim_end().to_string(), mode, rootcert))
}

/// Where a connection string's TLS settings point: `?sslmode=...&sslrootcert=...` for URLs.
pub fn tls_query(sslmode: SslMode, sslrootcert: Option<&std::path::Path>) -> String {
    let mut q = format!("sslmode={}", sslmode.as_str());
    if let Some(p) = sslrootcert {
        q.push_str("&sslrootcert=");
        q.push_str(&crate::plan::quote::query_encode(&p.display().to_string()));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_settings_are_taken_out() {
        let (rest, mode, ca) = split_url(
            "postgresql://u:p@127.0.0.1:5/db?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt",
        );
        assert_eq!(rest, "postgresql://u:p@127.0.0.1:5/db?connect_timeout=5");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(ca.as_deref(), Some("/tmp/ca.crt"));
        assert_eq!(split_url("postgres://h/db").0, "postgres://h/db");
    }

    #[test]
    fn key_value_tls_settings_are_taken_out() {
        let (rest, mode, ca) =
            split_key_value("host=/run/x port=5 sslmode = require sslrootcert='/a b/c\\'d' user=u")
                .unwrap();
        assert_eq!(rest, "host='/run/x' port='5' user='u'");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(ca.as_deref(), Some("/a b/c'd"));
        let (cfg, tls) = parse("host=/run/x port=5 user=u dbname=d").unwrap();
        assert_eq!(cfg.get_user(), Some("u"));
        assert_eq!(tls.sslmode, SslMode::Prefer);
        assert!(parse("host=x sslmode=bogus").is_err());
    }
}
