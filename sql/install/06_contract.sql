-- dl_tenancy install, part 6: versions and the machine-readable contract.

-- The version installed in this database (pg_extension), what clients should look at.
CREATE FUNCTION public.dl_tenancy_version() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (SELECT e.extversion FROM pg_catalog.pg_extension AS e
             WHERE e.extname OPERATOR(pg_catalog.=) 'dl_tenancy');

-- The version of the loaded shared library (src/version.rs).
CREATE FUNCTION public.dl_tenancy_library_version() RETURNS text
    LANGUAGE c IMMUTABLE PARALLEL SAFE STRICT
    AS 'MODULE_PATHNAME', 'dl_tenancy_library_version_wrapper';

-- The contract behind GET /api/v2/tenants/sql-schema, read from the catalog so that it can
-- never say something the database does not do:
--   schemas[]: each managed schema and tenant_custom, with its tables and views and columns;
--   functions[]: the extension's callable functions in public;
--   roles{}: per tenant-facing role, the privileges it holds (directly, through a role it
--            inherits from, or through PUBLIC) on those schemas, relations and functions.
CREATE FUNCTION public.dl_sql_schema() RETURNS jsonb
    LANGUAGE sql STABLE
BEGIN ATOMIC
WITH contract_schemas AS (
    SELECT n.oid, n.nspname, n.nspacl, n.nspowner,
           n.nspname OPERATOR(pg_catalog.<>) 'tenant_custom' AS managed
      FROM pg_catalog.pg_namespace AS n
     WHERE n.nspname OPERATOR(pg_catalog.=) ANY (ARRAY['dl_cache', 'dl_override', 'dl_resolved', 'dl_meta', 'tenant_custom']::name[])
), contract_relations AS (
    SELECT c.oid, s.nspname, c.relname, c.relkind, c.relacl, c.relowner
      FROM pg_catalog.pg_class AS c
      JOIN contract_schemas AS s ON s.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm', 'f', 'S']::"char"[])
), contract_functions AS (
    SELECT p.oid, p.proname, p.proacl, p.proowner
      FROM pg_catalog.pg_proc AS p
      JOIN pg_catalog.pg_depend AS d
        ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND d.objid OPERATOR(pg_catalog.=) p.oid
       AND d.deptype OPERATOR(pg_catalog.=) 'e'
      JOIN pg_catalog.pg_extension AS e
        ON e.oid OPERATOR(pg_catalog.=) d.refobjid AND e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
     WHERE p.pronamespace OPERATOR(pg_catalog.=) 'public'::pg_catalog.regnamespace
), contract_roles AS (
    SELECT r.oid, r.rolname
      FROM pg_catalog.pg_roles AS r
     WHERE r.rolname OPERATOR(pg_catalog.=) ANY (ARRAY['dl_tenant_read', 'dl_tenant_override', 'dl_platform_runtime']::name[])
)
SELECT pg_catalog.jsonb_build_object(
    'extension', pg_catalog.jsonb_build_object('name', 'dl_tenancy', 'version', public.dl_tenancy_version()),
    'schemas', (
        SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'name', s.nspname,
                   'owner', CASE WHEN s.managed THEN 'platform' ELSE 'customer' END,
                   'relations', COALESCE((
                       SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                  'name', c.relname,
                                  'kind', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized_view'
                                                         WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign_table'
                                                         ELSE 'table' END,
                                  'columns', COALESCE((
                                      SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                                 'name', a.attname,
                                                 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                                                 'nullable', NOT a.attnotnull) ORDER BY a.attnum)
                                        FROM pg_catalog.pg_attribute AS a
                                       WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                                         AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped), '[]'::jsonb))
                              ORDER BY c.relname)
                         FROM contract_relations AS c
                        WHERE c.nspname OPERATOR(pg_catalog.=) s.nspname), '[]'::jsonb))
               ORDER BY s.managed DESC, s.nspname)
          FROM contract_schemas AS s),
    'functions', (
        SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'name', f.proname,
                   'signature', f.oid::pg_catalog.regprocedure::text,
                   'arguments', pg_catalog.pg_get_function_arguments(f.oid),
                   'returns', pg_catalog.pg_get_function_result(f.oid))
               ORDER BY f.oid::pg_catalog.regprocedure::text), '[]'::jsonb)
          FROM contract_functions AS f),
    'roles', (
        SELECT pg_catalog.jsonb_object_agg(r.rolname, pg_catalog.jsonb_build_object(
                   'schemas', (
                       SELECT COALESCE(pg_catalog.jsonb_object_agg(x.nspname, x.privileges), '{}'::jsonb)
                         FROM (SELECT s.nspname,
                                      pg_catalog.jsonb_agg(DISTINCT a.privilege_type ORDER BY a.privilege_type) AS privileges
                                 FROM contract_schemas AS s
                                CROSS JOIN LATERAL pg_catalog.aclexplode(COALESCE(s.nspacl, pg_catalog.acldefault('n', s.nspowner))) AS a
                                WHERE a.grantee OPERATOR(pg_catalog.=) 0
                                   OR pg_catalog.pg_has_role(r.oid, a.grantee, 'USAGE')
                                GROUP BY s.nspname) AS x),
                   'relations', (
                       SELECT COALESCE(pg_catalog.jsonb_object_agg(x.relation, x.privileges), '{}'::jsonb)
                         FROM (SELECT pg_catalog.format('%I.%I', c.nspname, c.relname) AS relation,
                                      pg_catalog.jsonb_agg(DISTINCT a.privilege_type ORDER BY a.privilege_type) AS privileges
                                 FROM contract_relations AS c
                                CROSS JOIN LATERAL pg_catalog.aclexplode(COALESCE(c.relacl,
                                        pg_catalog.acldefault(CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) AS a
                                WHERE a.grantee OPERATOR(pg_catalog.=) 0
                                   OR pg_catalog.pg_has_role(r.oid, a.grantee, 'USAGE')
                                GROUP BY 1) AS x),
                   'functions', (
                       SELECT COALESCE(pg_catalog.jsonb_object_agg(x.signature, x.privileges), '{}'::jsonb)
                         FROM (SELECT f.oid::pg_catalog.regprocedure::text AS signature,
                                      pg_catalog.jsonb_agg(DISTINCT a.privilege_type ORDER BY a.privilege_type) AS privileges
                                 FROM contract_functions AS f
                                CROSS JOIN LATERAL pg_catalog.aclexplode(COALESCE(f.proacl, pg_catalog.acldefault('f', f.proowner))) AS a
                                WHERE a.grantee OPERATOR(pg_catalog.=) 0
                                   OR pg_catalog.pg_has_role(r.oid, a.grantee, 'USAGE')
                                GROUP BY 1) AS x)))
          FROM contract_roles AS r));
END;

REVOKE ALL ON FUNCTION public.dl_tenancy_version() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_tenancy_library_version() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_sql_schema() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dl_tenancy_version(), public.dl_tenancy_library_version(), public.dl_sql_schema()
    TO dl_tenant_read, dl_tenant_override, dl_platform_runtime;
