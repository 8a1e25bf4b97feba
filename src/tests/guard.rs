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

    /// Statements that lock the relation they name before PostgreSQL checks the privilege to
    /// run them are refused before any lock when that relation is outside tenant_custom: a
    /// rule or a partition of pg_authid queued behind the tenant's own open read of pg_roles
    /// made every new session of the server wait.
    #[pg_test]
    fn workspace_logins_queue_no_lock_outside_tenant_custom() {
        workspace();
        run(
            "CREATE FUNCTION tests.message_of(statement text) RETURNS text LANGUAGE plpgsql
             AS $fn$ BEGIN EXECUTE statement; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $fn$",
        );
        let message_of = |statement: &str| {
            Spi::get_one_with_args::<String>("SELECT tests.message_of($1)", &[statement.into()])
                .expect("message_of runs")
                .expect("message_of returns a text")
        };
        run("SET LOCAL ROLE dl_tenant_override");
        run("CREATE TABLE tenant_custom.parted (k int) PARTITION BY LIST (k)");
        run("CREATE TABLE tenant_custom.child (k int PRIMARY KEY)");
        run("CREATE FUNCTION tenant_custom.tf() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN RETURN NEW; END $fn$");
        run("RESET ROLE");
        run("SET LOCAL SESSION AUTHORIZATION dl_test_mine");
        run("SET LOCAL ROLE dl_tenant_override");
        let refused =
            "42501 workspace logins can name only relations in tenant_custom in this statement";
        for statement in [
            "CREATE RULE r AS ON INSERT TO pg_catalog.pg_authid DO INSTEAD NOTHING",
            "CREATE RULE r AS ON INSERT TO dl_override.person_overrides DO INSTEAD NOTHING",
            "CREATE TABLE tenant_custom.p PARTITION OF pg_catalog.pg_authid DEFAULT",
            "CREATE TABLE tenant_custom.p PARTITION OF dl_override.person_overrides DEFAULT",
            "CREATE TABLE tenant_custom.p () INHERITS (dl_override.person_overrides)",
            "CREATE FOREIGN TABLE tenant_custom.p PARTITION OF pg_catalog.pg_database DEFAULT SERVER nowhere",
            "CREATE TABLE tenant_custom.f (k text REFERENCES dl_override.person_overrides)",
            "CREATE TABLE tenant_custom.f (k text, FOREIGN KEY (k) REFERENCES dl_override.person_overrides)",
            "ALTER TABLE tenant_custom.child ADD FOREIGN KEY (k) REFERENCES pg_catalog.pg_authid (oid)",
            "ALTER TABLE tenant_custom.child ADD COLUMN r text REFERENCES dl_override.person_overrides",
            "ALTER TABLE tenant_custom.child INHERIT dl_override.person_overrides",
            "ALTER TABLE tenant_custom.parted ATTACH PARTITION pg_catalog.pg_authid DEFAULT",
            "ALTER TABLE tenant_custom.parted DETACH PARTITION pg_catalog.pg_authid",
            "CREATE TRIGGER tr BEFORE INSERT ON dl_override.person_overrides FOR EACH ROW EXECUTE FUNCTION tenant_custom.tf()",
            "CREATE TRIGGER tr INSTEAD OF INSERT ON dl_resolved.people FOR EACH ROW EXECUTE FUNCTION tenant_custom.tf()",
            "CREATE STATISTICS tenant_custom.s ON rolname, rolsuper FROM pg_catalog.pg_authid",
            "COMMENT ON TABLE pg_catalog.pg_authid IS 'x'",
            "COMMENT ON INDEX pg_catalog.pg_authid_rolname_index IS 'x'",
            "COMMENT ON COLUMN dl_override.person_overrides.status IS 'x'",
            "COMMENT ON TRIGGER after_insert ON dl_override.person_overrides IS 'x'",
            "DROP TRIGGER IF EXISTS nothing ON pg_catalog.pg_authid",
            "DROP RULE IF EXISTS nothing ON pg_catalog.pg_database",
            "DROP POLICY IF EXISTS nothing ON dl_override.person_overrides",
            "ALTER INDEX pg_catalog.pg_authid_rolname_index DEPENDS ON EXTENSION dl_tenancy",
            "ALTER TRIGGER after_insert ON dl_override.person_overrides DEPENDS ON EXTENSION dl_tenancy",
            "DO $$ BEGIN EXECUTE 'CREATE RULE r AS ON INSERT TO pg_catalog.pg_authid DO INSTEAD NOTHING'; END $$",
        ] {
            assert_eq!(message_of(statement), refused, "{statement}");
        }
        // The same statements on the tenant's own relations run as before.
        for statement in [
            "CREATE RULE r AS ON INSERT TO tenant_custom.t DO INSTEAD NOTHING",
            "DROP RULE r ON tenant_custom.t",
            "CREATE TABLE tenant_custom.p1 PARTITION OF tenant_custom.parted FOR VALUES IN (1)",
            "ALTER TABLE tenant_custom.parted DETACH PARTITION tenant_custom.p1",
            "CREATE TABLE tenant_custom.f (k int REFERENCES tenant_custom.child)",
            "ALTER TABLE tenant_custom.f ADD COLUMN r int REFERENCES tenant_custom.child",
            "CREATE TRIGGER tr BEFORE INSERT ON tenant_custom.t FOR EACH ROW EXECUTE FUNCTION tenant_custom.tf()",
            "COMMENT ON TRIGGER tr ON tenant_custom.t IS 'x'",
            "DROP TRIGGER tr ON tenant_custom.t",
            "CREATE STATISTICS tenant_custom.s ON k, r FROM tenant_custom.f",
            "COMMENT ON TABLE tenant_custom.t IS 'x'",
            "COMMENT ON COLUMN tenant_custom.t.id IS 'x'",
            "COMMENT ON POLICY existing ON tenant_custom.t IS 'x'",
        ] {
            assert_eq!(message_of(statement), "ok", "{statement}");
        }
        // A relation that does not exist is PostgreSQL's to report.
        assert_eq!(
            sqlstate_of("CREATE RULE r AS ON INSERT TO dl_test_nothing_here DO INSTEAD NOTHING"),
            "42P01"
        );
        run("RESET SESSION AUTHORIZATION");
        // Superusers are not fenced.
        assert_eq!(
            message_of("COMMENT ON TABLE dl_override.person_overrides IS 'x'"),
            "ok"
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
