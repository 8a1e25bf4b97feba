-- dl_tenancy install, part 7: the connection pooler's password lookup.
--
-- PgBouncer's auth_query runs this in the database the client asks for, as a login that is a
-- member of dl_pooler_auth, on every login (no cache), so a password rotation reaches the
-- pooler at once. It answers only for tenant logins that may connect to *this* database and
-- whose password has not expired; for anyone else (superusers, the platform, another
-- workspace's logins) it returns no row, and PgBouncer refuses the login itself (as a failed
-- login: one all-NULL row, what a non-set-returning function gives, reads as a configuration
-- error to PgBouncer).
CREATE FUNCTION dl_internal.pooler_user_lookup(username text)
    RETURNS TABLE (usename name, passwd text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT a.rolname, a.rolpassword
      FROM pg_catalog.pg_authid AS a
     WHERE a.rolname OPERATOR(pg_catalog.=) username
       AND a.rolcanlogin
       AND NOT a.rolsuper
       AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil OPERATOR(pg_catalog.>) pg_catalog.now())
       AND (pg_catalog.pg_has_role(a.oid, 'dl_tenant_read', 'MEMBER')
            OR pg_catalog.pg_has_role(a.oid, 'dl_tenant_override', 'MEMBER'))
       AND pg_catalog.has_database_privilege(a.oid, pg_catalog.current_database(), 'CONNECT');
END;

REVOKE ALL ON FUNCTION dl_internal.pooler_user_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_internal.pooler_user_lookup(text) TO dl_pooler_auth;
GRANT USAGE ON SCHEMA dl_internal TO dl_pooler_auth;
