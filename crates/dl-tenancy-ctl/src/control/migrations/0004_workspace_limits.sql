-- 0.4.0: limits an operator chose for a workspace (`dl-tenancy limits`); none: the defaults.
CREATE TABLE workspace_limits (
    workspace_id text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    limits       jsonb NOT NULL CHECK (jsonb_typeof(limits) = 'object'),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
