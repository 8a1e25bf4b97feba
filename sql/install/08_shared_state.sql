-- dl_tenancy install, part 8: no login of this database reaches state shared with the other
-- databases of the server.
--
-- Built-in functions that let any login write such state, or hold it: advisory locks (the
-- shared lock table; session locks outlive a pooled client), large objects (stored data
-- outside the contract, even for the read role) and pg_notify (the server-wide notification
-- queue). Function ACLs in pg_catalog belong to each database, so this closes them here only.
-- Superusers keep them; nobody else in this database needs them (the extension's own locks
-- do not go through SQL). pg_dump carries the changed ACLs to a restored database. The
-- library refuses LISTEN/NOTIFY and ALTER ROLE to workspace logins (src/tenant_guard.rs).
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

-- Releasing locks fills nothing, and drivers' pools call it on every connection they take back
-- (asyncpg's reset: `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`):
-- revoked, every query through an asyncpg pool failed with 42501 (0.6.0 grants it back).
GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock_all() TO PUBLIC;
