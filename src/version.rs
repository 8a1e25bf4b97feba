//! The version of the loaded shared library, next to the SQL-level installed version.
//! After a package upgrade and before `ALTER EXTENSION dl_tenancy UPDATE` the two differ.

use pgrx::prelude::*;

/// `dl_tenancy_library_version() returns text`, declared in sql/install/06_contract.sql.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn dl_tenancy_library_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
