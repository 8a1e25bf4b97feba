//! The few SPI calls the extension's C functions make: statements prepared once per backend
//! (SPI_keepplan; PostgreSQL's plan cache revalidates them after DDL) and run with the
//! privileges of whoever is executing the function.
//!
//! Two ways to run them. `execute` goes through pgrx, which turns an error of the statement
//! into a Rust panic so that the caller's Rust values are dropped, and reports it again;
//! pgrx's copy keeps SQLSTATE, message, detail and hint but loses the rest (constraint and
//! table names, context). `raw` calls PostgreSQL directly: the error goes straight to
//! PostgreSQL's error handling as it was raised, which is only sound for a caller whose
//! frames own nothing that needs dropping (the helpers, src/helpers.rs).

use pgrx::pg_sys;
use pgrx::pg_sys::Datum;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};

thread_local! {
    static PLANS: RefCell<HashMap<String, pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// A statement of the extension: `key` names it (one plan per key), `sql` builds its text the
/// first time, `argtypes` are its parameters' types, `cursor_options` force a generic or a
/// custom plan (0: the plan cache decides).
pub(crate) struct Statement<'a> {
    pub key: String,
    pub sql: &'a dyn Fn() -> String,
    pub argtypes: &'a [pg_sys::Oid],
    pub cursor_options: u32,
}

pub(crate) unsafe fn connect() {
    let rc = pg_sys::SPI_connect();
    if rc < 0 {
        failed("SPI_connect", rc);
    }
}

pub(crate) unsafe fn finish() {
    let rc = pg_sys::SPI_finish();
    if rc < 0 {
        failed("SPI_finish", rc);
    }
}

/// The statement's saved plan, prepared the first time (inside an SPI connection).
pub(crate) unsafe fn plan(statement: &Statement) -> pg_sys::SPIPlanPtr {
    PLANS.with(|plans| {
        if let Some(plan) = plans.borrow().get(&statement.key) {
            return *plan;
        }
        let sql = CString::new((statement.sql)()).expect("statement text has no NUL");
        let plan = pg_sys::SPI_prepare_cursor(
            sql.as_ptr(),
            statement.argtypes.len() as i32,
            statement.argtypes.as_ptr().cast_mut(),
            statement.cursor_options as i32,
        );
        if plan.is_null() {
            failed("SPI_prepare", pg_sys::SPI_result);
        }
        pg_sys::SPI_keepplan(plan);
        plans.borrow_mut().insert(statement.key.clone(), plan);
        plan
    })
}

/// Runs the statement (inside an SPI connection) with `args` (`nulls`: one byte per argument,
/// b'n' for NULL) and returns the number of rows it processed; its result rows are in
/// `SPI_tuptable` until `finish`.
pub(crate) unsafe fn execute(statement: &Statement, args: &[Datum], nulls: Option<&[u8]>) -> u64 {
    let plan = plan(statement);
    let nulls = nulls.map_or(std::ptr::null(), |n| n.as_ptr().cast());
    let rc = pg_sys::SPI_execute_plan(plan, args.as_ptr().cast_mut(), nulls, false, 0);
    if rc < 0 {
        failed("SPI_execute_plan", rc);
    }
    pg_sys::SPI_processed
}

/// Column `column` (1-based) of result row `row` of the last statement, or None for NULL.
pub(crate) unsafe fn result_value(row: usize, column: i32) -> Option<Datum> {
    let table = pg_sys::SPI_tuptable;
    if table.is_null() || row >= pg_sys::SPI_processed as usize {
        return None;
    }
    let mut is_null = false;
    let value = pg_sys::SPI_getbinval(
        *(*table).vals.add(row),
        (*table).tupdesc,
        column,
        &mut is_null,
    );
    (!is_null).then_some(value)
}

/// Raises an error for a negative SPI result code (from a `raw` call), guarded.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn check_rc(rc: std::ffi::c_int) {
    if rc < 0 {
        failed("SPI", rc);
    }
}

unsafe fn failed(what: &str, code: i32) -> ! {
    let text = CStr::from_ptr(pg_sys::SPI_result_code_string(code)).to_string_lossy();
    error!("dl_tenancy: {what} failed: {text}")
}

/// PostgreSQL's SPI functions without pgrx's wrapper (see the module comment): an error
/// inside them reaches the client exactly as PostgreSQL raised it. Callers keep only plain
/// values (pointers, Datums, arrays of them) alive across these calls, and never panic.
pub(crate) mod raw {
    use pgrx::pg_sys;
    use pgrx::pg_sys::Datum;
    use std::ffi::{c_char, c_int, c_long};

    extern "C-unwind" {
        #[link_name = "SPI_finish"]
        pub(crate) fn finish() -> c_int;
        #[link_name = "SPI_execute_plan"]
        pub(crate) fn execute_plan(
            plan: pg_sys::SPIPlanPtr,
            values: *mut Datum,
            nulls: *const c_char,
            read_only: bool,
            tcount: c_long,
        ) -> c_int;
        #[link_name = "SPI_getbinval"]
        pub(crate) fn getbinval(
            tuple: pg_sys::HeapTuple,
            tupdesc: pg_sys::TupleDesc,
            fnumber: c_int,
            isnull: *mut bool,
        ) -> Datum;
        #[link_name = "SPI_datumTransfer"]
        pub(crate) fn datum_transfer(value: Datum, typbyval: bool, typlen: c_int) -> Datum;
    }
}
