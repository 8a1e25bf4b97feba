-- dl_tenancy install, part 7: the connection pooler's password lookup.
--
-- PgBouncer's auth_query runs, on every login (no cache, so a password rotation reaches the
-- pooler at once), as a login that is a member of dl_pooler_auth. It answers only for tenant
-- logins that may log in now (LOGIN, not expired); for anyone else (superusers, the
-- platform, unknown or revoked logins) it returns no row, and the tool's auth_query then
-- hands PgBouncer a decoy verifier, so that every refused login fails alike.

-- What the tool's pooler asks (auth_dbname: it runs in one lookup database per server, never
-- in the database the client asked for). Which database a login may enter is the server's
-- decision at the pooler's server login (pg_hba samerole, CONNECT privilege): a login into a
-- foreign database gets the same answer whether that database exists or not.
CREATE FUNCTION dl_internal.pooler_login_lookup(username text)
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
            OR pg_catalog.pg_has_role(a.oid, 'dl_tenant_override', 'MEMBER'));
END;

-- For a pooler whose auth_query runs in the database the client asked for (no auth_dbname):
-- the same, for the logins that may connect to *this* database.
CREATE FUNCTION dl_internal.pooler_user_lookup(username text)
    RETURNS TABLE (usename name, passwd text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT l.usename, l.passwd
      FROM dl_internal.pooler_login_lookup(username) AS l
     WHERE pg_catalog.has_database_privilege(l.usename, pg_catalog.current_database(), 'CONNECT');
END;

REVOKE ALL ON FUNCTION dl_internal.pooler_login_lookup(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.pooler_user_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_internal.pooler_login_lookup(text), dl_internal.pooler_user_lookup(text) TO dl_pooler_auth;
GRANT USAGE ON SCHEMA dl_internal TO dl_pooler_auth;
