\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.2.0'" to load this file. \quit
-- dl_tenancy 0.1.0 -> 0.2.0: an override history, overridden_fields on the resolved views, and
-- a pooler lookup that returns no row for a refused login.
--
-- A fresh 0.2.0 install runs the 0.1.0 schema and then this very script (src/lib.rs), so a
-- fresh install and an upgraded database are built by the same statements; tests/upgrade.rs
-- compares their catalogs anyway. ALTER EXTENSION runs the script in one transaction: a
-- failure leaves the database at 0.1.0, and running it again is safe.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- 1. Override history: one row per change of an override, written only by the trigger below.
CREATE TABLE IF NOT EXISTS dl_override.person_override_history (
    history_id                 uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    identity_key               text        NOT NULL,
    operation                  text        NOT NULL,
    old_status                 text,
    new_status                 text,
    old_identity_payload_patch jsonb,
    new_identity_payload_patch jsonb,
    old_raw_payload_patch      jsonb,
    new_raw_payload_patch      jsonb,
    old_tombstoned             boolean,
    new_tombstoned             boolean,
    changed_by                 name        NOT NULL DEFAULT SESSION_USER,
    changed_at                 timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    CONSTRAINT person_override_history_pkey PRIMARY KEY (history_id),
    CONSTRAINT person_override_history_operation_valid
        CHECK (operation OPERATOR(pg_catalog.=) ANY (ARRAY['insert', 'update', 'delete', 'import']::text[]))
);
CREATE INDEX IF NOT EXISTS person_override_history_identity_key_idx
    ON dl_override.person_override_history (identity_key, changed_at);

CREATE TABLE IF NOT EXISTS dl_override.company_override_history (
    history_id                 uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    identity_key               text        NOT NULL,
    operation                  text        NOT NULL,
    old_status                 text,
    new_status                 text,
    old_identity_payload_patch jsonb,
    new_identity_payload_patch jsonb,
    old_raw_payload_patch      jsonb,
    new_raw_payload_patch      jsonb,
    old_tombstoned             boolean,
    new_tombstoned             boolean,
    changed_by                 name        NOT NULL DEFAULT SESSION_USER,
    changed_at                 timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    CONSTRAINT company_override_history_pkey PRIMARY KEY (history_id),
    CONSTRAINT company_override_history_operation_valid
        CHECK (operation OPERATOR(pg_catalog.=) ANY (ARRAY['insert', 'update', 'delete', 'import']::text[]))
);
CREATE INDEX IF NOT EXISTS company_override_history_identity_key_idx
    ON dl_override.company_override_history (identity_key, changed_at);

-- History ids are random, not from a sequence: a restore that replays overrides (recording
-- them again) and then loads the dumped history can never collide.
SELECT pg_catalog.pg_extension_config_dump('dl_override.person_override_history', '');
SELECT pg_catalog.pg_extension_config_dump('dl_override.company_override_history', '');

GRANT SELECT ON dl_override.person_override_history, dl_override.company_override_history
    TO dl_tenant_override, dl_platform_runtime;

