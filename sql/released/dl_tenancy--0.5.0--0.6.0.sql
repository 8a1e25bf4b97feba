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
-- In SQL: pg_advisory_unlock_all() and the other unlock functions granted back (releasing
-- fills nothing; asyncpg's pool reset calls unlock_all on every connection it takes back);
-- bounded advisory locks for workspace logins (migration tools take one); the version
-- recorded. ALTER EXTENSION runs it in one transaction.
SET LOCAL search_path TO pg_catalog, pg_temp;

GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_unlock_all() TO PUBLIC;

-- Advisory locks, bounded (as in sql/install/08_shared_state.sql). Migration tools take one to run alone (Rails, Kysely), so
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

-- dl_meta.schema_migrations: recorded only when this runs as an update (see 0.2.0--0.3.0).
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.6.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
