\echo Use "ALTER EXTENSION dl_tenancy UPDATE TO '0.3.0'" to load this file. \quit
-- dl_tenancy 0.2.0 -> 0.3.0: cheaper writes. Nothing a client sees changes: the same tables,
-- views, helpers, constraint names, SQLSTATEs and history rows; only the code behind them.
--
-- A single-row override write used to cost about seven times a plain upsert (BENCHMARKS.md,
-- scenario 4): the CHECK constraints' SQL functions were inlined, i.e. planned, on every
-- write, and the resolved store and the history were kept by three PL/pgSQL functions with a
-- general refresh statement. Now both are in the extension's library (src/validation.rs,
-- src/resolved_store.rs). ALTER EXTENSION runs this in one transaction; every statement is
-- safe to run again.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- 1. The input rules, same names, same results, in C: the CHECK constraints that call them
--    stay as they are (no table is rewritten or re-validated). CREATE OR REPLACE keeps grants.
CREATE OR REPLACE FUNCTION dl_internal.is_valid_identity_key(key text) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_identity_key';
CREATE OR REPLACE FUNCTION dl_internal.is_valid_status(status text) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_status';
CREATE OR REPLACE FUNCTION dl_internal.is_valid_patch(patch jsonb) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_patch';
CREATE OR REPLACE FUNCTION dl_internal.is_valid_payload_size(payload jsonb) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_payload_size';

-- The helpers' input checks (same messages, SQLSTATEs, details and hints), in C like the
-- rules they apply; they read no data, so they no longer need SECURITY DEFINER.
CREATE OR REPLACE FUNCTION dl_internal.check_identity_key(identity_key text) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_check_identity_key';
CREATE OR REPLACE FUNCTION dl_internal.check_override_input(identity_key text, status text,
        identity_payload_patch jsonb, raw_payload_patch jsonb) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_check_override_input';

-- Which top-level fields an override changes (0.2.0), same result, in C: every refresh of
-- a resolved row computes it.
CREATE OR REPLACE FUNCTION dl_internal.overridden_fields(status text, identity_payload_patch jsonb) RETURNS text[]
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_overridden_fields';

-- The person display name, same result, without concat_ws: concat_ws is only STABLE, so the
-- IMMUTABLE function around it could never be inlined and ran as a SQL function, planned
-- again on every refresh. The name parts are trimmed and non-blank or NULL already.
CREATE OR REPLACE FUNCTION dl_internal.person_display_name(identity_payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(
        dl_internal.text_field(identity_payload, 'display_name'),
        dl_internal.text_field(identity_payload, 'full_name'),
        dl_internal.text_field(identity_payload, 'name'),
        NULLIF(pg_catalog.btrim(
            COALESCE(dl_internal.text_field(identity_payload, 'first_name'), '')
            OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)
            COALESCE(dl_internal.text_field(identity_payload, 'last_name'), '')), ''),
        dl_internal.text_field(identity_payload, 'email'));

-- 2. One trigger function for both layers of both kinds: statement-level, it reads the
--    transition tables once, writes the history rows (override layer) and refreshes the
--    changed keys: by primary key with saved plans for a few keys, in slices of 20,000 for a
--    bulk load. Arguments: kind ('person' | 'company'), layer ('cache' | 'override').
CREATE OR REPLACE FUNCTION dl_internal.maintain_layers() RETURNS trigger
    LANGUAGE c SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'dl_maintain_layers';
REVOKE ALL ON FUNCTION dl_internal.maintain_layers() FROM PUBLIC;

-- The refresh of given keys (NULL: every key), for repairs; the same code as the trigger's.
CREATE OR REPLACE FUNCTION dl_internal.refresh_people(keys text[]) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'dl_refresh_people';
CREATE OR REPLACE FUNCTION dl_internal.refresh_companies(keys text[]) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'dl_refresh_companies';

DROP TRIGGER IF EXISTS sync_resolved_insert ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_update ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_delete ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_truncate ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_insert ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_update ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_delete ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_truncate ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS sync_resolved_insert ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS sync_resolved_update ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS sync_resolved_delete ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS sync_resolved_truncate ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS sync_resolved_insert ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS sync_resolved_update ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS sync_resolved_delete ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS sync_resolved_truncate ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_insert ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_update ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_delete ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_truncate ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS record_history_insert ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_update ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_delete ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS record_history_truncate ON dl_override.company_overrides;
DROP FUNCTION IF EXISTS dl_internal.sync_resolved();
DROP FUNCTION IF EXISTS dl_internal.record_override_history();
DROP FUNCTION IF EXISTS dl_internal.lock_identity_keys(integer, text[]);

