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
use pgrx::fcinfo::{pg_arg_is_null, pg_getarg_datum_raw};
use pgrx::pg_sys;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;
use std::ffi::c_char;

/// What one call runs: its checked arguments and the two saved plans.
#[repr(C)]
struct Call {
    args: [Datum; 4],
    nulls: [c_char; 4],
    upsert: pg_sys::SPIPlanPtr,
    read: pg_sys::SPIPlanPtr,
}

/// The part that can fail in Rust, guarded: the input checks (22004/22023/54000, raised
/// through pgrx), the SPI connection and the plans.
#[pg_guard]
unsafe extern "C-unwind" fn prepare(fcinfo: pg_sys::FunctionCallInfo, company: bool) -> Call {
    check_override_input(fcinfo);
    let kind = if company { Kind::Company } else { Kind::Person };
    let (plural, kind) = (kind.plural(), kind.word());
    let mut call = Call {
        args: [Datum::from(0); 4],
        nulls: [b' ' as c_char; 4],
        upsert: std::ptr::null_mut(),
        read: std::ptr::null_mut(),
    };
    for n in 0..4 {
        if pg_arg_is_null(fcinfo, n) {
            call.nulls[n] = b'n' as c_char;
        } else {
            call.args[n] = pg_getarg_datum_raw(fcinfo, n);
        }
    }
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
    call.upsert = spi::plan(&spi::Statement {
        key: format!("helpers/apply/{kind}"),
        sql: &upsert_sql,
        argtypes: &[text, text, jsonb, jsonb],
        cursor_options: 0,
    });
    call.read = spi::plan(&spi::Statement {
        key: format!("helpers/read/{kind}"),
        sql: &read_sql,
        argtypes: &[text],
        cursor_options: 0,
    });
    call
}

/// Not guarded, on purpose: the statements run through `spi::raw`, so an error they raise (a
/// CHECK of the override table, a unique or serialization failure, a timeout) reaches the
/// client as PostgreSQL raised it, constraint name and context included. pgrx would turn it
/// into a panic and report a copy. Nothing here owns anything to drop, or panics.
unsafe fn apply_override(fcinfo: pg_sys::FunctionCallInfo, company: bool) -> Datum {
    let mut call = prepare(fcinfo, company);
    let rc = spi::raw::execute_plan(
        call.upsert,
        call.args.as_mut_ptr(),
        call.nulls.as_ptr(),
        false,
        0,
    );
    spi::check_rc(rc);
    let rc = spi::raw::execute_plan(
        call.read,
        call.args.as_mut_ptr(),
        std::ptr::null(),
        false,
        0,
    );
    spi::check_rc(rc);
    let table = pg_sys::SPI_tuptable;
    let mut is_null = true;
    let mut row = Datum::from(0);
    if !table.is_null() && pg_sys::SPI_processed > 0 {
        row = spi::raw::getbinval(*(*table).vals, (*table).tupdesc, 1, &mut is_null);
        if !is_null {
            // Copied out of the SPI memory before it is released.
            row = spi::raw::datum_transfer(row, false, -1);
        }
    }
    spi::check_rc(spi::raw::finish());
    if is_null {
        (*fcinfo).isnull = true;
    }
    row
}

/// `dl_apply_person_override(identity_key text, status text DEFAULT NULL,
/// identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL) returns jsonb`
#[no_mangle]
pub unsafe extern "C-unwind" fn dl_apply_person_override(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    apply_override(fcinfo, false)
}

/// `dl_apply_company_override(...)`: the same for companies.
#[no_mangle]
pub unsafe extern "C-unwind" fn dl_apply_company_override(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    apply_override(fcinfo, true)
}

crate::v1_call_info!(
    pg_finfo_dl_apply_person_override,
    pg_finfo_dl_apply_company_override
);
