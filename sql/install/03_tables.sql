-- dl_tenancy install, part 3: the tables that hold data.
--
-- Constraint names say what is wrong, because a constraint violation (SQLSTATE 23514) is
-- what a customer's raw INSERT sees. The helper functions check the same rules first and
-- raise 22004/22023/54000 with a hint.

CREATE TABLE dl_cache.person_enrichments (
    identity_key     text        NOT NULL,
    identity_payload jsonb       NOT NULL,
    raw_payload      jsonb       NOT NULL,
    status           text,
    source           text,
    fetched_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT person_enrichments_pkey PRIMARY KEY (identity_key),
    CONSTRAINT person_enrichments_identity_key_valid
        CHECK (dl_internal.is_valid_identity_key(identity_key)),
    CONSTRAINT person_enrichments_identity_payload_is_object
        CHECK (pg_catalog.jsonb_typeof(identity_payload) OPERATOR(pg_catalog.=) 'object'),
    CONSTRAINT person_enrichments_raw_payload_is_object
        CHECK (pg_catalog.jsonb_typeof(raw_payload) OPERATOR(pg_catalog.=) 'object'),
    CONSTRAINT person_enrichments_payload_size
        CHECK (dl_internal.is_valid_payload_size(identity_payload)
               AND dl_internal.is_valid_payload_size(raw_payload))
);

CREATE TABLE dl_cache.company_enrichments (
    identity_key     text        NOT NULL,
    identity_payload jsonb       NOT NULL,
    raw_payload      jsonb       NOT NULL,
    status           text,
    source           text,
    fetched_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT company_enrichments_pkey PRIMARY KEY (identity_key),
    CONSTRAINT company_enrichments_identity_key_valid
        CHECK (dl_internal.is_valid_identity_key(identity_key)),
    CONSTRAINT company_enrichments_identity_payload_is_object
        CHECK (pg_catalog.jsonb_typeof(identity_payload) OPERATOR(pg_catalog.=) 'object'),
    CONSTRAINT company_enrichments_raw_payload_is_object
        CHECK (pg_catalog.jsonb_typeof(raw_payload) OPERATOR(pg_catalog.=) 'object'),
    CONSTRAINT company_enrichments_payload_size
        CHECK (dl_internal.is_valid_payload_size(identity_payload)
               AND dl_internal.is_valid_payload_size(raw_payload))
);

-- Exactly the columns of the seed's upsert. A patch is a JSON object or SQL NULL ("no patch").
CREATE TABLE dl_override.person_overrides (
    identity_key           text        NOT NULL,
    status                 text,
    identity_payload_patch jsonb,
    raw_payload_patch      jsonb,
    tombstoned             boolean     NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT person_overrides_pkey PRIMARY KEY (identity_key),
    CONSTRAINT person_overrides_identity_key_valid
        CHECK (dl_internal.is_valid_identity_key(identity_key)),
    CONSTRAINT person_overrides_status_valid
        CHECK (dl_internal.is_valid_status(status)),
    CONSTRAINT person_overrides_identity_payload_patch_is_object
        CHECK (dl_internal.is_valid_patch(identity_payload_patch)),
    CONSTRAINT person_overrides_raw_payload_patch_is_object
        CHECK (dl_internal.is_valid_patch(raw_payload_patch)),
    CONSTRAINT person_overrides_patch_size
        CHECK (dl_internal.is_valid_payload_size(identity_payload_patch)
               AND dl_internal.is_valid_payload_size(raw_payload_patch))
);