-- One trigger function for both kinds; TG_ARGV[0] names the kind. Statement-level with
-- transition tables, like the resolved-store triggers; TRUNCATE is recorded before it happens.
CREATE OR REPLACE FUNCTION dl_internal.record_override_history() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_ARGV[0] OPERATOR(pg_catalog.=) 'person' THEN
        IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            INSERT INTO dl_override.person_override_history (identity_key, operation,
                   new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned)
            SELECT n.identity_key, 'insert', n.status, n.identity_payload_patch, n.raw_payload_patch, n.tombstoned
              FROM new_rows AS n;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
            INSERT INTO dl_override.person_override_history (identity_key, operation,
                   old_status, new_status, old_identity_payload_patch, new_identity_payload_patch,
                   old_raw_payload_patch, new_raw_payload_patch, old_tombstoned, new_tombstoned)
            SELECT COALESCE(n.identity_key, o.identity_key),
                   CASE WHEN o.identity_key IS NULL THEN 'insert' WHEN n.identity_key IS NULL THEN 'delete' ELSE 'update' END,
                   o.status, n.status, o.identity_payload_patch, n.identity_payload_patch,
                   o.raw_payload_patch, n.raw_payload_patch, o.tombstoned, n.tombstoned
              FROM new_rows AS n
              FULL JOIN old_rows AS o ON o.identity_key OPERATOR(pg_catalog.=) n.identity_key;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            INSERT INTO dl_override.person_override_history (identity_key, operation,
                   old_status, old_identity_payload_patch, old_raw_payload_patch, old_tombstoned)
            SELECT o.identity_key, 'delete', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned
              FROM old_rows AS o;
        ELSE  -- TRUNCATE, recorded before it happens: the rows are still in the table.
            INSERT INTO dl_override.person_override_history (identity_key, operation,
                   old_status, old_identity_payload_patch, old_raw_payload_patch, old_tombstoned)
            SELECT o.identity_key, 'delete', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned
              FROM dl_override.person_overrides AS o;
        END IF;
    ELSE
        IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
            INSERT INTO dl_override.company_override_history (identity_key, operation,
                   new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned)
            SELECT n.identity_key, 'insert', n.status, n.identity_payload_patch, n.raw_payload_patch, n.tombstoned
              FROM new_rows AS n;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
            INSERT INTO dl_override.company_override_history (identity_key, operation,
                   old_status, new_status, old_identity_payload_patch, new_identity_payload_patch,
                   old_raw_payload_patch, new_raw_payload_patch, old_tombstoned, new_tombstoned)
            SELECT COALESCE(n.identity_key, o.identity_key),
                   CASE WHEN o.identity_key IS NULL THEN 'insert' WHEN n.identity_key IS NULL THEN 'delete' ELSE 'update' END,
                   o.status, n.status, o.identity_payload_patch, n.identity_payload_patch,
                   o.raw_payload_patch, n.raw_payload_patch, o.tombstoned, n.tombstoned
              FROM new_rows AS n
              FULL JOIN old_rows AS o ON o.identity_key OPERATOR(pg_catalog.=) n.identity_key;
        ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
            INSERT INTO dl_override.company_override_history (identity_key, operation,
                   old_status, old_identity_payload_patch, old_raw_payload_patch, old_tombstoned)
            SELECT o.identity_key, 'delete', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned
              FROM old_rows AS o;
        ELSE  -- TRUNCATE, recorded before it happens: the rows are still in the table.
            INSERT INTO dl_override.company_override_history (identity_key, operation,
                   old_status, old_identity_payload_patch, old_raw_payload_patch, old_tombstoned)
            SELECT o.identity_key, 'delete', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned
              FROM dl_override.company_overrides AS o;
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION dl_internal.record_override_history() FROM PUBLIC;

DROP TRIGGER IF EXISTS record_history_insert ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_update ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_delete ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_truncate ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_insert ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_update ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_delete ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_truncate ON dl_override.company_overrides;
CREATE TRIGGER record_history_insert AFTER INSERT ON dl_override.person_overrides
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('person');
CREATE TRIGGER record_history_update AFTER UPDATE ON dl_override.person_overrides
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('person');
CREATE TRIGGER record_history_delete AFTER DELETE ON dl_override.person_overrides
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('person');
CREATE TRIGGER record_history_truncate BEFORE TRUNCATE ON dl_override.person_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('person');
CREATE TRIGGER record_history_insert AFTER INSERT ON dl_override.company_overrides
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('company');
CREATE TRIGGER record_history_update AFTER UPDATE ON dl_override.company_overrides
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('company');
CREATE TRIGGER record_history_delete AFTER DELETE ON dl_override.company_overrides
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('company');
CREATE TRIGGER record_history_truncate BEFORE TRUNCATE ON dl_override.company_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.record_override_history('company');

-- Overrides that exist now get one history row each (none in a fresh install). A re-run
-- imports only what has no history yet.
INSERT INTO dl_override.person_override_history (identity_key, operation,
       new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned, changed_at)
SELECT o.identity_key, 'import', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned, o.updated_at
  FROM dl_override.person_overrides AS o
 WHERE NOT EXISTS (SELECT FROM dl_override.person_override_history AS h
                    WHERE h.identity_key OPERATOR(pg_catalog.=) o.identity_key);
INSERT INTO dl_override.company_override_history (identity_key, operation,
       new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned, changed_at)
