//! `dl_apply_person_override` / `dl_apply_company_override`: the seed's override upsert as
//! one call, returning the resolved row as jsonb (NULL when there is none).
//!
//! In Rust because it is the customer's most frequent write: as a SQL-language function
//! (0.1.0-0.2.0) its three statements were planned again on every call. It runs with the
//! caller's rights (SECURITY INVOKER), so it can do nothing the caller could not do with raw
//! SQL, and its statements are prepared once per backend with every name schema-qualified.

use crate::resolved_store::Kind;
use crate::spi;
use crate::validation::check_override_input;
use pgrx::fcinfo::{pg_arg_is_null, pg_getarg_datum_raw, pg_return_null};
use pgrx::pg_sys;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;

unsafe fn apply_override(fcinfo: pg_sys::FunctionCallInfo, kind: Kind) -> Datum {
    check_override_input(fcinfo);
    let (plural, kind) = (kind.plural(), kind.word());
    let args: Vec<Datum> = (0..4).map(|n| pg_getarg_datum_raw(fcinfo, n)).collect();
    let nulls: Vec<u8> = (0..4)
        .map(|n| {
            if pg_arg_is_null(fcinfo, n) {
                b'n'
            } else {
                b' '
            }
        })
        .collect();
    let upsert_sql = || {
        format!(
            "INSERT INTO dl_override.{kind}_overrides AS o
                    (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
             VALUES ($1, $2, $3, $4, false, pg_catalog.now())
             ON CONFLICT (identity_key) DO UPDATE
                SET status = excluded.status,
                    identity_payload_patch = excluded.identity_payload_patch,
                    raw_payload_patch = excluded.raw_payload_patch,
                    tombstoned = false,
                    updated_at = pg_catalog.now()"
        )
    };
    let read_sql = || {
        format!(
            "SELECT pg_catalog.to_jsonb(r) FROM dl_resolved.{plural} AS r
              WHERE r.identity_key OPERATOR(pg_catalog.=) $1"
        )
    };
    let text = pg_sys::TEXTOID;
    let jsonb = pg_sys::JSONBOID;
    spi::connect();
    spi::execute(
        &spi::Statement {
            key: format!("helpers/apply/{kind}"),
            sql: &upsert_sql,
            argtypes: &[text, text, jsonb, jsonb],
            cursor_options: 0,
        },
        &args,
        Some(&nulls),
    );
    spi::execute(
        &spi::Statement {
            key: format!("helpers/read/{kind}"),
            sql: &read_sql,
            argtypes: &[text],
            cursor_options: 0,
        },
        &args[..1],
        None,
    );
    // Copied out of the SPI memory before it is released.
    let row = spi::result_value(0, 1).map(|value| pg_sys::SPI_datumTransfer(value, false, -1));
    spi::finish();
    match row {
        Some(row) => row,
        None => pg_return_null(fcinfo),
    }
}

/// `dl_apply_person_override(identity_key text, status text DEFAULT NULL,
/// identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL) returns jsonb`
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_apply_person_override(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    apply_override(fcinfo, Kind::Person)
}

/// `dl_apply_company_override(...)`: the same for companies.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_apply_company_override(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    apply_override(fcinfo, Kind::Company)
}

crate::v1_call_info!(
    pg_finfo_dl_apply_person_override,
    pg_finfo_dl_apply_company_override
);
