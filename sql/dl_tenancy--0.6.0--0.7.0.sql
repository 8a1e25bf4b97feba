\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.7.0'" to load this file. \quit
-- dl_tenancy 0.6.0 -> 0.7.0. Most of what 0.7.0 changes is in the shared library, which serves
-- 0.6.0 databases as well: admission of workspace logins to the server's connection slots
-- (src/admission.rs), the memory share and the storage quota (src/quota.rs), all with
-- shared_preload_libraries. In SQL: pg_logical_emit_message closed to PUBLIC (it writes WAL of
-- any size, which no storage quota counts), as part 8 of the install does; the indexes of the
-- override history's retention; the version recorded.
SET LOCAL search_path TO pg_catalog, pg_temp;

REVOKE EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, text),
                           pg_catalog.pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC;

-- The override history's retention (src/history.rs, in the library: rows past
-- dl_tenancy.history_max_age or beyond dl_tenancy.history_max_mb are deleted, oldest first, at
-- each write of an override) finds the oldest rows by these indexes, as part 3 of the install
-- makes them; a database without them has no retention. Building them holds writes of
-- overrides (not reads) for as long as it takes to index the existing history.
CREATE INDEX person_override_history_changed_at_idx ON dl_override.person_override_history (changed_at, history_id);
CREATE INDEX company_override_history_changed_at_idx ON dl_override.company_override_history (changed_at, history_id);

-- dl_meta.schema_migrations: recorded only when this runs as an update (see 0.2.0--0.3.0).
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.7.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
