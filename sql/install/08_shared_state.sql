-- dl_tenancy install, part 8: no login of this database reaches state shared with the other
-- databases of the server.
--
-- Built-in functions that let any login write such state, or hold it: advisory locks (the
-- shared lock table; session locks outlive a pooled client), large objects (stored data
-- outside the contract, even for the read role), pg_notify (the server-wide notification
-- queue) and pg_logical_emit_message (WAL of any size, outside any storage quota; 0.7.0). Function ACLs in pg_catalog belong to each database, so this closes them here only.
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
                OR p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['loread', 'lowrite', 'pg_notify', 'pg_logical_emit_message']::pg_catalog.name[]))
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

-- Advisory locks, bounded (0.6.0). Migration tools take one to run alone (Rails, Kysely), so
-- tenants get them back, but never the built-ins themselves, which let one session fill the
-- shared lock table: each built-in has a namesake in public that first checks the session's
-- budget (dl_internal.take_advisory_lock_budget) and then takes the lock. A workspace login's
-- search_path names pg_catalog last (`..., public, pg_catalog`), so an unqualified
-- pg_advisory_lock(...) is this one; a qualified pg_catalog.pg_advisory_lock(...) stays
-- refused (42501). Releasing fills nothing: the unlock functions are granted back as they are.

-- The most advisory locks (distinct keys, session and transaction ones together) one session
-- may hold through SQL; the next one is refused with 54000. A workspace has at most 20
-- sessions, so at most 320 of the lock table's entries.
CREATE FUNCTION dl_internal.take_advisory_lock_budget() RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $budget$
BEGIN
    IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks AS l
         WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'
           AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
           AND l.objsubid OPERATOR(pg_catalog.=) ANY (ARRAY[1, 2]::pg_catalog.int2[]))
       OPERATOR(pg_catalog.>=) 16 THEN
        RAISE EXCEPTION 'a session may hold at most 16 advisory locks'
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = 'Advisory locks take entries of a lock table that every database of the server shares.',
                  HINT = 'Release locks you no longer need (pg_advisory_unlock), or use transaction-level locks.';
    END IF;
END
$budget$;
REVOKE ALL ON FUNCTION dl_internal.take_advisory_lock_budget() FROM PUBLIC;

CREATE FUNCTION public.pg_advisory_lock(key bigint) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_lock(key);
END;
CREATE FUNCTION public.pg_advisory_lock(key1 integer, key2 integer) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_lock(key1, key2);
END;
CREATE FUNCTION public.pg_advisory_lock_shared(key bigint) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_lock_shared(key);
END;
CREATE FUNCTION public.pg_advisory_lock_shared(key1 integer, key2 integer) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_lock_shared(key1, key2);
END;
CREATE FUNCTION public.pg_try_advisory_lock(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_lock(key);
END;
CREATE FUNCTION public.pg_try_advisory_lock(key1 integer, key2 integer) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_lock(key1, key2);
END;
CREATE FUNCTION public.pg_try_advisory_lock_shared(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_lock_shared(key);
END;
CREATE FUNCTION public.pg_try_advisory_lock_shared(key1 integer, key2 integer) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_lock_shared(key1, key2);
END;
CREATE FUNCTION public.pg_advisory_xact_lock(key bigint) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_xact_lock(key);
END;
CREATE FUNCTION public.pg_advisory_xact_lock(key1 integer, key2 integer) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_xact_lock(key1, key2);
END;
CREATE FUNCTION public.pg_advisory_xact_lock_shared(key bigint) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_xact_lock_shared(key);
END;
CREATE FUNCTION public.pg_advisory_xact_lock_shared(key1 integer, key2 integer) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_advisory_xact_lock_shared(key1, key2);
END;
CREATE FUNCTION public.pg_try_advisory_xact_lock(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_xact_lock(key);
END;
CREATE FUNCTION public.pg_try_advisory_xact_lock(key1 integer, key2 integer) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_xact_lock(key1, key2);
END;
CREATE FUNCTION public.pg_try_advisory_xact_lock_shared(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_xact_lock_shared(key);
END;
CREATE FUNCTION public.pg_try_advisory_xact_lock_shared(key1 integer, key2 integer) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT dl_internal.take_advisory_lock_budget();
    SELECT pg_catalog.pg_try_advisory_xact_lock_shared(key1, key2);
END;

REVOKE ALL ON FUNCTION public.pg_advisory_lock(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_lock(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_lock_shared(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_lock_shared(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_lock(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_lock(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_lock_shared(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_lock_shared(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_xact_lock(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_xact_lock(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_xact_lock_shared(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_advisory_xact_lock_shared(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_xact_lock(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_xact_lock(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_xact_lock_shared(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.pg_try_advisory_xact_lock_shared(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    public.pg_advisory_lock(bigint),
    public.pg_advisory_lock(integer, integer),
    public.pg_advisory_lock_shared(bigint),
    public.pg_advisory_lock_shared(integer, integer),
    public.pg_try_advisory_lock(bigint),
    public.pg_try_advisory_lock(integer, integer),
    public.pg_try_advisory_lock_shared(bigint),
    public.pg_try_advisory_lock_shared(integer, integer),
    public.pg_advisory_xact_lock(bigint),
    public.pg_advisory_xact_lock(integer, integer),
    public.pg_advisory_xact_lock_shared(bigint),
    public.pg_advisory_xact_lock_shared(integer, integer),
    public.pg_try_advisory_xact_lock(bigint),
    public.pg_try_advisory_xact_lock(integer, integer),
    public.pg_try_advisory_xact_lock_shared(bigint),
    public.pg_try_advisory_xact_lock_shared(integer, integer)
    TO dl_tenant_read, dl_tenant_override;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock(bigint), pg_catalog.pg_advisory_unlock(integer, integer),
    pg_catalog.pg_advisory_unlock_shared(bigint), pg_catalog.pg_advisory_unlock_shared(integer, integer) TO PUBLIC;
