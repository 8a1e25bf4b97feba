//! The local cluster's TLS certificates, made by the tool: a CA of its own and a server
//! certificate it signs, for PostgreSQL and PgBouncer alike (both run as the server OS user).
//!
//! Files in `<dir>` (`<data dir>/tls/`):
//! - `ca.crt` (0644): what clients trust (`sslrootcert`); `ca.key` (0600, the tool's user);
//! - `server.crt` (0644), `server.key` (0600, the server OS user: PostgreSQL refuses a key
//!   others can read).
//!
//! [`ensure`] keeps what is there and valid (same CA, names covered, 30 days left) and makes
//! the rest: a missing or expiring CA means a new CA and server certificate; a server
//! certificate that is missing, expiring, not the CA's or lacks a name is made again.

use crate::domain::error::invalid;

use crate::domain::error::{Error, ErrorCode, Result};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How long the CA is valid (then `local up` makes a new one).
pub const CA_VALID_DAYS: u32 = 3650;
/// How long a server certificate is valid (within what clients accept for leaf certificates).
pub const SERVER_VALID_DAYS: u32 = 825;
/// A certificate with less left than this is made again by the next `local up`.
pub const RENEW_DAYS_BEFORE: u32 = 30;

/// The certificate files of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }
}

fn tls_error(what: &str) -> impl Fn(openssl::error::ErrorStack) -> Error + '_ {
    move |e| Error::new(ErrorCode::LocalServer, format!("{what}: {e}"))
}

/// Make (or keep) the CA and a server certificate for `names` (IP addresses and DNS names)
/// in `dir`. Returns the files and whether anything was written.
pub fn ensure(dir: &Path, names: &[&str]) -> Result<(CertFiles, bool)> {
    fs::create_dir_all(dir)?;
    // The server user reads server.* inside; everybody may read ca.crt.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let files = CertFiles::in_dir(dir);
    let mut changed = false;
    let ca = match load_valid_ca(&files) {
        Some(ca) => ca,
        None => {
            let (cert, key) = make_ca()?;
            write_file(&files.ca_key, &pem_key(&key)?, 0o600, false)?;
            write_file(&files.ca_cert, &pem_cert(&cert)?, 0o644, false)?;
            changed = true;
            (cert, key)
        }
    };
    if changed || !server_cert_is_valid(&files, &ca.0, names) {
        let (cert, key) = make_server_cert(&ca.0, &ca.1, names)?;
        write_file(&files.server_key, &pem_key(&key)?, 0o600, true)?;
        write_file(&files.server_cert, &pem_cert(&cert)?, 0o644, true)?;
        changed = true;
    } else {
        // Kept: make sure the server user still owns its key (a copied data directory).
        pg_harness::chown_to_server_user(&files.server_key)?;
        fs::set_permissions(&files.server_key, fs::Permissions::from_mode(0o600))?;
    }
    Ok((files, changed))
}

fn pem_key(key: &PKey<Private>) -> Result<Vec<u8>> {
    key.private_key_to_pem_pkcs8()
        .map_err(tls_error("writing a key"))
}

fn pem_cert(cert: &X509) -> Result<Vec<u8>> {
    cert.to_pem().map_err(tls_error("writing a certificate"))
}

/// Write through a temporary file created with `mode` (never readable by others, not even
/// for a moment), then rename; `for_server`: owned by the server OS user.
fn write_file(path: &Path, contents: &[u8], mode: u32, for_server: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    if for_server {
        pg_harness::chown_to_server_user(&tmp)?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

fn new_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(tls_error("EC group"))?;
    let ec = EcKey::generate(&group).map_err(tls_error("generating a key"))?;
    PKey::from_ec_key(ec).map_err(tls_error("generating a key"))
}

fn subject(cn: &str) -> Result<openssl::x509::X509Name> {
    let e = tls_error("building a certificate name");
    let mut name = X509NameBuilder::new().map_err(&e)?;
    name.append_entry_by_text("O", "dl-tenancy local cluster")
        .map_err(&e)?;
    name.append_entry_by_text("CN", cn).map_err(&e)?;
    Ok(name.build())
}

fn builder(
    name: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
    days: u32,
) -> Result<X509Builder> {
    let e = tls_error("building a certificate");
    let mut b = X509Builder::new().map_err(&e)?;
    b.set_version(2).map_err(&e)?;
    let mut serial = BigNum::new().map_err(&e)?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false).map_err(&e)?;
    let serial = serial.to_asn1_integer().map_err(&e)?;
    b.set_serial_number(&serial).map_err(&e)?;
    b.set_subject_name(name).map_err(&e)?;
    b.set_pubkey(key).map_err(&e)?;
    // Valid from a minute ago: a client clock slightly behind still accepts it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let not_before = Asn1Time::from_unix(now - 60).map_err(&e)?;
    let not_after = Asn1Time::days_from_now(days).map_err(&e)?;
    b.set_not_before(&not_before).map_err(&e)?;
    b.set_not_after(&not_after).map_err(&e)?;
    Ok(b)
}

