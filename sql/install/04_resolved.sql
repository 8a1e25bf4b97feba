-- dl_tenancy install, part 4: the resolved layer.
--
-- dl_resolved.people / companies must answer "newest 20" and "by identity_key" from an
-- index, so the merge is not done at read time: dl_internal.resolved_* hold the merged rows,
-- kept current by statement-level triggers on both layers (so raw INSERT/UPDATE/DELETE,
-- COPY and TRUNCATE by anyone keep them right), and the public names are views over them.

-- RFC 7396 JSON Merge Patch, in Rust, working on the jsonb datum directly (src/merge_patch.rs).
-- SQL NULL patch: the target unchanged. SQL NULL target: treated as {} when the patch is an object.
CREATE FUNCTION public.dl_jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_jsonb_merge_patch';
REVOKE ALL ON FUNCTION public.dl_jsonb_merge_patch(jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dl_jsonb_merge_patch(jsonb, jsonb) TO dl_tenant_read, dl_tenant_override, dl_platform_runtime;

-- A field counts when it is a non-blank string.
CREATE FUNCTION dl_internal.text_field(payload jsonb, field text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN NULLIF(pg_catalog.btrim(payload OPERATOR(pg_catalog.->>) field), '');

-- people: display_name, else full_name / name, else first + last name, else email.
CREATE FUNCTION dl_internal.person_display_name(identity_payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(
        dl_internal.text_field(identity_payload, 'display_name'),
        dl_internal.text_field(identity_payload, 'full_name'),
        dl_internal.text_field(identity_payload, 'name'),
        NULLIF(pg_catalog.concat_ws(' ',
            dl_internal.text_field(identity_payload, 'first_name'),
            dl_internal.text_field(identity_payload, 'last_name')), ''),
        dl_internal.text_field(identity_payload, 'email'));

-- companies: display_name, else name, else domain.
CREATE FUNCTION dl_internal.company_display_name(identity_payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(
        dl_internal.text_field(identity_payload, 'display_name'),
        dl_internal.text_field(identity_payload, 'name'),
        dl_internal.text_field(identity_payload, 'domain'));

CREATE TABLE dl_internal.resolved_people (
    identity_key     text        NOT NULL,
    display_name     text,
    status           text,
    identity_payload jsonb       NOT NULL,
    raw_payload      jsonb       NOT NULL,
    is_overridden    boolean     NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT resolved_people_pkey PRIMARY KEY (identity_key)
);
CREATE INDEX resolved_people_updated_at_idx ON dl_internal.resolved_people (updated_at);

CREATE TABLE dl_internal.resolved_companies (
    identity_key     text        NOT NULL,
    display_name     text,
    status           text,
    identity_payload jsonb       NOT NULL,
    raw_payload      jsonb       NOT NULL,
    is_overridden    boolean     NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT resolved_companies_pkey PRIMARY KEY (identity_key)
);
CREATE INDEX resolved_companies_updated_at_idx ON dl_internal.resolved_companies (updated_at);

-- Writers of the same identity_key in two layers at once (runtime refreshing the base while a
-- customer edits the override) must not leave a merge of two stale halves behind. Each refresh
-- first takes transaction-scoped advisory locks on the keys it recomputes, then reads both
-- layers with a fresh snapshot, which under READ COMMITTED sees the other writer's commit.
-- Per key (its hash), so unrelated keys never wait for each other; in a fixed order within a
-- statement. A transaction that recomputes more than 256 keys of a kind (a bulk load) takes
-- the whole kind exclusively instead, which keeps the lock table bounded; small writers hold
-- the kind in shared mode, so the two wait for each other. kind_lock: 1 people, 2 companies.
CREATE FUNCTION dl_internal.lock_identity_keys(kind_lock integer, keys text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- How many key locks this transaction holds for the kind; -1: it holds the whole kind.
    counter text := 'dl_tenancy.locked_keys_' OPERATOR(pg_catalog.||) kind_lock;
    held integer := COALESCE(NULLIF(pg_catalog.current_setting(counter, true), ''), '0')::integer;
    wanted integer := pg_catalog.cardinality(keys);
BEGIN
    IF held OPERATOR(pg_catalog.<) 0 THEN
        RETURN;
    ELSIF held OPERATOR(pg_catalog.+) wanted OPERATOR(pg_catalog.>) 256 THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(kind_lock::bigint);
        PERFORM pg_catalog.set_config(counter, '-1', true);
    ELSE
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(kind_lock::bigint);
        PERFORM pg_catalog.pg_advisory_xact_lock(kind_lock, h.key_hash)
           FROM (SELECT DISTINCT pg_catalog.hashtext(k.key) AS key_hash
                   FROM pg_catalog.unnest(keys) AS k(key)
                  ORDER BY 1) AS h;
        PERFORM pg_catalog.set_config(counter, (held OPERATOR(pg_catalog.+) wanted)::text, true);
    END IF;
END
$fn$;

-- Recompute the resolved rows of the given keys (NULL: every key) from both layers.
CREATE FUNCTION dl_internal.refresh_people(keys text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
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
           (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at)
    SELECT x.identity_key, dl_internal.person_display_name(x.identity_payload), x.status,
           x.identity_payload, x.raw_payload, x.is_overridden, x.updated_at
      FROM resolved AS x
    ON CONFLICT (identity_key) DO UPDATE
       SET display_name = excluded.display_name,
           status = excluded.status,
           identity_payload = excluded.identity_payload,
           raw_payload = excluded.raw_payload,
           is_overridden = excluded.is_overridden,
           updated_at = excluded.updated_at;
END
$fn$;

CREATE FUNCTION dl_internal.refresh_companies(keys text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
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
           (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at)
    SELECT x.identity_key, dl_internal.company_display_name(x.identity_payload), x.status,
           x.identity_payload, x.raw_payload, x.is_overridden, x.updated_at
      FROM resolved AS x
    ON CONFLICT (identity_key) DO UPDATE
       SET display_name = excluded.display_name,
           status = excluded.status,
           identity_payload = excluded.identity_payload,
           raw_payload = excluded.raw_payload,
           is_overridden = excluded.is_overridden,
           updated_at = excluded.updated_at;
END
$fn$;

-- One trigger function for both layers of both kinds; TG_ARGV[0] names the kind.
-- Statement-level with transition tables: one set-based refresh per statement, so a COPY of a
-- million rows costs one join, not a million function calls.
CREATE FUNCTION dl_internal.sync_resolved() RETURNS trigger
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

    IF TG_ARGV[0] OPERATOR(pg_catalog.=) 'person' THEN
        PERFORM dl_internal.refresh_people(keys);
    ELSE
        PERFORM dl_internal.refresh_companies(keys);
    END IF;
    RETURN NULL;
END
$fn$;

REVOKE ALL ON FUNCTION dl_internal.text_field(jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.person_display_name(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.company_display_name(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.lock_identity_keys(integer, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.refresh_people(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.refresh_companies(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.sync_resolved() FROM PUBLIC;

CREATE TRIGGER sync_resolved_insert AFTER INSERT ON dl_cache.person_enrichments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');
CREATE TRIGGER sync_resolved_update AFTER UPDATE ON dl_cache.person_enrichments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');
CREATE TRIGGER sync_resolved_delete AFTER DELETE ON dl_cache.person_enrichments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');
CREATE TRIGGER sync_resolved_truncate AFTER TRUNCATE ON dl_cache.person_enrichments
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');

CREATE TRIGGER sync_resolved_insert AFTER INSERT ON dl_override.person_overrides
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');
CREATE TRIGGER sync_resolved_update AFTER UPDATE ON dl_override.person_overrides
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');
CREATE TRIGGER sync_resolved_delete AFTER DELETE ON dl_override.person_overrides
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');
CREATE TRIGGER sync_resolved_truncate AFTER TRUNCATE ON dl_override.person_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('person');

CREATE TRIGGER sync_resolved_insert AFTER INSERT ON dl_cache.company_enrichments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');
CREATE TRIGGER sync_resolved_update AFTER UPDATE ON dl_cache.company_enrichments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');
CREATE TRIGGER sync_resolved_delete AFTER DELETE ON dl_cache.company_enrichments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');
CREATE TRIGGER sync_resolved_truncate AFTER TRUNCATE ON dl_cache.company_enrichments
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');

CREATE TRIGGER sync_resolved_insert AFTER INSERT ON dl_override.company_overrides
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');
CREATE TRIGGER sync_resolved_update AFTER UPDATE ON dl_override.company_overrides
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');
CREATE TRIGGER sync_resolved_delete AFTER DELETE ON dl_override.company_overrides
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');
CREATE TRIGGER sync_resolved_truncate AFTER TRUNCATE ON dl_override.company_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION dl_internal.sync_resolved('company');

-- The contract's read surface. Tenants get SELECT on these views only, never on the tables behind.
CREATE VIEW dl_resolved.people AS
    SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at
      FROM dl_internal.resolved_people;
CREATE VIEW dl_resolved.companies AS
    SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at
      FROM dl_internal.resolved_companies;
COMMENT ON VIEW dl_resolved.people IS 'People: base enrichment records with customer overrides applied (RFC 7396), tombstoned ones removed.';
COMMENT ON VIEW dl_resolved.companies IS 'Companies: base enrichment records with customer overrides applied (RFC 7396), tombstoned ones removed.';

GRANT SELECT ON dl_resolved.people, dl_resolved.companies TO dl_tenant_read, dl_tenant_override, dl_platform_runtime;
GRANT SELECT ON dl_internal.resolved_people, dl_internal.resolved_companies TO dl_platform_runtime;
