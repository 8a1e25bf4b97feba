-- dl_tenancy install, part 4: the resolved layer.
--
-- dl_resolved.people / companies must answer "newest 20" and "by identity_key" from an
-- index, so the merge is not done at read time: dl_internal.resolved_* hold the merged rows,
-- kept current by statement-level triggers on both layers (so raw INSERT/UPDATE/DELETE,
-- COPY and TRUNCATE by anyone keep them right), and the public names are views over them.
-- The triggers also write the override history (part 3).

-- RFC 7396 JSON Merge Patch, in Rust, working on the jsonb datum directly (src/merge_patch.rs).
-- SQL NULL patch: the target unchanged. SQL NULL target: treated as {} when the patch is an object.
CREATE FUNCTION public.dl_jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_jsonb_merge_patch';
REVOKE ALL ON FUNCTION public.dl_jsonb_merge_patch(jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dl_jsonb_merge_patch(jsonb, jsonb) TO dl_tenant_read, dl_tenant_override, dl_platform_runtime;

-- The display name. A field counts when it is a non-blank string.
CREATE FUNCTION dl_internal.text_field(payload jsonb, field text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN NULLIF(pg_catalog.btrim(payload OPERATOR(pg_catalog.->>) field), '');

-- people: display_name, else full_name / name, else first + last name, else email. No
-- concat_ws: it is only STABLE, and an IMMUTABLE SQL function around it could not be inlined
-- into the refresh statement. The name parts are trimmed and non-blank or NULL already.
CREATE FUNCTION dl_internal.person_display_name(identity_payload jsonb) RETURNS text
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

-- companies: display_name, else name, else domain.
CREATE FUNCTION dl_internal.company_display_name(identity_payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(
        dl_internal.text_field(identity_payload, 'display_name'),
        dl_internal.text_field(identity_payload, 'name'),
        dl_internal.text_field(identity_payload, 'domain'));

-- Which top-level fields an override changes, so an app can show "edited by you": the keys of
-- identity_payload_patch (also those it removes), plus "status" when the override sets the
-- status. Sorted (byte order); empty when not overridden (src/overridden_fields.rs).
CREATE FUNCTION dl_internal.overridden_fields(status text, identity_payload_patch jsonb) RETURNS text[]
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_overridden_fields';

REVOKE ALL ON FUNCTION dl_internal.text_field(jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.person_display_name(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.company_display_name(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.overridden_fields(text, jsonb) FROM PUBLIC;

-- The merged rows. overridden_fields comes last: it was added in 0.2.0, and a fresh install
-- keeps the column order of an upgraded database.
CREATE TABLE dl_internal.resolved_people (
    identity_key      text        NOT NULL,
    display_name      text,
    status            text,
    identity_payload  jsonb       NOT NULL,
    raw_payload       jsonb       NOT NULL,
    is_overridden     boolean     NOT NULL,
    updated_at        timestamptz NOT NULL,
    overridden_fields text[]      NOT NULL DEFAULT '{}',
    CONSTRAINT resolved_people_pkey PRIMARY KEY (identity_key)
);
CREATE INDEX resolved_people_updated_at_idx ON dl_internal.resolved_people (updated_at);

CREATE TABLE dl_internal.resolved_companies (
    identity_key      text        NOT NULL,
    display_name      text,
    status            text,
    identity_payload  jsonb       NOT NULL,
    raw_payload       jsonb       NOT NULL,
    is_overridden     boolean     NOT NULL,
    updated_at        timestamptz NOT NULL,
    overridden_fields text[]      NOT NULL DEFAULT '{}',
    CONSTRAINT resolved_companies_pkey PRIMARY KEY (identity_key)
);
CREATE INDEX resolved_companies_updated_at_idx ON dl_internal.resolved_companies (updated_at);

-- One trigger function for both layers of both kinds (src/resolved_store.rs). Statement-level
-- with transition tables: it reads them once, writes the history rows (override layer) and
-- refreshes the changed keys, by primary key with saved plans for a few keys and in slices of
-- 20,000 for a bulk load, so a COPY of a million rows costs a few joins, not a million calls.
-- Writers of the same key in two layers at once never leave a merge of two stale halves: each
-- refresh first locks the keys it recomputes (in lock spaces SQL cannot name), then reads both
-- layers with a fresh snapshot. Arguments: kind ('person' | 'company'), layer ('cache' |
-- 'override').
CREATE FUNCTION dl_internal.maintain_layers() RETURNS trigger
    LANGUAGE c SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'dl_maintain_layers';

-- The refresh of given keys (NULL: every key), for repairs; the same code as the trigger's.
CREATE FUNCTION dl_internal.refresh_people(keys text[]) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'dl_refresh_people';
CREATE FUNCTION dl_internal.refresh_companies(keys text[]) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'dl_refresh_companies';

REVOKE ALL ON FUNCTION dl_internal.maintain_layers() FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.refresh_people(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.refresh_companies(text[]) FROM PUBLIC;

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

-- The contract's read surface. Tenants get SELECT on these views only, never on the tables behind.
CREATE VIEW dl_resolved.people AS
    SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at,
           overridden_fields
      FROM dl_internal.resolved_people;
CREATE VIEW dl_resolved.companies AS
    SELECT identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at,
           overridden_fields
      FROM dl_internal.resolved_companies;
COMMENT ON VIEW dl_resolved.people IS 'People: base enrichment records with customer overrides applied (RFC 7396), tombstoned ones removed.';
COMMENT ON VIEW dl_resolved.companies IS 'Companies: base enrichment records with customer overrides applied (RFC 7396), tombstoned ones removed.';

GRANT SELECT ON dl_resolved.people, dl_resolved.companies TO dl_tenant_read, dl_tenant_override, dl_platform_runtime;
GRANT SELECT ON dl_internal.resolved_people, dl_internal.resolved_companies TO dl_platform_runtime;
