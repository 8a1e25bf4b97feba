//! `dl_internal.overridden_fields(status text, identity_payload_patch jsonb) returns text[]`:
//! which top-level fields an override changes, so that an app can show "edited by you": the
//! keys of the identity patch (also those it removes), plus "status" when the override sets
//! it; sorted bytewise (COLLATE "C"), no duplicates, `{}` when there are none.
//!
//! Every resolved-row refresh computes it; in Rust because the SQL version (0.2.0) was a
//! non-inlinable SQL function, planned again on every call.

use crate::merge_patch::{detoast_jsonb, is_object, root, Pairs};
use pgrx::fcinfo::{pg_arg_is_null, pg_getarg_datum_raw};
use pgrx::pg_sys;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn dl_overridden_fields(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    let mut fields: Vec<&[u8]> = Vec::new();
    if !pg_arg_is_null(fcinfo, 1) {
        let patch = root(detoast_jsonb(pg_getarg_datum_raw(fcinfo, 1)));
        if !is_object(patch) {
            // As jsonb_object_keys, which 0.2.0 called, says it (the table allows only objects).
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "identity_payload_patch must be a JSON object"
            );
        }
        let mut pairs = Pairs::new(patch);
        while let Some((key, _)) = pairs.next() {
            let name = key.val.string;
            fields.push(std::slice::from_raw_parts(
                name.val.cast::<u8>(),
                name.len as usize,
            ));
        }
    }
    if !pg_arg_is_null(fcinfo, 0) {
        fields.push(b"status");
    }
    fields.sort_unstable();
    fields.dedup();
    let texts: Vec<Datum> = fields
        .iter()
        .map(|f| {
            Datum::from(pg_sys::cstring_to_text_with_len(
                f.as_ptr().cast(),
                f.len() as i32,
            ))
        })
        .collect();
    crate::text_array(&texts)
}

crate::v1_call_info!(pg_finfo_dl_overridden_fields);
