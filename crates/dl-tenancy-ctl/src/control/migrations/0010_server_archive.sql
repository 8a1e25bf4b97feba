-- Control migration 10: the pgBackRest repository of a server added with `server add
-- --backrest-stanza S --backrest-config FILE` (or `server archive`): its stanza and what the
-- repository is (type and path, no secret). The settings themselves, keys included, stay in
-- the file the tool stores 0600 under its data directory (pgbackrest/servers/<server>/).
ALTER TABLE servers
    ADD COLUMN backrest_stanza text CHECK (backrest_stanza ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    ADD COLUMN backrest_repo text,
    ADD COLUMN backrest_system_id text;
