//! The input rules, written once: behind the tables' named CHECK constraints
//! (`dl_internal.is_valid_*`) and the helpers' input checks (`dl_internal.check_*`, which raise
//! a SQLSTATE, message, detail and hint per bad input). Declared in sql/install/02_validation.sql.
//!
//! In Rust because PostgreSQL prepares a table's CHECK expressions again for every statement
//! that writes it: the SQL-language versions were inlined, i.e. parsed and planned, on every
//! single-row write, which cost as much as the write itself (BENCHMARKS.md, scenario 4). A C
//! function is only looked up.

use crate::merge_patch::{detoast_jsonb, is_object, root};
use pgrx::fcinfo::{pg_arg_is_null, pg_getarg_datum_raw, pg_return_null};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// Longest identity_key, in bytes.
const MAX_KEY_BYTES: usize = 512;
/// Longest status, in characters.
const MAX_STATUS_CHARS: i32 = 64;
/// Largest payload or patch, uncompressed (`toast_raw_datum_size`): the stored size is the
/// compressed one, and a 19 MB patch of repetitive text compresses to a few hundred kB.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

unsafe fn text_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> &'a [u8] {
    let text = pg_sys::pg_detoast_datum_packed(pg_getarg_datum_raw(fcinfo, n).cast_mut_ptr());
    pgrx::varlena::varlena_to_byte_slice(text)
}

/// `btrim(s) <> ''`: btrim removes spaces only.
fn has_non_space(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| *b != b' ')
}

fn valid_identity_key(key: &[u8]) -> bool {
    has_non_space(key) && key.len() <= MAX_KEY_BYTES
}

unsafe fn valid_status(status: &[u8]) -> bool {
    let chars = pg_sys::pg_mbstrlen_with_len(status.as_ptr().cast(), status.len() as i32);
    has_non_space(status) && chars <= MAX_STATUS_CHARS
}

unsafe fn valid_payload_size(payload: Datum) -> bool {
    pg_sys::toast_raw_datum_size(payload) <= MAX_PAYLOAD_BYTES
}

/// `is_valid_identity_key(key text)`: a non-blank string of at most 512 bytes (NULL: unknown,
/// left to NOT NULL).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_is_valid_identity_key(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    if pg_arg_is_null(fcinfo, 0) {
        return pg_return_null(fcinfo);
    }
    Datum::from(valid_identity_key(text_arg(fcinfo, 0)))
}

/// `is_valid_status(status text)`: NULL, or a non-blank string of at most 64 characters.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_is_valid_status(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    Datum::from(pg_arg_is_null(fcinfo, 0) || valid_status(text_arg(fcinfo, 0)))
}

/// `is_valid_patch(patch jsonb)`: SQL NULL ("no patch") or a JSON object.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_is_valid_patch(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    Datum::from(
        pg_arg_is_null(fcinfo, 0) || is_object(root(detoast_jsonb(pg_getarg_datum_raw(fcinfo, 0)))),
    )
}

/// `is_valid_payload_size(payload jsonb)`: SQL NULL or at most 1 MiB uncompressed.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_is_valid_payload_size(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    Datum::from(pg_arg_is_null(fcinfo, 0) || valid_payload_size(pg_getarg_datum_raw(fcinfo, 0)))
}

// The helpers' front door: the same rules, raised with a SQLSTATE that says which input is
// wrong (22004 null, 22023 bad value, 54000 too large) instead of a constraint name.

fn raise(code: PgSqlErrorCode, message: String, detail: Option<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message, function_name!());
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

