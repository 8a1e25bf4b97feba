-- dl_tenancy install, part 2: the input rules, shared by the tables' CHECK constraints and
-- the helper functions.
--
-- Written once, in the extension's library (src/validation.rs): an identity_key is a
-- non-blank string of at most 512 bytes; a status is NULL or a non-blank string of at most
-- 64 characters; a patch is a JSON object or SQL NULL ("no patch"; JSON null, arrays and
-- scalars are not); a payload or patch is at most 1 MiB uncompressed. In C because PostgreSQL
-- prepares a table's CHECK expressions for every statement that writes it: a SQL function
-- would be parsed and planned on every single-row write.

-- The rules, for the tables' named CHECK constraints (a violation is SQLSTATE 23514 naming
-- the constraint, which is what a customer's raw INSERT sees). NULL input: NULL (unknown),
-- left to the column's NOT NULL.
CREATE FUNCTION dl_internal.is_valid_identity_key(key text) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_identity_key';
CREATE FUNCTION dl_internal.is_valid_status(status text) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_status';
CREATE FUNCTION dl_internal.is_valid_patch(patch jsonb) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_patch';
CREATE FUNCTION dl_internal.is_valid_payload_size(payload jsonb) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_is_valid_payload_size';

-- The helpers' front door: the same rules, raised with a SQLSTATE that says which input is
-- wrong (22004 null, 22023 bad value, 54000 too large), a detail and a hint.
CREATE FUNCTION dl_internal.check_identity_key(identity_key text) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_check_identity_key';
CREATE FUNCTION dl_internal.check_override_input(identity_key text, status text,
        identity_payload_patch jsonb, raw_payload_patch jsonb) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_check_override_input';
CREATE FUNCTION dl_internal.check_enrichment_input(identity_key text, identity_payload jsonb, raw_payload jsonb) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'dl_check_enrichment_input';

-- Table constraints and the helpers call these as the writing role, which needs EXECUTE.
REVOKE ALL ON FUNCTION dl_internal.is_valid_identity_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.is_valid_status(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.is_valid_patch(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.is_valid_payload_size(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.check_identity_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.check_override_input(text, text, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_internal.check_enrichment_input(text, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_internal.is_valid_identity_key(text),
                          dl_internal.is_valid_status(text),
                          dl_internal.is_valid_patch(jsonb),
                          dl_internal.is_valid_payload_size(jsonb),
                          dl_internal.check_identity_key(text)
    TO dl_tenant_override, dl_platform_runtime;
GRANT EXECUTE ON FUNCTION dl_internal.check_override_input(text, text, jsonb, jsonb) TO dl_tenant_override;
GRANT EXECUTE ON FUNCTION dl_internal.check_enrichment_input(text, jsonb, jsonb) TO dl_platform_runtime;