SELECT o.identity_key, 'import', o.status, o.identity_payload_patch, o.raw_payload_patch, o.tombstoned, o.updated_at
  FROM dl_override.company_overrides AS o
 WHERE NOT EXISTS (SELECT FROM dl_override.company_override_history AS h
                    WHERE h.identity_key OPERATOR(pg_catalog.=) o.identity_key);

-- 2. overridden_fields: which top-level fields the override changes, so an app can show
--    "edited by you": the keys of identity_payload_patch (also those it removes), plus
--    "status" when the override sets the status. Sorted; empty when not overridden.
CREATE OR REPLACE FUNCTION dl_internal.overridden_fields(status text, identity_payload_patch jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY(SELECT f.field
                   FROM (SELECT k.key AS field FROM pg_catalog.jsonb_object_keys(identity_payload_patch) AS k(key)
                         UNION
                         SELECT 'status' WHERE status IS NOT NULL) AS f
                  ORDER BY f.field COLLATE "C");
REVOKE ALL ON FUNCTION dl_internal.overridden_fields(text, jsonb) FROM PUBLIC;

-- A constant default: no table rewrite, only the overridden rows are touched below.
ALTER TABLE dl_internal.resolved_people
    ADD COLUMN IF NOT EXISTS overridden_fields text[] NOT NULL DEFAULT '{}';
ALTER TABLE dl_internal.resolved_companies
    ADD COLUMN IF NOT EXISTS overridden_fields text[] NOT NULL DEFAULT '{}';

UPDATE dl_internal.resolved_people AS r
   SET overridden_fields = dl_internal.overridden_fields(o.status, o.identity_payload_patch)
  FROM dl_override.person_overrides AS o
 WHERE o.identity_key OPERATOR(pg_catalog.=) r.identity_key;
UPDATE dl_internal.resolved_companies AS r
   SET overridden_fields = dl_internal.overridden_fields(o.status, o.identity_payload_patch)
  FROM dl_override.company_overrides AS o
 WHERE o.identity_key OPERATOR(pg_catalog.=) r.identity_key;

-- 3. The store refresh computes the new column; the views show it (appended, so that
--    existing column positions stay); the helpers are re-created so that the row they return
--    (as jsonb: their result type does not change) includes it. CREATE OR REPLACE keeps grants.
--    Single-row writes get cheaper on the way: the refresh reuses its generic plan for a few
--    keys, and the trigger skips the empty half of an INSERT ... ON CONFLICT DO UPDATE.
CREATE OR REPLACE FUNCTION dl_internal.refresh_people(keys text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = auto
AS $fn$
BEGIN
    -- A few keys (a customer's write): reuse the generic plan instead of planning this query
    -- on every call. Many (a bulk load): plan for the real key count, so that the planner,
    -- which sees the array's length, picks hash joins. Restored when the function returns.
    PERFORM pg_catalog.set_config('plan_cache_mode',
        CASE WHEN pg_catalog.cardinality(keys) OPERATOR(pg_catalog.<=) 64
             THEN 'force_generic_plan' ELSE 'force_custom_plan' END, true);
    IF keys IS NULL THEN
        keys := ARRAY(SELECT identity_key FROM dl_internal.resolved_people
                      UNION SELECT identity_key FROM dl_cache.person_enrichments
                      UNION SELECT identity_key FROM dl_override.person_overrides);
    END IF;
    PERFORM dl_internal.lock_identity_keys(1, keys);

    WITH changed AS (
        SELECT DISTINCT k.identity_key FROM pg_catalog.unnest(keys) AS k(identity_key)
    ), resolved AS (
        SELECT c.identity_key,
               COALESCE(o.status, b.status) AS status,
               m.identity_payload,
               public.dl_jsonb_merge_patch(COALESCE(b.raw_payload, '{}'::jsonb), o.raw_payload_patch) AS raw_payload,
               o.identity_key IS NOT NULL AS is_overridden,
               dl_internal.overridden_fields(o.status, o.identity_payload_patch) AS overridden_fields,
               GREATEST(b.updated_at, o.updated_at) AS updated_at
          FROM changed AS c
          LEFT JOIN dl_cache.person_enrichments AS b ON b.identity_key OPERATOR(pg_catalog.=) c.identity_key
          LEFT JOIN dl_override.person_overrides AS o ON o.identity_key OPERATOR(pg_catalog.=) c.identity_key
         CROSS JOIN LATERAL (SELECT public.dl_jsonb_merge_patch(COALESCE(b.identity_payload, '{}'::jsonb), o.identity_payload_patch) AS identity_payload) AS m
         WHERE (b.identity_key IS NOT NULL OR o.identity_key IS NOT NULL)
           AND o.tombstoned IS NOT TRUE
    ), removed AS (
        DELETE FROM dl_internal.resolved_people AS r
         USING changed AS c
         WHERE r.identity_key OPERATOR(pg_catalog.=) c.identity_key
           AND NOT EXISTS (SELECT FROM resolved AS x WHERE x.identity_key OPERATOR(pg_catalog.=) c.identity_key)
    )
    INSERT INTO dl_internal.resolved_people AS r
           (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at, overridden_fields)
    SELECT x.identity_key, dl_internal.person_display_name(x.identity_payload), x.status,
           x.identity_payload, x.raw_payload, x.is_overridden, x.updated_at, x.overridden_fields
      FROM resolved AS x
    ON CONFLICT (identity_key) DO UPDATE
       SET display_name = excluded.display_name,
           status = excluded.status,
           identity_payload = excluded.identity_payload,
           raw_payload = excluded.raw_payload,
           is_overridden = excluded.is_overridden,
           updated_at = excluded.updated_at,
           overridden_fields = excluded.overridden_fields;
END
$fn$;

CREATE OR REPLACE FUNCTION dl_internal.refresh_companies(keys text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = auto
AS $fn$
BEGIN
    -- A few keys (a customer's write): reuse the generic plan instead of planning this query
    -- on every call. Many (a bulk load): plan for the real key count, so that the planner,
    -- which sees the array's length, picks hash joins. Restored when the function returns.
    PERFORM pg_catalog.set_config('plan_cache_mode',
        CASE WHEN pg_catalog.cardinality(keys) OPERATOR(pg_catalog.<=) 64
             THEN 'force_generic_plan' ELSE 'force_custom_plan' END, true);
    IF keys IS NULL THEN
        keys := ARRAY(SELECT identity_key FROM dl_internal.resolved_companies
                      UNION SELECT identity_key FROM dl_cache.company_enrichments
                      UNION SELECT identity_key FROM dl_override.company_overrides);
    END IF;
    PERFORM dl_internal.lock_identity_keys(2, keys);

    WITH changed AS (
        SELECT DISTINCT k.identity_key FROM pg_catalog.unnest(keys) AS k(identity_key)
    ), resolved AS (
        SELECT c.identity_key,
               COALESCE(o.status, b.status) AS status,
               m.identity_payload,
               public.dl_jsonb_merge_patch(COALESCE(b.raw_payload, '{}'::jsonb), o.raw_payload_patch) AS raw_payload,
               o.identity_key IS NOT NULL AS is_overridden,
               dl_internal.overridden_fields(o.status, o.identity_payload_patch) AS overridden_fields,
               GREATEST(b.updated_at, o.updated_at) AS updated_at
          FROM changed AS c
          LEFT JOIN dl_cache.company_enrichments AS b ON b.identity_key OPERATOR(pg_catalog.=) c.identity_key
          LEFT JOIN dl_override.company_overrides AS o ON o.identity_key OPERATOR(pg_catalog.=) c.identity_key
         CROSS JOIN LATERAL (SELECT public.dl_jsonb_merge_patch(COALESCE(b.identity_payload, '{}'::jsonb), o.identity_payload_patch) AS identity_payload) AS m
         WHERE (b.identity_key IS NOT NULL OR o.identity_key IS NOT NULL)
           AND o.tombstoned IS NOT TRUE
    ), removed AS (
        DELETE FROM dl_internal.resolved_companies AS r
         USING changed AS c
         WHERE r.identity_key OPERATOR(pg_catalog.=) c.identity_key
           AND NOT EXISTS (SELECT FROM resolved AS x WHERE x.identity_key OPERATOR(pg_catalog.=) c.identity_key)
    )
    INSERT INTO dl_internal.resolved_companies AS r
           (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at, overridden_fields)
    SELECT x.identity_key, dl_internal.company_display_name(x.identity_payload), x.status,
           x.identity_payload, x.raw_payload, x.is_overridden, x.updated_at, x.overridden_fields
      FROM resolved AS x
    ON CONFLICT (identity_key) DO UPDATE
       SET display_name = excluded.display_name,
           status = excluded.status,
           identity_payload = excluded.identity_payload,
           raw_payload = excluded.raw_payload,
           is_overridden = excluded.is_overridden,
           updated_at = excluded.updated_at,
           overridden_fields = excluded.overridden_fields;
END
$fn$;

CREATE OR REPLACE FUNCTION dl_internal.sync_resolved() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    keys text[];
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        keys := ARRAY(SELECT n.identity_key FROM new_rows AS n);
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        keys := ARRAY(SELECT n.identity_key FROM new_rows AS n
                      UNION SELECT o.identity_key FROM old_rows AS o);
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        keys := ARRAY(SELECT o.identity_key FROM old_rows AS o);
    END IF;  -- TRUNCATE: keys stays NULL, meaning every key.
    -- INSERT ... ON CONFLICT DO UPDATE fires both the INSERT and the UPDATE trigger, one of
    -- them with no rows: nothing to refresh then.
    IF pg_catalog.cardinality(keys) OPERATOR(pg_catalog.=) 0 THEN
        RETURN NULL;
    END IF;

    IF TG_ARGV[0] OPERATOR(pg_catalog.=) 'person' THEN
        PERFORM dl_internal.refresh_people(keys);
    ELSE
        PERFORM dl_internal.refresh_companies(keys);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE VIEW dl_resolved.people AS
    SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at,
           overridden_fields
      FROM dl_internal.resolved_people;
CREATE OR REPLACE VIEW dl_resolved.companies AS
    SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at,
           overridden_fields
      FROM dl_internal.resolved_companies;

CREATE OR REPLACE FUNCTION public.dl_apply_person_override(identity_key text, status text DEFAULT NULL,
        identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_override_input(dl_apply_person_override.identity_key, dl_apply_person_override.status,
        dl_apply_person_override.identity_payload_patch, dl_apply_person_override.raw_payload_patch);
    INSERT INTO dl_override.person_overrides AS o
           (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
    VALUES (dl_apply_person_override.identity_key, dl_apply_person_override.status,
            dl_apply_person_override.identity_payload_patch, dl_apply_person_override.raw_payload_patch, false, pg_catalog.now())
    ON CONFLICT (identity_key) DO UPDATE
       SET status = excluded.status,
           identity_payload_patch = excluded.identity_payload_patch,
           raw_payload_patch = excluded.raw_payload_patch,
           tombstoned = false,
           updated_at = pg_catalog.now();
    SELECT pg_catalog.to_jsonb(r) FROM dl_resolved.people AS r
     WHERE r.identity_key OPERATOR(pg_catalog.=) dl_apply_person_override.identity_key;
END;

CREATE OR REPLACE FUNCTION public.dl_apply_company_override(identity_key text, status text DEFAULT NULL,
        identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_override_input(dl_apply_company_override.identity_key, dl_apply_company_override.status,
        dl_apply_company_override.identity_payload_patch, dl_apply_company_override.raw_payload_patch);
    INSERT INTO dl_override.company_overrides AS o
           (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
    VALUES (dl_apply_company_override.identity_key, dl_apply_company_override.status,
            dl_apply_company_override.identity_payload_patch, dl_apply_company_override.raw_payload_patch, false, pg_catalog.now())
    ON CONFLICT (identity_key) DO UPDATE
       SET status = excluded.status,
           identity_payload_patch = excluded.identity_payload_patch,
           raw_payload_patch = excluded.raw_payload_patch,
           tombstoned = false,
           updated_at = pg_catalog.now();
    SELECT pg_catalog.to_jsonb(r) FROM dl_resolved.companies AS r
     WHERE r.identity_key OPERATOR(pg_catalog.=) dl_apply_company_override.identity_key;
END;

-- 4. The pooler lookup returns no row for a login it refuses. 0.1.0 returned one all-NULL row
--    (a function with OUT parameters that is not set-returning), which PgBouncer reports as a
--    configuration error instead of a failed login. The result type changes, so the function is
--    dropped and created again, with its grants.
DROP FUNCTION IF EXISTS dl_internal.pooler_user_lookup(text);
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

INSERT INTO dl_meta.schema_migrations (version, action) VALUES ('0.2.0', 'update')
    ON CONFLICT (version) DO NOTHING;
