-- dl_tenancy install, part 1: group roles and schemas.
--
-- Every name in the install script is schema-qualified (pg_catalog., dl_*.) and every
-- function pins its search_path, so nothing a tenant plants in tenant_custom, public or
-- pg_temp can change what this script or the functions it creates resolve to.

-- Roles are cluster-wide: create them only when missing, so that the second, third, ...
-- database of one cluster installs too. A pre-existing role with that name must still be
-- a plain group role: refuse to hand privileges to a login or a superuser by accident.
DO $roles$
DECLARE
    wanted text;
    existing record;
BEGIN
    FOREACH wanted IN ARRAY ARRAY['dl_tenant_read', 'dl_tenant_override', 'dl_platform_runtime', 'dl_pooler_auth']
    LOOP
        SELECT r.rolname, r.rolsuper, r.rolcanlogin, r.rolcreaterole, r.rolbypassrls
          INTO existing
          FROM pg_catalog.pg_roles AS r
         WHERE r.rolname OPERATOR(pg_catalog.=) wanted;
        IF NOT FOUND THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', wanted);
        ELSIF existing.rolsuper OR existing.rolcanlogin OR existing.rolcreaterole OR existing.rolbypassrls THEN
            RAISE EXCEPTION 'role "%" exists but is not a plain group role', wanted
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'dl_tenancy grants its privileges to this role; it must be NOLOGIN, NOSUPERUSER, NOCREATEROLE, NOBYPASSRLS.',
                      HINT = pg_catalog.format('ALTER ROLE %I NOLOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS, then retry.', wanted);
        END IF;
    END LOOP;
END
$roles$;

-- Plain CREATE SCHEMA (no IF NOT EXISTS): installing into a database where a schema of that
-- name already exists must fail instead of adopting an object somebody else created.
CREATE SCHEMA dl_cache;
CREATE SCHEMA dl_override;
CREATE SCHEMA dl_resolved;
CREATE SCHEMA dl_meta;
CREATE SCHEMA dl_internal;
CREATE SCHEMA tenant_custom;

COMMENT ON SCHEMA dl_cache IS 'Platform-owned: base enrichment records written by the platform runtime.';
COMMENT ON SCHEMA dl_override IS 'Platform-owned: customer corrections (JSON Merge Patch over the base records).';
COMMENT ON SCHEMA dl_resolved IS 'Platform-owned: read-only views of base records with customer overrides applied.';
COMMENT ON SCHEMA dl_meta IS 'Platform-owned: extension migrations and tenant settings.';
COMMENT ON SCHEMA dl_internal IS 'Platform-internal machinery (resolved-row store, triggers); not part of the customer contract.';
COMMENT ON SCHEMA tenant_custom IS 'Customer-owned: full DDL and DML for the override role.';

-- Nobody creates objects in public (PostgreSQL 15 already says so; older templates did not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA dl_resolved TO dl_tenant_read, dl_tenant_override, dl_platform_runtime;
GRANT USAGE ON SCHEMA dl_override TO dl_tenant_override, dl_platform_runtime;
GRANT USAGE ON SCHEMA dl_cache, dl_meta, dl_internal TO dl_platform_runtime;
GRANT USAGE, CREATE ON SCHEMA tenant_custom TO dl_tenant_override;
