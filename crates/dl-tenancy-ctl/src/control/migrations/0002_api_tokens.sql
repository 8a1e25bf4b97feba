-- The table (control migration 2). No foreign key to `workspaces`: a token may precede the
-- workspace's first provisioning. `deprovision` revokes every token of its workspace.
CREATE TABLE IF NOT EXISTS api_tokens (
    id            text PRIMARY KEY CHECK (id ~ '^tok_[0-9a-f]{16}$'),
    workspace_id  text NOT NULL CHECK (workspace_id ~ '^[a-z][a-z0-9_-]{0,47}$'),
    token_sha256  bytea NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS api_tokens_workspace ON api_tokens (workspace_id);
