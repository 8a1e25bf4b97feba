\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.6.0'" to load this file. \quit
-- dl_tenancy 0.5.0 -> 0.6.0: a security release, almost all of it in the library.
--
-- What 0.6.0 changes is in the shared library, which serves 0.5.0 databases as well:
-- - the utility hook refuses workspace logins GRANT, ALTER DEFAULT PRIVILEGES, CREATE/ALTER
--   POLICY and GRANT role to roles outside their workspace, and LOCK TABLE outside
--   tenant_custom; the platform's load login skips such statements of a restored backup;
-- - payloads and patches are limited to 1 MiB uncompressed (the CHECK constraints call the
--   same C function, dl_internal.is_valid_payload_size, so no constraint is replaced);
-- - errors reach clients without Rust internals;
-- - with shared_preload_libraries, a watchdog ends sessions of retired logins and tenant
--   transactions open past dl_tenancy.transaction_limit.
-- In SQL it grants back pg_advisory_unlock_all() (releasing locks fills nothing; asyncpg's
-- pool reset calls it on every connection it takes back) and records the version. ALTER
-- EXTENSION runs it in one transaction; it is safe to run again.
SET LOCAL search_path TO pg_catalog, pg_temp;

GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock_all() TO PUBLIC;

-- dl_meta.schema_migrations: recorded only when this runs as an update (see 0.2.0--0.3.0).
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.6.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