CREATE TABLE dl_override.company_overrides (
    identity_key           text        NOT NULL,
    status                 text,
    identity_payload_patch jsonb,
    raw_payload_patch      jsonb,
    tombstoned             boolean     NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT company_overrides_pkey PRIMARY KEY (identity_key),
    CONSTRAINT company_overrides_identity_key_valid
        CHECK (dl_internal.is_valid_identity_key(identity_key)),
    CONSTRAINT company_overrides_status_valid
        CHECK (dl_internal.is_valid_status(status)),
    CONSTRAINT company_overrides_identity_payload_patch_is_object
        CHECK (dl_internal.is_valid_patch(identity_payload_patch)),
    CONSTRAINT company_overrides_raw_payload_patch_is_object
        CHECK (dl_internal.is_valid_patch(raw_payload_patch)),
    CONSTRAINT company_overrides_patch_size
        CHECK (dl_internal.is_valid_payload_size(identity_payload_patch)
               AND dl_internal.is_valid_payload_size(raw_payload_patch))
);

-- Override history: one row per change of an override, written only by the layers' trigger
-- (part 4), never by a client. 'import' marks the rows that the 0.2.0 update made for the
-- overrides that existed before it. History ids are random, not from a sequence: a restore
-- that replays overrides (recording them again) and then loads the dumped history can never
-- collide.
CREATE TABLE dl_override.person_override_history (
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
CREATE INDEX person_override_history_identity_key_idx ON dl_override.person_override_history (identity_key, changed_at);
-- The retention (src/history.rs: dl_tenancy.history_max_age and history_max_mb) deletes the
-- oldest rows first and finds them here.
CREATE INDEX person_override_history_changed_at_idx ON dl_override.person_override_history (changed_at, history_id);

CREATE TABLE dl_override.company_override_history (
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
CREATE INDEX company_override_history_identity_key_idx ON dl_override.company_override_history (identity_key, changed_at);
CREATE INDEX company_override_history_changed_at_idx ON dl_override.company_override_history (changed_at, history_id);

-- One row per version this database has been installed at or updated to.
CREATE TABLE dl_meta.schema_migrations (
    version    text        NOT NULL,
    action     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version),
    CONSTRAINT schema_migrations_action_valid
        CHECK (action OPERATOR(pg_catalog.=) ANY (ARRAY['install', 'update']::text[]))
);

CREATE TABLE dl_meta.tenant_settings (
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT tenant_settings_pkey PRIMARY KEY (key),
    CONSTRAINT tenant_settings_key_valid CHECK (dl_internal.is_valid_identity_key(key))
);

INSERT INTO dl_meta.schema_migrations (version, action)
SELECT e.extversion, 'install'
  FROM pg_catalog.pg_extension AS e
 WHERE e.extname OPERATOR(pg_catalog.=) 'dl_tenancy';

-- pg_dump keeps the rows of extension tables only when they are registered.
-- One call per statement: two calls in one SELECT fail with "tuple already updated by self".
SELECT pg_catalog.pg_extension_config_dump('dl_cache.person_enrichments', '');
SELECT pg_catalog.pg_extension_config_dump('dl_cache.company_enrichments', '');
SELECT pg_catalog.pg_extension_config_dump('dl_override.person_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('dl_override.company_overrides', '');
SELECT pg_catalog.pg_extension_config_dump('dl_override.person_override_history', '');
SELECT pg_catalog.pg_extension_config_dump('dl_override.company_override_history', '');
SELECT pg_catalog.pg_extension_config_dump('dl_meta.tenant_settings', '');
-- The restoring CREATE EXTENSION records its own version; dump only the history before it.
SELECT pg_catalog.pg_extension_config_dump('dl_meta.schema_migrations',
    'WHERE version OPERATOR(pg_catalog.<>) (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname OPERATOR(pg_catalog.=) ''dl_tenancy'')');

GRANT SELECT, INSERT, UPDATE, DELETE ON dl_cache.person_enrichments, dl_cache.company_enrichments TO dl_platform_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON dl_meta.schema_migrations, dl_meta.tenant_settings TO dl_platform_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON dl_override.person_overrides, dl_override.company_overrides TO dl_tenant_override;
GRANT SELECT ON dl_override.person_overrides, dl_override.company_overrides TO dl_platform_runtime;
GRANT SELECT ON dl_override.person_override_history, dl_override.company_override_history
    TO dl_tenant_override, dl_platform_runtime;
