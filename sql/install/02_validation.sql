-- dl_tenancy install, part 2: the input rules shared by table constraints and helper functions.
--
-- SQL-standard bodies (RETURN ...) are parsed once, here, with this script's search_path,
-- so they can never resolve to a tenant's same-named function; and they stay inlinable.

CREATE FUNCTION dl_internal.is_valid_identity_key(key text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN pg_catalog.btrim(key) OPERATOR(pg_catalog.<>) ''
       AND pg_catalog.octet_length(key) OPERATOR(pg_catalog.<=) 512;

CREATE FUNCTION dl_internal.is_valid_status(status text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN status IS NULL
        OR (pg_catalog.btrim(status) OPERATOR(pg_catalog.<>) ''
            AND pg_catalog.char_length(status) OPERATOR(pg_catalog.<=) 64);

-- A patch is a JSON object, or SQL NULL for "no patch". JSON null, arrays and scalars are not.
CREATE FUNCTION dl_internal.is_valid_patch(patch jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN patch IS NULL
        OR pg_catalog.jsonb_typeof(patch) OPERATOR(pg_catalog.=) 'object';

-- 1 MiB (stored size) per payload or patch.
CREATE FUNCTION dl_internal.is_valid_payload_size(payload jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN payload IS NULL
        OR pg_catalog.pg_column_size(payload) OPERATOR(pg_catalog.<=) 1048576;

-- The helper functions' front door: the same rules, raised with a SQLSTATE that says which
-- input is wrong (22004 null, 22023 bad value, 54000 too large) instead of a constraint name.
-- SECURITY DEFINER only so that callers need no USAGE on dl_internal: they read no data.
CREATE FUNCTION dl_internal.check_identity_key(identity_key text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF identity_key IS NULL THEN
        RAISE EXCEPTION 'identity_key must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT dl_internal.is_valid_identity_key(identity_key) THEN
        RAISE EXCEPTION 'identity_key must be a non-blank string of at most 512 bytes'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('got %s bytes: %L', pg_catalog.octet_length(identity_key), pg_catalog.left(identity_key, 40));
    END IF;
END
$fn$;

CREATE FUNCTION dl_internal.check_override_input(identity_key text, status text, identity_payload_patch jsonb, raw_payload_patch jsonb) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    patch_name text;
    patch jsonb;
BEGIN
    PERFORM dl_internal.check_identity_key(identity_key);
    IF NOT dl_internal.is_valid_status(status) THEN
        RAISE EXCEPTION 'status must be NULL or a non-blank string of at most 64 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR patch_name, patch IN VALUES ('identity_payload_patch', identity_payload_patch), ('raw_payload_patch', raw_payload_patch)
    LOOP
        IF NOT dl_internal.is_valid_patch(patch) THEN
            RAISE EXCEPTION '% must be a JSON object or SQL NULL', patch_name
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('got a JSON %s', pg_catalog.jsonb_typeof(patch)),
                      HINT = 'Pass {"field": value} to set fields and {"field": null} to remove them; pass SQL NULL for no patch.';
        ELSIF NOT dl_internal.is_valid_payload_size(patch) THEN
            RAISE EXCEPTION '% is larger than 1 MiB', patch_name
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
    END LOOP;
END
$fn$;

CREATE FUNCTION dl_internal.check_enrichment_input(identity_key text, identity_payload jsonb, raw_payload jsonb) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    payload_name text;
    payload jsonb;
BEGIN
    PERFORM dl_internal.check_identity_key(identity_key);
    FOR payload_name, payload IN VALUES ('identity_payload', identity_payload), ('raw_payload', raw_payload)
    LOOP
        IF payload IS NULL THEN
            RAISE EXCEPTION '% must not be null', payload_name
                USING ERRCODE = 'null_value_not_allowed';
        ELSIF pg_catalog.jsonb_typeof(payload) OPERATOR(pg_catalog.<>) 'object' THEN
            RAISE EXCEPTION '% must be a JSON object', payload_name
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('got a JSON %s', pg_catalog.jsonb_typeof(payload));
        ELSIF NOT dl_internal.is_valid_payload_size(payload) THEN
            RAISE EXCEPTION '% is larger than 1 MiB', payload_name
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
    END LOOP;
END
$fn$;

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