extern "C-unwind" {
    /// PostgreSQL's `jsonb_typeof(jsonb)`, called directly (see resolved_store's hashtext).
    #[link_name = "jsonb_typeof"]
    fn builtin_jsonb_typeof(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}

/// identity_key (argument `n` of the calling function): present, non-blank, at most 512 bytes.
unsafe fn check_identity_key(fcinfo: pg_sys::FunctionCallInfo, n: usize) {
    if pg_arg_is_null(fcinfo, n) {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "identity_key must not be null".into(),
            None,
            None,
        );
    }
    let key = text_arg(fcinfo, n);
    if !valid_identity_key(key) {
        // As format('got %s bytes: %L', octet_length(key), left(key, 40)).
        let shown = pg_sys::pg_mbcharcliplen(key.as_ptr().cast(), key.len() as i32, 40) as usize;
        let shown = CString::new(&key[..shown]).unwrap_or_default();
        let quoted = CStr::from_ptr(pg_sys::quote_literal_cstr(shown.as_ptr())).to_string_lossy();
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "identity_key must be a non-blank string of at most 512 bytes".into(),
            Some(format!("got {} bytes: {quoted}", key.len())),
            None,
        );
    }
}

/// A jsonb argument that must be a JSON object no larger than 1 MiB: a patch (`nullable`,
/// SQL NULL meaning "no patch") or an enrichment payload (never NULL).
unsafe fn check_object_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize, name: &str, nullable: bool) {
    if pg_arg_is_null(fcinfo, n) {
        if nullable {
            return;
        }
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be null"),
            None,
            None,
        );
    }
    let value = pg_getarg_datum_raw(fcinfo, n);
    if !is_object(root(detoast_jsonb(value))) {
        let json_type =
            pg_sys::DirectFunctionCall1Coll(Some(builtin_jsonb_typeof), pg_sys::InvalidOid, value);
        let json_type = pgrx::varlena::text_to_rust_str_unchecked(json_type.cast_mut_ptr());
        let detail = Some(format!("got a JSON {json_type}"));
        if nullable {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{name} must be a JSON object or SQL NULL"),
                detail,
                Some("Pass {\"field\": value} to set fields and {\"field\": null} to remove them; pass SQL NULL for no patch."),
            );
        }
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{name} must be a JSON object"),
            detail,
            None,
        );
    }
    if !valid_payload_size(value) {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{name} is larger than 1 MiB"),
            None,
            None,
        );
    }
}

/// The arguments of `dl_apply_*_override(identity_key, status, identity_payload_patch,
/// raw_payload_patch)`.
pub(crate) unsafe fn check_override_input(fcinfo: pg_sys::FunctionCallInfo) {
    check_identity_key(fcinfo, 0);
    if !pg_arg_is_null(fcinfo, 1) && !valid_status(text_arg(fcinfo, 1)) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "status must be NULL or a non-blank string of at most 64 characters".into(),
            None,
            None,
        );
    }
    check_object_arg(fcinfo, 2, "identity_payload_patch", true);
    check_object_arg(fcinfo, 3, "raw_payload_patch", true);
}

/// The arguments of `dl_upsert_*_enrichment(identity_key, identity_payload, raw_payload, ...)`.
unsafe fn check_enrichment_input(fcinfo: pg_sys::FunctionCallInfo) {
    check_identity_key(fcinfo, 0);
    check_object_arg(fcinfo, 1, "identity_payload", false);
    check_object_arg(fcinfo, 2, "raw_payload", false);
}

/// `dl_internal.check_identity_key(identity_key text) returns void`
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_check_identity_key(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    check_identity_key(fcinfo, 0);
    pgrx::fcinfo::pg_return_void()
}

/// `dl_internal.check_override_input(identity_key text, status text, identity_payload_patch
/// jsonb, raw_payload_patch jsonb) returns void`
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_check_override_input(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    check_override_input(fcinfo);
    pgrx::fcinfo::pg_return_void()
}

/// `dl_internal.check_enrichment_input(identity_key text, identity_payload jsonb, raw_payload
/// jsonb) returns void` (0.5.0; the same messages as the PL/pgSQL function it replaces)
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_check_enrichment_input(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    check_enrichment_input(fcinfo);
    pgrx::fcinfo::pg_return_void()
}

crate::v1_call_info!(
    pg_finfo_dl_check_identity_key,
    pg_finfo_dl_check_override_input,
    pg_finfo_dl_check_enrichment_input,
    pg_finfo_dl_is_valid_identity_key,
    pg_finfo_dl_is_valid_status,
    pg_finfo_dl_is_valid_patch,
    pg_finfo_dl_is_valid_payload_size
);
