-- Control migration 9: operator tokens of the HTTP API (its /api/v2/operator/ endpoints). An
-- operator token names no workspace; a workspace token names exactly one.
ALTER TABLE api_tokens ADD COLUMN operator boolean NOT NULL DEFAULT false;
ALTER TABLE api_tokens ALTER COLUMN workspace_id DROP NOT NULL;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope CHECK (operator = (workspace_id IS NULL));
