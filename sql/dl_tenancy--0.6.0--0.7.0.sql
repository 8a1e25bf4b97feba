\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.7.0'" to load this file. \quit
-- dl_tenancy 0.6.0 -> 0.7.0. What 0.7.0 changes so far is in the shared library, which serves
-- 0.6.0 databases as well: admission of workspace logins to the server's connection slots
-- (src/admission.rs, with shared_preload_libraries). In SQL: the version recorded.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- dl_meta.schema_migrations: recorded only when this runs as an update (see 0.2.0--0.3.0).
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.7.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
