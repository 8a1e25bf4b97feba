\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.5.0'" to load this file. \quit
-- dl_tenancy 0.4.0 -> 0.5.0: each input rule and its messages written once, and a pooler
-- lookup that does not depend on the database a client asks for.
--
-- 1. The platform's enrichment check was the last input check in PL/pgSQL, with its own copy of
-- the messages; it is now in the library with the others (src/validation.rs): same
-- signature, messages, SQLSTATEs (22004, 22023, 54000), details and grants. It reads no
-- data, so it no longer needs SECURITY DEFINER.
-- 2. dl_internal.pooler_login_lookup: what the tool's PgBouncer now asks, in one lookup
--    database per server (auth_dbname), so that a pooled login into a database that is no
--    workspace fails like any other instead of saying the database does not exist.
--    pooler_user_lookup keeps its signature and answers, on top of it.
-- A fresh 0.5.0 install runs sql/install/ only, and tests/upgrade.rs proves every upgrade path
-- ends equal to it. ALTER EXTENSION runs this in one transaction; every statement is safe to
-- run again.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- CREATE OR REPLACE keeps the grants, and resets the attributes it does not name (SECURITY
-- DEFINER, the pinned search_path) to the defaults, as for the C checks of 0.3.0.
CREATE OR REPLACE FUNCTION dl_internal.check_enrichment_input(identity_key text, identity_payload jsonb, raw_payload jsonb) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_check_enrichment_input';

-- The lookup the pooler runs; as sql/install/07_pooler_auth.sql.
CREATE OR REPLACE FUNCTION dl_internal.pooler_login_lookup(username text)
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
REVOKE ALL ON FUNCTION dl_internal.pooler_login_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_internal.pooler_login_lookup(text) TO dl_pooler_auth;

-- Same signature and result type: CREATE OR REPLACE keeps the grants.
CREATE OR REPLACE FUNCTION dl_internal.pooler_user_lookup(username text)
    RETURNS TABLE (usename name, passwd text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT l.usename, l.passwd
      FROM dl_internal.pooler_login_lookup(username) AS l
     WHERE pg_catalog.has_database_privilege(l.usename, pg_catalog.current_database(), 'CONNECT');
END;

-- dl_meta.schema_migrations: recorded only when this runs as an update (see 0.2.0--0.3.0).
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.5.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
