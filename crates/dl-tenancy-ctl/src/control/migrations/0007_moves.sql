-- Control migration 7: which server's pooler serves a workspace, and its moves.
-- NULL: the pooler of the workspace's own server. Set when a move kept the pooled URI.
ALTER TABLE workspaces ADD COLUMN pooler_server_id text REFERENCES servers (id);
CREATE TABLE workspace_moves (
    workspace_id  text PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    from_server   text NOT NULL REFERENCES servers (id),
    to_server     text NOT NULL REFERENCES servers (id),
    state         text NOT NULL CHECK (state IN ('copying', 'switched', 'done', 'failed')),
    error_message text,
    paused_ms     bigint,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'failed') = (error_message IS NOT NULL))
);
