CREATE TABLE IF NOT EXISTS servers (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{0,47}$'),
    admin_nonce      bytea NOT NULL CHECK (octet_length(admin_nonce) = 12),
    admin_ciphertext bytea NOT NULL CHECK (octet_length(admin_ciphertext) > 16),
    host             text NOT NULL CHECK (host <> ''),
    port             integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    pooler_host      text CHECK (pooler_host <> ''),
    pooler_port      integer CHECK (pooler_port BETWEEN 1 AND 65535),
    active           boolean NOT NULL DEFAULT true,
    template_version text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((pooler_host IS NULL) = (pooler_port IS NULL))
);
CREATE TABLE IF NOT EXISTS workspaces (
    id                text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{0,47}$'),
    server_id         text NOT NULL REFERENCES servers (id),
    database_name     text NOT NULL CHECK (database_name = 'ws_' || id),
    state             text NOT NULL CHECK (state IN ('provisioning', 'active', 'error', 'deleted')),
    error_message     text,
    extension_version text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'error') = (error_message IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS workspaces_server ON workspaces (server_id) WHERE state <> 'deleted';
CREATE TABLE IF NOT EXISTS credentials (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('read', 'override')),
    slot         text NOT NULL CHECK (slot IN ('a', 'b')),
    login_name   text NOT NULL CHECK (login_name = 'ws_' || workspace_id || '_' || kind || '_' || slot),
    active       boolean NOT NULL,
    nonce        bytea NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext   bytea NOT NULL CHECK (octet_length(ciphertext) > 16),
    valid_until  timestamptz,
    rotated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, kind, slot)
);
CREATE UNIQUE INDEX IF NOT EXISTS credentials_one_active ON credentials (workspace_id, kind) WHERE active;
-- The last `dl-tenancy upgrade` attempt per workspace.
CREATE TABLE IF NOT EXISTS workspace_upgrades (
    workspace_id  text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    from_version  text,
    to_version    text NOT NULL,
    state         text NOT NULL CHECK (state IN ('succeeded', 'failed')),
    error_message text,
    attempts      integer NOT NULL DEFAULT 1 CHECK (attempts > 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'failed') = (error_message IS NOT NULL))
);
REVOKE ALL ON SCHEMA public FROM PUBLIC;
