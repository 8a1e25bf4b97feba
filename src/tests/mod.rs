//! `cargo pgrx test pg15`: SQL behaviour of the installed extension, one area per module.
//! Each test runs in its own transaction on a database where `CREATE EXTENSION dl_tenancy`
//! has run, as a superuser; role tests switch with `SET LOCAL ROLE`.

use pgrx::prelude::*;

mod bad_input;
mod contract;
mod guard;
mod history;
mod merge_patch;
mod pooler;
mod resolved;
mod roles;
mod write_path;

// Test-only: run a statement in a subtransaction and report its SQLSTATE ('00000' when it
// succeeds), so one test can assert many failures with their codes. It deliberately runs the
// statement with the caller's search_path, as a client would.
extension_sql!(
    r#"
CREATE FUNCTION tests.sqlstate_of(statement text) RETURNS text
    LANGUAGE plpgsql
AS $fn$
BEGIN
    EXECUTE statement;
    RETURN '00000';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$fn$;
GRANT USAGE ON SCHEMA tests TO PUBLIC;
"#,
    name = "test_helpers",
    requires = ["shared_state"],
    finalize
);

/// The SQLSTATE `statement` ends with, '00000' for success.
pub fn sqlstate_of(statement: &str) -> String {
    Spi::get_one_with_args::<String>("SELECT tests.sqlstate_of($1)", &[statement.into()])
        .expect("sqlstate_of runs")
        .expect("sqlstate_of returns a code")
}

/// Each statement that does not end with its expected SQLSTATE, as "statement: expected
/// code, got code" (empty when all do), so that a test can name every failure at once.
pub fn sqlstate_mismatches(cases: &[(&str, &str)]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|(statement, expected)| {
            let got = sqlstate_of(statement);
            (got != *expected).then(|| format!("{statement}: expected {expected}, got {got}"))
        })
        .collect()
}

pub fn run(statement: &str) {
    Spi::run(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
}

pub fn json(query: &str) -> serde_json::Value {
    Spi::get_one::<pgrx::JsonB>(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .map(|j| j.0)
        .unwrap_or(serde_json::Value::Null)
}

pub fn text(query: &str) -> Option<String> {
    Spi::get_one::<String>(query).unwrap_or_else(|e| panic!("{query}: {e}"))
}

pub fn count(query: &str) -> i64 {
    Spi::get_one::<i64>(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .expect("count is not null")
}
