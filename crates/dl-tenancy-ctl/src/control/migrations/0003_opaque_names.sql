-- 0.4.0: a new workspace's database is `dlw_<handle>` (16 random hex digits, unique here),
-- its roles derived from that; `ws_<id>` stays valid for workspaces not migrated yet
-- (`dl-tenancy migrate-names`, which records the handle before it renames anything).
ALTER TABLE workspaces ADD COLUMN handle text UNIQUE CHECK (handle ~ '^[0-9a-f]{16}$');
-- The checks that tied names to 'ws_' || id (unnamed in migration 1, so found by definition).
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conrelid::regclass AS tbl, conname FROM pg_catalog.pg_constraint
              WHERE conrelid IN ('public.workspaces'::regclass, 'public.credentials'::regclass)
                AND contype = 'c' AND pg_catalog.pg_get_constraintdef(oid) LIKE '%''ws\_''%'
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
END
$$;
ALTER TABLE workspaces ADD CONSTRAINT workspaces_database_name_check
    CHECK (database_name = 'ws_' || id OR coalesce(database_name = 'dlw_' || handle, false));
ALTER TABLE credentials ADD CONSTRAINT credentials_login_name_check
    CHECK (login_name ~ '^(ws_[a-z][a-z0-9_-]{0,47}|dlw_[0-9a-f]{16})_(read|override)_[ab]$');
