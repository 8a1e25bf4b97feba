//! The utility hook's 0.6.0 fences (src/tenant_guard.rs): a workspace login grants only to
//! its own workspace's roles and locks only its own tables; the platform's load login skips
//! what a backup of another workspace names instead of failing.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;

    /// The workspace role (named like the database), a login of this workspace, a login of
    /// a neighbour and a table of the tenant's.
    fn workspace() {
        run("DO $$ BEGIN EXECUTE format('CREATE ROLE %I NOLOGIN', current_database()); END $$");
        run("DO $$ BEGIN EXECUTE format('CREATE ROLE dl_test_mine LOGIN IN ROLE dl_tenant_override, %I', current_database()); END $$");
        run("DO $$ BEGIN EXECUTE format('CREATE ROLE %I LOGIN IN ROLE dl_tenant_override, %I', current_database() || '_load', current_database()); END $$");
        run("CREATE ROLE dl_test_neighbour_ws NOLOGIN");
        run("CREATE ROLE dl_test_neighbour LOGIN IN ROLE dl_tenant_read, dl_test_neighbour_ws");
        run("SET LOCAL ROLE dl_tenant_override");
        run("CREATE TABLE tenant_custom.t (id int)");
        run("CREATE POLICY existing ON tenant_custom.t USING (true)");
        run("CREATE FUNCTION tenant_custom.f() RETURNS int LANGUAGE sql RETURN 1");
        run("CREATE VIEW tenant_custom.v AS SELECT identity_key FROM dl_override.person_overrides");
        run("RESET ROLE");
    }

    /// Every trace a statement could leave of the neighbour in this database.
    fn neighbour_traces() -> i64 {
        count(
            "SELECT count(*) FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
              WHERE r.rolname IN ('dl_test_neighbour', 'dl_test_neighbour_ws', 'postgres', 'dl_platform_runtime')
                AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND d.deptype <> 'o'",
        )
    }

    #[pg_test]
    fn workspace_logins_grant_only_to_their_own_roles() {
        workspace();
        let before = neighbour_traces();
        run("SET LOCAL SESSION AUTHORIZATION dl_test_mine");
        run("SET LOCAL ROLE dl_tenant_override");
        for statement in [
            "GRANT SELECT ON tenant_custom.t TO dl_test_neighbour",
            "GRANT SELECT ON tenant_custom.t TO dl_tenant_read, dl_test_neighbour",
            "GRANT SELECT ON tenant_custom.t TO dl_test_neighbour_ws",
            "GRANT SELECT ON tenant_custom.t TO postgres",
            "GRANT SELECT ON tenant_custom.t TO dl_platform_runtime",
            "GRANT EXECUTE ON FUNCTION tenant_custom.f() TO dl_test_neighbour",
            "GRANT SELECT ON ALL TABLES IN SCHEMA tenant_custom TO dl_test_neighbour",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA tenant_custom GRANT SELECT ON TABLES TO dl_test_neighbour",
            "ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO dl_test_neighbour",
            "CREATE POLICY p ON tenant_custom.t TO dl_test_neighbour USING (true)",
            "CREATE POLICY p ON tenant_custom.t TO PUBLIC, dl_test_neighbour USING (true)",
            "ALTER POLICY existing ON tenant_custom.t TO dl_test_neighbour",
            "GRANT dl_tenant_override TO dl_test_neighbour",
        ] {
            assert_eq!(sqlstate_of(statement), "42501", "{statement}");
        }
        for statement in [
            "GRANT SELECT ON tenant_custom.t TO PUBLIC",
            "GRANT SELECT ON tenant_custom.t TO dl_tenant_read, dl_tenant_override",
            "GRANT SELECT ON tenant_custom.t TO CURRENT_USER, SESSION_USER",
            "GRANT SELECT ON tenant_custom.t TO dl_test_mine",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA tenant_custom GRANT SELECT ON TABLES TO dl_tenant_read",
            "CREATE POLICY p ON tenant_custom.t TO dl_tenant_read USING (true)",
            "ALTER POLICY p ON tenant_custom.t TO dl_tenant_read, dl_test_mine",
            "REVOKE SELECT ON tenant_custom.t FROM dl_test_neighbour",
            "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM dl_test_neighbour",
        ] {
            assert_eq!(sqlstate_of(statement), "00000", "{statement}");
        }
        run("DO $$ BEGIN EXECUTE format('GRANT SELECT ON tenant_custom.t TO %I', current_database()); END $$");
        // A role that does not exist is PostgreSQL's to report.
        assert_eq!(
            sqlstate_of("GRANT SELECT ON tenant_custom.t TO dl_test_nobody"),
            "42704"
        );
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(neighbour_traces(), before);
        // Superusers are not fenced.
        assert_eq!(
            sqlstate_of("GRANT SELECT ON tenant_custom.t TO dl_test_neighbour"),
            "00000"
        );
    }

    #[pg_test]
    fn workspace_logins_lock_only_their_own_tables() {
        workspace();
        for (login, acting_as) in [
            ("dl_test_mine", "dl_tenant_override"),
            ("dl_test_mine", "NONE"),
        ] {
            run(&format!("SET LOCAL SESSION AUTHORIZATION {login}"));
            run(&format!("SET LOCAL ROLE {acting_as}"));
            for statement in [
                "LOCK TABLE dl_override.person_overrides IN ACCESS EXCLUSIVE MODE",
                "LOCK TABLE dl_override.person_overrides IN ACCESS SHARE MODE",
                "LOCK dl_resolved.people",
                "LOCK TABLE tenant_custom.t, dl_override.company_overrides",
                // A view locks what it reads, with its owner's rights.
                "LOCK TABLE tenant_custom.v IN ACCESS EXCLUSIVE MODE",
            ] {
                assert_eq!(sqlstate_of(statement), "42501", "{login}: {statement}");
            }
            assert_eq!(sqlstate_of("LOCK TABLE dl_test_nothing_here"), "42P01");
            run("RESET SESSION AUTHORIZATION");
        }
        run("SET LOCAL SESSION AUTHORIZATION dl_test_mine");
        run("SET LOCAL ROLE dl_tenant_override");
        assert_eq!(
            sqlstate_of("LOCK TABLE tenant_custom.t IN ACCESS EXCLUSIVE MODE"),
            "00000"
        );
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(
            sqlstate_of("LOCK TABLE dl_override.person_overrides IN ACCESS SHARE MODE"),
            "00000"
        );
    }

    /// The load login restores a backup of another workspace: what names the other
    /// workspace's roles is skipped (a WARNING), the rest is restored.
    #[pg_test]
    fn the_load_login_skips_foreign_roles() {
        workspace();
        let before = neighbour_traces();
        run("DO $$ BEGIN EXECUTE format('SET LOCAL SESSION AUTHORIZATION %I', current_database() || '_load'); END $$");
        run("SET LOCAL ROLE dl_tenant_override");
        for statement in [
            "GRANT SELECT ON tenant_custom.t TO dl_test_neighbour",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA tenant_custom GRANT SELECT ON TABLES TO dl_test_neighbour",
            "CREATE POLICY foreign_policy ON tenant_custom.t TO dl_test_neighbour USING (true)",
            "ALTER POLICY existing ON tenant_custom.t TO dl_test_neighbour",
            "ALTER TABLE tenant_custom.t OWNER TO dl_test_neighbour",
            "ALTER VIEW tenant_custom.v OWNER TO dl_test_neighbour",
            "ALTER FUNCTION tenant_custom.f() OWNER TO dl_test_neighbour",
            "GRANT SELECT ON tenant_custom.t TO dl_tenant_read",
            "ALTER TABLE tenant_custom.t OWNER TO dl_tenant_override",
        ] {
            assert_eq!(sqlstate_of(statement), "00000", "{statement}");
        }
        run("RESET SESSION AUTHORIZATION");
        assert_eq!(
            count("SELECT count(*) FROM pg_policies WHERE tablename = 't' AND 'dl_test_neighbour' = ANY(roles)"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_policies WHERE policyname = 'foreign_policy'"),
            0
        );
        assert_eq!(
            text("SELECT string_agg(DISTINCT o::text, ',') FROM (SELECT relowner::regrole AS o FROM pg_class WHERE relnamespace = 'tenant_custom'::regnamespace UNION SELECT proowner::regrole FROM pg_proc WHERE pronamespace = 'tenant_custom'::regnamespace) s").as_deref(),
            Some("dl_tenant_override")
        );
        assert_eq!(
            text("SELECT relacl::text FROM pg_class WHERE oid = 'tenant_custom.t'::regclass").as_deref(),
            Some("{dl_tenant_override=arwdDxt/dl_tenant_override,dl_tenant_read=r/dl_tenant_override}")
        );
        assert_eq!(
            text("SELECT has_table_privilege('dl_tenant_read', 'tenant_custom.t', 'SELECT')::text")
                .as_deref(),
            Some("true")
        );
        assert_eq!(neighbour_traces(), before);
    }
}
