-- Control migration 6: the soft-delete states and the per-workspace event log.
-- The state check of migration 1 is unnamed: found by its definition.
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM pg_catalog.pg_constraint
              WHERE conrelid = 'public.workspaces'::regclass AND contype = 'c'
                AND pg_catalog.pg_get_constraintdef(oid) LIKE '%''provisioning''%'
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE public.workspaces DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$$;
ALTER TABLE workspaces
    ADD CONSTRAINT workspaces_state_check CHECK (state IN
        ('provisioning', 'active', 'error', 'suspended', 'purging', 'deleted')),
    ADD COLUMN suspended_at timestamptz,
    ADD COLUMN purge_after timestamptz,
    ADD CONSTRAINT workspaces_suspension_check
        CHECK ((state IN ('suspended', 'purging')) = (purge_after IS NOT NULL));
-- What was done to each workspace, by whom it was asked (cli, sweep), kept after a purge.
CREATE TABLE workspace_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text NOT NULL CHECK (workspace_id ~ '^[a-z][a-z0-9_-]{0,47}$'),
    action       text NOT NULL CHECK (action ~ '^[a-z_]{1,32}$'),
    detail       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_events_workspace ON workspace_events (workspace_id, at);