fn make_ca() -> Result<(X509, PKey<Private>)> {
    let e = tls_error("making the CA");
    let key = new_key()?;
    // A name of its own: a client that trusts another cluster's CA then fails with "unable
    // to get local issuer certificate", not a signature error against a namesake.
    let mut id = [0u8; 6];
    openssl::rand::rand_bytes(&mut id).map_err(&e)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let name = subject(&format!("dl-tenancy local CA {id}"))?;
    let mut b = builder(&name, &key, CA_VALID_DAYS)?;
    b.set_issuer_name(&name).map_err(&e)?;
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .pathlen(0)
            .build()
            .map_err(&e)?,
    )
    .map_err(&e)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .map_err(&e)?,
    )
    .map_err(&e)?;
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .map_err(&e)?;
    b.append_extension(ski).map_err(&e)?;
    b.sign(&key, MessageDigest::sha256()).map_err(&e)?;
    Ok((b.build(), key))
}

fn make_server_cert(
    ca: &X509,
    ca_key: &PKey<Private>,
    names: &[&str],
) -> Result<(X509, PKey<Private>)> {
    let e = tls_error("making the server certificate");
    let key = new_key()?;
    let cn = names.first().copied().unwrap_or("localhost");
    let name = subject(cn)?;
    let mut b = builder(&name, &key, SERVER_VALID_DAYS)?;
    b.set_issuer_name(ca.subject_name()).map_err(&e)?;
    b.append_extension(BasicConstraints::new().critical().build().map_err(&e)?)
        .map_err(&e)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .map_err(&e)?,
    )
    .map_err(&e)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(&e)?)
        .map_err(&e)?;
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let san = san.build(&b.x509v3_context(Some(ca), None)).map_err(&e)?;
    b.append_extension(san).map_err(&e)?;
    b.sign(ca_key, MessageDigest::sha256()).map_err(&e)?;
    Ok((b.build(), key))
}

fn read_cert(path: &Path) -> Option<X509> {
    X509::from_pem(&fs::read(path).ok()?).ok()
}

fn read_key(path: &Path) -> Option<PKey<Private>> {
    PKey::private_key_from_pem(&fs::read(path).ok()?).ok()
}

fn lasts(cert: &X509) -> bool {
    Asn1Time::days_from_now(RENEW_DAYS_BEFORE)
        .map(|t| cert.not_after() > t)
        .unwrap_or(false)
}

fn load_valid_ca(files: &CertFiles) -> Option<(X509, PKey<Private>)> {
    let cert = read_cert(&files.ca_cert)?;
    let key = read_key(&files.ca_key)?;
    let matches = cert
        .public_key()
        .ok()
        .is_some_and(|public| public.public_eq(&key));
    (matches && lasts(&cert)).then_some((cert, key))
}

fn server_cert_is_valid(files: &CertFiles, ca: &X509, names: &[&str]) -> bool {
    let (Some(cert), Some(key)) = (read_cert(&files.server_cert), read_key(&files.server_key))
    else {
        return false;
    };
    let signed_by_ca = ca
        .public_key()
        .ok()
        .and_then(|ca_key| cert.verify(&ca_key).ok())
        .unwrap_or(false);
    let key_matches = cert
        .public_key()
        .ok()
        .is_some_and(|public| public.public_eq(&key));
    let sans: Vec<String> = cert
        .subject_alt_names()
        .map(|list| {
            list.iter()
                .filter_map(|n| {
                    n.dnsname().map(str::to_string).or_else(|| {
                        n.ipaddress().and_then(|b| match b.len() {
                            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
                            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
                            _ => None,
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let covers = names.iter().all(|n| {
        let n = n
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| n.to_string());
        sans.contains(&n)
    });
    signed_by_ca && key_matches && covers && lasts(&cert)
}

/// A CA file for `server add --ca-file`: an absolute path to PEM certificates.
pub(crate) fn check_ca_file(path: &std::path::Path) -> Result<String> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    read_ca_pem(&path.display().to_string())?;
    Ok(path.display().to_string())
}

/// The PEM text of a CA file, checked to hold at least one certificate.
pub(crate) fn read_ca_pem(path: &str) -> Result<String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("CA file {path}: cannot read it: {e}")))?;
    match openssl::x509::X509::stack_from_pem(pem.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(invalid(format!("CA file {path}: no PEM certificate in it"))),
    }
}
