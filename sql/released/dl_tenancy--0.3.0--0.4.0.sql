\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.4.0'" to load this file. \quit
-- dl_tenancy 0.3.0 -> 0.4.0: a hostile tenant cannot reach shared state from its login.
--
-- The library of 0.4.0 also (no SQL needed): refuses patches nested deeper than the stack
-- allows (54001) instead of crashing the backend; takes its write-path locks in lock spaces
-- SQL cannot name; and, once loaded, refuses LISTEN/NOTIFY and ALTER ROLE to workspace
-- logins (src/tenant_guard.rs).
SET LOCAL search_path TO pg_catalog, pg_temp;

-- 1. Built-in functions that let any login write state shared with every other database of
--    the server, or hold it: advisory locks (the shared lock table; session locks outlive a
--    pooled client), large objects (stored data outside the contract, even for the read role)
--    and pg_notify (the server-wide notification queue). Function ACLs in pg_catalog belong to
--    each database, so this closes them here only. Superusers keep them; nobody else in this
--    database needs them (the extension's own locks do not go through SQL). REVOKE is
--    idempotent, and pg_dump carries the changed ACLs to a restored database.
DO $revoke$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::pg_catalog.regprocedure
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
           AND (p.proname OPERATOR(pg_catalog.~) '^pg_(try_)?advisory_'
                OR p.proname OPERATOR(pg_catalog.~) '^lo_'
                OR p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['loread', 'lowrite', 'pg_notify']::pg_catalog.name[]))
         ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
END
$revoke$;

-- 2. dl_meta.schema_migrations: recorded only when this runs as an update (see 0.2.0--0.3.0).
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.4.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
