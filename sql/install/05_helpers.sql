-- dl_tenancy install, part 5: helper functions for tenants and the platform runtime.
--
-- They live in public, the schema on every login's default search_path, so
-- `SELECT dl_apply_person_override(...)` works as written. They run with the caller's rights
-- (SECURITY INVOKER): a helper can do nothing the caller could not do with raw SQL.
-- SQL bodies are SQL-standard (BEGIN ATOMIC): parsed once, here, and bound to the objects
-- they name, so no caller's search_path is ever consulted. Parameters are referred to as
-- function_name.parameter to keep them apart from columns.

-- The seed's upsert as one call: the new patches replace the stored ones, the tombstone is
-- cleared. Returns the resolved row as jsonb (NULL when tombstoned): jsonb, not the view's row
-- type, so that a later version adding a view column never changes the helper's result type
-- under a client's prepared statement. In C (src/helpers.rs) with its statements prepared once
-- per backend: as a SQL function, its three statements were planned on every call.
CREATE FUNCTION public.dl_apply_person_override(identity_key text, status text DEFAULT NULL,
        identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'dl_apply_person_override';
CREATE FUNCTION public.dl_apply_company_override(identity_key text, status text DEFAULT NULL,
        identity_payload_patch jsonb DEFAULT NULL, raw_payload_patch jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'dl_apply_company_override';

-- Hide a record from the resolved view. The base record and the patches stay, so that
-- clearing the override shows the base again. Works for records with no base too.
CREATE FUNCTION public.dl_tombstone_person(identity_key text) RETURNS void
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_identity_key(dl_tombstone_person.identity_key);
    INSERT INTO dl_override.person_overrides AS o (identity_key, tombstoned, updated_at)
    VALUES (dl_tombstone_person.identity_key, true, pg_catalog.now())
    ON CONFLICT (identity_key) DO UPDATE
       SET tombstoned = true, updated_at = pg_catalog.now();
END;

CREATE FUNCTION public.dl_tombstone_company(identity_key text) RETURNS void
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_identity_key(dl_tombstone_company.identity_key);
    INSERT INTO dl_override.company_overrides AS o (identity_key, tombstoned, updated_at)
    VALUES (dl_tombstone_company.identity_key, true, pg_catalog.now())
    ON CONFLICT (identity_key) DO UPDATE
       SET tombstoned = true, updated_at = pg_catalog.now();
END;

-- Drop the override: the base record shows again as it is. Returns whether there was one.
CREATE FUNCTION public.dl_clear_person_override(identity_key text) RETURNS boolean
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_identity_key(dl_clear_person_override.identity_key);
    WITH removed AS (
        DELETE FROM dl_override.person_overrides AS o
         WHERE o.identity_key OPERATOR(pg_catalog.=) dl_clear_person_override.identity_key
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM removed);
END;

CREATE FUNCTION public.dl_clear_company_override(identity_key text) RETURNS boolean
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_identity_key(dl_clear_company_override.identity_key);
    WITH removed AS (
        DELETE FROM dl_override.company_overrides AS o
         WHERE o.identity_key OPERATOR(pg_catalog.=) dl_clear_company_override.identity_key
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM removed);
END;

-- The platform runtime's single-record write. Bulk loads use COPY into dl_cache.* directly
-- (as dl_platform_runtime); the statement triggers keep the resolved rows right either way.
CREATE FUNCTION public.dl_upsert_person_enrichment(identity_key text, identity_payload jsonb, raw_payload jsonb,
        status text DEFAULT NULL, source text DEFAULT NULL, fetched_at timestamptz DEFAULT pg_catalog.now())
    RETURNS void
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_enrichment_input(dl_upsert_person_enrichment.identity_key, dl_upsert_person_enrichment.identity_payload, dl_upsert_person_enrichment.raw_payload);
    INSERT INTO dl_cache.person_enrichments AS b
           (identity_key, identity_payload, raw_payload, status, source, fetched_at, updated_at)
    VALUES (dl_upsert_person_enrichment.identity_key, dl_upsert_person_enrichment.identity_payload, dl_upsert_person_enrichment.raw_payload,
            dl_upsert_person_enrichment.status, dl_upsert_person_enrichment.source, dl_upsert_person_enrichment.fetched_at, pg_catalog.now())
    ON CONFLICT (identity_key) DO UPDATE
       SET identity_payload = excluded.identity_payload,
           raw_payload = excluded.raw_payload,
           status = excluded.status,
           source = excluded.source,
           fetched_at = excluded.fetched_at,
           updated_at = excluded.updated_at;
END;

CREATE FUNCTION public.dl_upsert_company_enrichment(identity_key text, identity_payload jsonb, raw_payload jsonb,
        status text DEFAULT NULL, source text DEFAULT NULL, fetched_at timestamptz DEFAULT pg_catalog.now())
    RETURNS void
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT dl_internal.check_enrichment_input(dl_upsert_company_enrichment.identity_key, dl_upsert_company_enrichment.identity_payload, dl_upsert_company_enrichment.raw_payload);
    INSERT INTO dl_cache.company_enrichments AS b
           (identity_key, identity_payload, raw_payload, status, source, fetched_at, updated_at)
    VALUES (dl_upsert_company_enrichment.identity_key, dl_upsert_company_enrichment.identity_payload, dl_upsert_company_enrichment.raw_payload,
            dl_upsert_company_enrichment.status, dl_upsert_company_enrichment.source, dl_upsert_company_enrichment.fetched_at, pg_catalog.now())
    ON CONFLICT (identity_key) DO UPDATE
       SET identity_payload = excluded.identity_payload,
           raw_payload = excluded.raw_payload,
           status = excluded.status,
           source = excluded.source,
           fetched_at = excluded.fetched_at,
           updated_at = excluded.updated_at;
END;

REVOKE ALL ON FUNCTION public.dl_apply_person_override(text, text, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_apply_company_override(text, text, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_tombstone_person(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_tombstone_company(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_clear_person_override(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_clear_company_override(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_upsert_person_enrichment(text, jsonb, jsonb, text, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dl_upsert_company_enrichment(text, jsonb, jsonb, text, text, timestamptz) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION public.dl_apply_person_override(text, text, jsonb, jsonb),
                          public.dl_apply_company_override(text, text, jsonb, jsonb),
                          public.dl_tombstone_person(text),
                          public.dl_tombstone_company(text),
                          public.dl_clear_person_override(text),
                          public.dl_clear_company_override(text)
    TO dl_tenant_override;
GRANT EXECUTE ON FUNCTION public.dl_upsert_person_enrichment(text, jsonb, jsonb, text, text, timestamptz),
                          public.dl_upsert_company_enrichment(text, jsonb, jsonb, text, text, timestamptz)
    TO dl_platform_runtime;
