//! dl_tenancy: `CREATE EXTENSION dl_tenancy` turns an empty database into the customer data
//! contract (see README.md). The schema lives in plain SQL: the current one under
//! `sql/install/`, one file per concern, pulled in below in order (a fresh install runs only
//! these), and each version's upgrade script under `sql/`. Rust provides only what pays off
//! in Rust.

use pgrx::prelude::*;

/// The record PostgreSQL looks up (`pg_finfo_<symbol>`) to call a hand-written C function
/// with the version-1 calling convention.
macro_rules! v1_call_info {
    ($($finfo:ident),+ $(,)?) => {
        $(
            #[no_mangle]
            pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
                const V1_API: ::pgrx::pg_sys::Pg_finfo_record =
                    ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
                &V1_API
            }
        )+
    };
}
pub(crate) use v1_call_info;

/// A one-dimensional text[] of the given text datums; `{}` when there are none.
pub(crate) unsafe fn text_array(texts: &[pg_sys::Datum]) -> pg_sys::Datum {
    if texts.is_empty() {
        return pg_sys::Datum::from(pg_sys::construct_empty_array(pg_sys::TEXTOID));
    }
    pg_sys::Datum::from(pg_sys::construct_array(
        texts.as_ptr().cast_mut(),
        texts.len() as i32,
        pg_sys::TEXTOID,
        -1,
        false,
        pg_sys::TYPALIGN_INT as std::ffi::c_char,
    ))
}

/// Items of a parse-tree List of pointers.
pub(crate) unsafe fn list_items<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return vec![];
    }
    (0..(*list).length as usize)
        .map(|i| (*(*list).elements.add(i)).ptr_value.cast())
        .collect()
}

/// A read-only setting whose value `show` renders when read (`SHOW`, `current_setting`): the
/// server-wide figures the platform reads as JSON, hidden from everyone but superusers.
pub(crate) fn define_figures(
    name: &'static std::ffi::CStr,
    description: &'static std::ffi::CStr,
    setting: &'static pgrx::guc::GucSetting<Option<std::ffi::CString>>,
    show: unsafe extern "C-unwind" fn() -> *const std::ffi::c_char,
) {
    use pgrx::guc::{GucContext, GucFlags, GucRegistry};
    // SAFETY: `show` is guarded by its definer; the setting cannot be set (internal).
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            description,
            c"",
            setting,
            GucContext::Internal,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL,
            None,
            None,
            Some(show),
        );
    }
}

mod admission;
mod alloc;
mod disk;
mod elsewhere;
mod helpers;
mod history;
mod history_ledger;
mod locks;
mod logbound;
mod logins;
mod merge_patch;
mod overridden_fields;
mod quota;
mod resolved_store;
mod spi;
mod tempfiles;
mod tenant_guard;
mod validation;
mod version;
mod watchdog;

::pgrx::pg_module_magic!(name, version);

#[global_allocator]
static ALLOCATOR: alloc::WithReserve = alloc::WithReserve;

/// Runs once per process, when the library is first loaded (for workspace databases: at
/// session start, through `session_preload_libraries`; in the postmaster, through
/// `shared_preload_libraries`, which also starts the watchdog).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    quiet_panic_hook();
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    watchdog::define_settings(preloading);
    admission::define_settings();
    quota::define_settings();
    history::define_settings();
    disk::define_settings();
    logbound::define_settings();
    tempfiles::init(preloading);
    tenant_guard::install();
    quota::install_session_hook();
    if preloading {
        watchdog::register();
        admission::install();
        quota::install();
        history_ledger::install();
        disk::install();
        logbound::install();
        elsewhere::install();
    }
}

/// Replaces pgrx's panic hook, which captures a Rust backtrace at every panic, including the
/// one pgrx makes of each PostgreSQL error raised under a Rust frame; pgrx then appends it
/// to the error's DETAIL. With RUST_BACKTRACE set in the server's environment, a client read
/// ~20 frames of the extension's internals. The hook belongs to this library's copy of the
/// Rust runtime only, and the error itself (SQLSTATE, message, detail, hint) is unchanged.
fn quiet_panic_hook() {
    std::panic::set_hook(Box::new(|_| {}));
}

// The install script, in order. Every piece runs with search_path = pg_catalog, pg_temp (set
// first), so an unqualified name that is not a built-in fails loudly instead of resolving
// somewhere a tenant could reach. SET LOCAL, not SET: CREATE EXTENSION restores a SET LOCAL
// when the script ends, while a plain SET would stay in the installing session.
extension_sql!(
    "SET LOCAL search_path TO pg_catalog, pg_temp;\n",
    name = "pin_search_path",
    bootstrap
);
extension_sql_file!(
    "../sql/install/01_roles_and_schemas.sql",
    name = "roles_and_schemas",
    requires = ["pin_search_path"]
);
extension_sql_file!(
    "../sql/install/02_validation.sql",
    name = "validation",
    requires = ["roles_and_schemas"]
);
extension_sql_file!(
    "../sql/install/03_tables.sql",
    name = "tables",
    requires = ["validation"]
);
extension_sql_file!(
    "../sql/install/04_resolved.sql",
    name = "resolved",
    requires = ["tables"]
);
extension_sql_file!(
    "../sql/install/05_helpers.sql",
    name = "helpers",
    requires = ["resolved"]
);
extension_sql_file!(
    "../sql/install/06_contract.sql",
    name = "contract",
    requires = ["helpers"]
);
extension_sql_file!(
    "../sql/install/07_pooler_auth.sql",
    name = "pooler_auth",
    requires = ["contract"]
);
extension_sql_file!(
    "../sql/install/08_shared_state.sql",
    name = "shared_state",
    requires = ["pooler_auth"]
);
// Upgrade scripts (sql/dl_tenancy--A--B.sql) are not part of a fresh install: they only bring
// an older database to this schema, and tests/upgrade.rs proves that every supported path ends
// equal to a fresh install.

// In-database tests: `cargo pgrx test` builds with the pg_test feature.
#[cfg(feature = "pg_test")]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