DROP TRIGGER IF EXISTS after_insert ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS after_update ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS after_delete ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS after_truncate ON dl_cache.person_enrichments;
DROP TRIGGER IF EXISTS after_insert ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS after_update ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS after_delete ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS after_truncate ON dl_cache.company_enrichments;
DROP TRIGGER IF EXISTS after_insert ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS after_update ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS after_delete ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS after_truncate ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS before_truncate ON dl_override.person_overrides;
DROP TRIGGER IF EXISTS after_insert ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS after_update ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS after_delete ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS after_truncate ON dl_override.company_overrides;
DROP TRIGGER IF EXISTS before_truncate ON dl_override.company_overrides;

CREATE TRIGGER after_insert AFTER INSERT ON dl_cache.person_enrichments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'cache');
CREATE TRIGGER after_update AFTER UPDATE ON dl_cache.person_enrichments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'cache');
CREATE TRIGGER after_delete AFTER DELETE ON dl_cache.person_enrichments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'cache');
CREATE TRIGGER after_truncate AFTER TRUNCATE ON dl_cache.person_enrichments
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'cache');

CREATE TRIGGER after_insert AFTER INSERT ON dl_cache.company_enrichments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'cache');
CREATE TRIGGER after_update AFTER UPDATE ON dl_cache.company_enrichments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'cache');
CREATE TRIGGER after_delete AFTER DELETE ON dl_cache.company_enrichments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'cache');
CREATE TRIGGER after_truncate AFTER TRUNCATE ON dl_cache.company_enrichments
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'cache');

-- Override layer: the history of a TRUNCATE is written before it happens, while the rows
-- are still there.
CREATE TRIGGER after_insert AFTER INSERT ON dl_override.person_overrides
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'override');
CREATE TRIGGER after_update AFTER UPDATE ON dl_override.person_overrides
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'override');
CREATE TRIGGER after_delete AFTER DELETE ON dl_override.person_overrides
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'override');
CREATE TRIGGER before_truncate BEFORE TRUNCATE ON dl_override.person_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'override');
CREATE TRIGGER after_truncate AFTER TRUNCATE ON dl_override.person_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('person', 'override');

CREATE TRIGGER after_insert AFTER INSERT ON dl_override.company_overrides
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'override');
CREATE TRIGGER after_update AFTER UPDATE ON dl_override.company_overrides
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'override');
CREATE TRIGGER after_delete AFTER DELETE ON dl_override.company_overrides
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'override');
CREATE TRIGGER before_truncate BEFORE TRUNCATE ON dl_override.company_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'override');
CREATE TRIGGER after_truncate AFTER TRUNCATE ON dl_override.company_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.maintain_layers('company', 'override');

-- 3. The override helpers, same signatures, defaults, grants (CREATE OR REPLACE keeps them)
--    and results, in C with statements prepared once per backend: as SQL-language functions
--    their three statements were planned on every call. Still SECURITY INVOKER.
CREATE OR REPLACE FUNCTION public.dl_apply_person_override(identity_key text, status text DEFAULT NULL,
        identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'dl_apply_person_override';
CREATE OR REPLACE FUNCTION public.dl_apply_company_override(identity_key text, status text DEFAULT NULL,
        identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'dl_apply_company_override';

-- 4. dl_meta.schema_migrations. A fresh install replays the upgrade scripts after recording
--    its own 'install' row, and the 0.2.0 script then added an 'update' row for 0.2.0 that no
--    update ever made: remove it. From now on a script records its version only when it runs
--    as an update (there is no 'install' row for the version being installed).
DELETE FROM dl_meta.schema_migrations AS m
 WHERE m.action OPERATOR(pg_catalog.=) 'update'
   AND EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                 JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                WHERE i.action OPERATOR(pg_catalog.=) 'install'
                  AND i.version OPERATOR(pg_catalog.=) e.extversion);
INSERT INTO dl_meta.schema_migrations (version, action)
SELECT '0.3.0', 'update'
 WHERE NOT EXISTS (SELECT FROM dl_meta.schema_migrations AS i
                     JOIN pg_catalog.pg_extension AS e ON e.extname OPERATOR(pg_catalog.=) 'dl_tenancy'
                    WHERE i.action OPERATOR(pg_catalog.=) 'install'
                      AND i.version OPERATOR(pg_catalog.=) e.extversion)
    ON CONFLICT (version) DO NOTHING;
