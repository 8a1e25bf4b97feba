-- Where the platform and other servers reach PostgreSQL itself over TCP (a move's stream),
-- when tenants' direct URIs lead to a front instead (`local up`'s direct PgBouncer, issue 21).
-- NULL: `port`, PostgreSQL's own port, as before.
ALTER TABLE servers ADD COLUMN IF NOT EXISTS platform_port integer
    CHECK (platform_port BETWEEN 1 AND 65535);
