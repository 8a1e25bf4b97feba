//! The seed's "Role Access" table, tried operation by operation as each role.
//! Allowed operations must succeed ('00000'); forbidden ones must fail with 42501.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;

    const OK: &str = "00000";
    const DENIED: &str = "42501";

    fn setup() {
        run(r#"SELECT dl_upsert_person_enrichment('p1', '{"name":"P"}', '{}')"#);
        run(r#"SELECT dl_upsert_company_enrichment('c1', '{"name":"C"}', '{}')"#);
        run(r#"SELECT dl_apply_person_override('p1', NULL, '{"name":"Q"}', NULL)"#);
        run("INSERT INTO dl_meta.tenant_settings (key, value) VALUES ('theme', '\"dark\"')");
        run("SET LOCAL ROLE dl_tenant_override");
        run("CREATE TABLE tenant_custom.existing (id int PRIMARY KEY)");
        run("RESET ROLE");
    }

    fn check_matrix(role: &str, matrix: &[(&str, &str)]) {
        setup();
        run(&format!("SET LOCAL ROLE {role}"));
        let failures: Vec<String> = sqlstate_mismatches(matrix)
            .iter()
            .map(|failure| format!("{role}: {failure}"))
            .collect();
        run("RESET ROLE");
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    // Forbidden to every tenant role.
    const NOBODY: &[(&str, &str)] = &[
        ("SELECT * FROM dl_internal.resolved_people", DENIED),
        ("CREATE TABLE public.t (id int)", DENIED),
        ("CREATE TABLE dl_resolved.t (id int)", DENIED),
        ("CREATE TABLE dl_override.t (id int)", DENIED),
        ("CREATE TABLE dl_meta.t (id int)", DENIED),
        ("CREATE FUNCTION public.f() RETURNS int LANGUAGE sql RETURN 1", DENIED),
        ("INSERT INTO dl_resolved.people (identity_key, identity_payload, raw_payload, is_overridden, updated_at) VALUES ('x', '{}', '{}', false, now())", DENIED),
        ("UPDATE dl_resolved.people SET display_name = 'x'", DENIED),
        ("DELETE FROM dl_resolved.companies", DENIED),
        ("DROP VIEW dl_resolved.people", DENIED),
        ("SELECT dl_internal.refresh_people(NULL)", DENIED),
        ("SELECT * FROM dl_internal.pooler_user_lookup('postgres')", DENIED),
        ("SELECT * FROM dl_internal.pooler_login_lookup('postgres')", DENIED),
        ("TRUNCATE dl_cache.person_enrichments", DENIED),
        ("TRUNCATE dl_override.person_overrides", DENIED),
        ("ALTER TABLE dl_override.person_overrides ADD COLUMN x int", DENIED),
        ("CREATE SCHEMA mine", DENIED),
        // Shared state of the whole server (0.4.0): the lock table, large objects, the
        // notification queue.
        ("SELECT pg_advisory_lock(1::bigint)", DENIED),
        ("SELECT pg_advisory_xact_lock(1, 2)", DENIED),
        ("SELECT pg_try_advisory_lock_shared(1::bigint)", DENIED),
        ("SELECT count(pg_advisory_xact_lock(g)) FROM generate_series(1, 10) g", DENIED),
        ("SELECT lo_create(0)", DENIED),
        ("SELECT lo_creat(-1)", DENIED),
        ("SELECT lo_from_bytea(0, 'x')", DENIED),
        ("SELECT pg_notify('c', 'x')", DENIED),
    ];

    #[pg_test]
    fn tenant_read() {
        let mut matrix = vec![
            (include_str!("../../tests/seed/read_query.sql"), OK),
            ("SELECT * FROM dl_resolved.companies", OK),
            ("SELECT dl_sql_schema()", OK),
            // Releasing fills nothing; drivers' pool resets call it (asyncpg), 0.6.0.
            ("SELECT pg_advisory_unlock_all()", OK),
            ("SELECT dl_tenancy_version(), dl_tenancy_library_version()", OK),
            ("SELECT dl_jsonb_merge_patch('{}', '{}')", OK),
            ("SELECT * FROM dl_cache.person_enrichments", DENIED),
            ("SELECT * FROM dl_cache.company_enrichments", DENIED),
            ("SELECT * FROM dl_override.person_overrides", DENIED),
            ("SELECT * FROM dl_override.company_overrides", DENIED),
            ("SELECT * FROM dl_meta.schema_migrations", DENIED),
            ("SELECT * FROM dl_meta.tenant_settings", DENIED),
            ("SELECT * FROM tenant_custom.existing", DENIED),
            ("CREATE TABLE tenant_custom.account_segments (id text PRIMARY KEY)", DENIED),
            ("INSERT INTO dl_override.person_overrides (identity_key) VALUES ('x')", DENIED),
            ("INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) VALUES ('x', '{}', '{}')", DENIED),
            ("SELECT dl_apply_person_override('p1', NULL, '{}', NULL)", DENIED),
            ("SELECT dl_tombstone_person('p1')", DENIED),
            ("SELECT dl_clear_person_override('p1')", DENIED),
            ("SELECT dl_upsert_person_enrichment('p9', '{}', '{}')", DENIED),
        ];
        matrix.extend_from_slice(NOBODY);
        check_matrix("dl_tenant_read", &matrix);
    }

    #[pg_test]
    fn tenant_override() {
        let mut matrix = vec![
            (include_str!("../../tests/seed/read_query.sql"), OK),
            ("SELECT * FROM dl_resolved.companies", OK),
            ("SELECT * FROM dl_override.person_overrides", OK),
            ("INSERT INTO dl_override.person_overrides (identity_key, status) VALUES ('new', 'x')", OK),
            ("UPDATE dl_override.person_overrides SET status = 'y' WHERE identity_key = 'p1'", OK),
            ("DELETE FROM dl_override.person_overrides WHERE identity_key = 'p1'", OK),
            ("INSERT INTO dl_override.company_overrides (identity_key) VALUES ('c1')", OK),
            ("UPDATE dl_override.company_overrides SET tombstoned = true", OK),
            ("DELETE FROM dl_override.company_overrides", OK),
            ("SELECT dl_apply_person_override('p1', 'vip', '{\"name\":\"R\"}', NULL)", OK),
            ("SELECT dl_apply_company_override('c1', NULL, NULL, '{\"a\":1}')", OK),
            ("SELECT dl_tombstone_person('p1')", OK),
            ("SELECT dl_tombstone_company('c1')", OK),
            ("SELECT dl_clear_person_override('p1')", OK),
            ("SELECT dl_clear_company_override('c1')", OK),
            ("SELECT dl_sql_schema()", OK),
            // tenant_custom: full DDL and DML, the seed's statement verbatim.
            (include_str!("../../tests/seed/custom_table.sql"), OK),
            ("INSERT INTO tenant_custom.existing VALUES (1)", OK),
            ("UPDATE tenant_custom.existing SET id = 2", OK),
            ("DELETE FROM tenant_custom.existing", OK),
            ("ALTER TABLE tenant_custom.existing ADD COLUMN note text", OK),
            ("CREATE INDEX ON tenant_custom.existing (id)", OK),
            ("CREATE VIEW tenant_custom.v AS SELECT identity_key FROM dl_resolved.people", OK),
            ("CREATE FUNCTION tenant_custom.f() RETURNS int LANGUAGE sql RETURN 1", OK),
            ("DROP TABLE tenant_custom.existing", OK),
            ("SELECT * FROM dl_cache.person_enrichments", DENIED),
            ("INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) VALUES ('x', '{}', '{}')", DENIED),
            ("SELECT * FROM dl_meta.tenant_settings", DENIED),
            ("SELECT * FROM dl_meta.schema_migrations", DENIED),
            ("SELECT dl_upsert_person_enrichment('p9', '{}', '{}')", DENIED),
            ("CREATE TABLE dl_cache.t (id int)", DENIED),
        ];
        matrix.extend_from_slice(NOBODY);
        check_matrix("dl_tenant_override", &matrix);
    }

    #[pg_test]
    fn platform_runtime() {
        let mut matrix = vec![
            ("SELECT * FROM dl_resolved.people", OK),
            ("SELECT * FROM dl_override.person_overrides", OK),
            ("SELECT * FROM dl_cache.person_enrichments", OK),
            ("INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) VALUES ('x', '{}', '{}')", OK),
            ("UPDATE dl_cache.company_enrichments SET status = 'seen'", OK),
            ("DELETE FROM dl_cache.person_enrichments WHERE identity_key = 'p1'", OK),
            ("SELECT dl_upsert_person_enrichment('p9', '{\"name\":\"N\"}', '{}')", OK),
            ("SELECT dl_upsert_company_enrichment('c9', '{\"name\":\"N\"}', '{}', 'active', 'crm', now())", OK),
            ("SELECT * FROM dl_meta.schema_migrations", OK),
            ("INSERT INTO dl_meta.tenant_settings (key, value) VALUES ('sync', 'true')", OK),
            ("UPDATE dl_meta.tenant_settings SET value = '\"light\"' WHERE key = 'theme'", OK),
            ("SELECT dl_sql_schema()", OK),
            ("INSERT INTO dl_override.person_overrides (identity_key) VALUES ('x')", DENIED),
            ("SELECT dl_apply_person_override('p1', NULL, '{}', NULL)", DENIED),
            ("SELECT * FROM tenant_custom.existing", DENIED),
            ("CREATE TABLE tenant_custom.t (id int)", DENIED),
            ("CREATE TABLE dl_cache.t (id int)", DENIED),
        ];
        matrix.extend(
            NOBODY
                .iter()
                .filter(|(s, _)| !s.contains("resolved_people")),
        );
        check_matrix("dl_platform_runtime", &matrix);
    }

    /// Objects an override login creates belong to the group role when the login acts as the
    /// group (the provisioning tool sets `ALTER ROLE login SET role = dl_tenant_override`), so
    /// they survive the login being rotated away and dropped.
    #[pg_test]
    fn custom_objects_outlive_the_login_that_created_them() {
        run("CREATE ROLE dl_test_login_a LOGIN IN ROLE dl_tenant_override");
        run("CREATE ROLE dl_test_login_b LOGIN IN ROLE dl_tenant_override");
        run("SET LOCAL SESSION AUTHORIZATION dl_test_login_a");
        run("SET LOCAL ROLE dl_tenant_override");
        run("CREATE TABLE tenant_custom.account_segments (id text PRIMARY KEY, segment text NOT NULL)");
        run("INSERT INTO tenant_custom.account_segments VALUES ('a', 'smb')");
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(
            text("SELECT tableowner::text FROM pg_tables WHERE schemaname = 'tenant_custom' AND tablename = 'account_segments'").as_deref(),
            Some("dl_tenant_override")
        );
        run("DROP ROLE dl_test_login_a");
        run("SET LOCAL SESSION AUTHORIZATION dl_test_login_b");
        run("SET LOCAL ROLE dl_tenant_override");
        assert_eq!(
            sqlstate_of("INSERT INTO tenant_custom.account_segments VALUES ('b', 'ent')"),
            "00000"
        );
        assert_eq!(
            sqlstate_of("ALTER TABLE tenant_custom.account_segments ADD COLUMN note text"),
            "00000"
        );
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(
            count("SELECT count(*) FROM tenant_custom.account_segments"),
            2
        );
    }

    /// Utility statements no privilege covers are refused to workspace logins by the library
    /// (src/tenant_guard.rs): a retired login's open session cannot give itself a new password,
    /// no login persists settings or writes the server-wide notification queue.
    #[pg_test]
    fn workspace_logins_cannot_listen_notify_or_alter_their_role() {
        run("CREATE ROLE dl_test_read LOGIN IN ROLE dl_tenant_read");
        run("CREATE ROLE dl_test_override LOGIN IN ROLE dl_tenant_override");
        run("CREATE ROLE dl_test_runtime LOGIN IN ROLE dl_platform_runtime");
        let refused = [
            "LISTEN c",
            "NOTIFY c",
            "NOTIFY c, 'payload'",
            "ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-attacker'",
            "ALTER ROLE SESSION_USER PASSWORD NULL",
            "ALTER ROLE CURRENT_USER SET work_mem = '10GB'",
            "ALTER ROLE CURRENT_USER RESET ALL",
            "ALTER ROLE dl_tenant_override SET statement_timeout = 0",
        ];
        for (login, acting_as) in [
            ("dl_test_read", "NONE"),
            ("dl_test_override", "dl_tenant_override"),
            ("dl_test_override", "NONE"),
        ] {
            run(&format!("SET LOCAL SESSION AUTHORIZATION {login}"));
            run(&format!("SET LOCAL ROLE {acting_as}"));
            for statement in refused {
                assert_eq!(
                    sqlstate_of(statement),
                    "42501",
                    "{login} as {acting_as}: {statement}"
                );
            }
            run("RESET SESSION AUTHORIZATION");
        }
        assert_eq!(
            count("SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname LIKE 'dl\\_%'"),
            0
        );
        // The platform's logins and superusers are not refused.
        run("SET LOCAL SESSION AUTHORIZATION dl_test_runtime");
        assert_eq!(sqlstate_of("LISTEN c"), "00000");
        assert_eq!(
            sqlstate_of("ALTER ROLE CURRENT_USER SET work_mem = '8MB'"),
            "00000"
        );
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(sqlstate_of("NOTIFY c"), "00000");
        assert_eq!(
            sqlstate_of("ALTER ROLE dl_test_read PASSWORD NULL"),
            "00000"
        );
    }

    /// Nothing a tenant plants in tenant_custom or pg_temp changes what the extension's
    /// functions, triggers and views resolve to.
    #[pg_test]
    fn planted_functions_and_operators_are_ignored() {
        run("SET LOCAL ROLE dl_tenant_override");
        run("CREATE FUNCTION tenant_custom.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql RETURN 'object'");
        run("CREATE FUNCTION tenant_custom.btrim(text) RETURNS text LANGUAGE sql RETURN 'x'");
        run("CREATE FUNCTION tenant_custom.now() RETURNS timestamptz LANGUAGE sql RETURN '2000-01-01'::timestamptz");
        run("CREATE FUNCTION tenant_custom.texteq_evil(text, text) RETURNS boolean LANGUAGE sql RETURN true");
        run("CREATE OPERATOR tenant_custom.= (FUNCTION = tenant_custom.texteq_evil, LEFTARG = text, RIGHTARG = text)");
        run(
            "CREATE FUNCTION pg_temp.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql RETURN 'object'",
        );
        run("SET LOCAL search_path = tenant_custom, pg_temp, public, pg_catalog");
        // The planted jsonb_typeof would accept an array patch, the planted btrim a blank key.
        assert_eq!(
            sqlstate_of("SELECT dl_apply_person_override('k', NULL, '[1]', NULL)"),
            "22023"
        );
        assert_eq!(sqlstate_of("INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('k', '[1]')"), "23514");
        assert_eq!(
            sqlstate_of("SELECT dl_apply_person_override('  ')"),
            "22023"
        );
        run(r#"SELECT dl_apply_person_override('k1', NULL, '{"name":"A"}', NULL)"#);
        run(r#"SELECT dl_apply_person_override('k2', NULL, '{"name":"B"}', NULL)"#);
        run("SET LOCAL search_path TO DEFAULT");
        // Had the planted "=" been used by the refresh, each key's row would have been merged
        // with the other's override; had the planted now() been used, updated_at would be 2000.
        assert_eq!(
            text("SELECT string_agg(identity_key || ':' || display_name, ',' ORDER BY identity_key) FROM dl_resolved.people").as_deref(),
            Some("k1:A,k2:B")
        );
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE updated_at > '2001-01-01'"),
            2
        );
        run("RESET ROLE");
    }
}
