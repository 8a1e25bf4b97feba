//! PgBouncer's auth_query: dl_internal.pooler_login_lookup answers only for tenant logins that
//! may log in now, pooler_user_lookup only for those of them that may connect to this
//! database; both return no row for anyone else.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;

    fn lookup(login: &str) -> i64 {
        count(&format!(
            "SELECT count(*) FROM dl_internal.pooler_user_lookup('{login}') WHERE passwd LIKE 'SCRAM-SHA-256$%'"
        ))
    }

    fn rows(login: &str) -> i64 {
        count(&format!(
            "SELECT count(*) FROM dl_internal.pooler_user_lookup('{login}')"
        ))
    }

    #[pg_test]
    fn lookup_answers_only_for_tenant_logins_of_this_database() {
        run("SET LOCAL password_encryption = 'scram-sha-256'");
        run("CREATE ROLE pool_reader LOGIN PASSWORD 'x' IN ROLE dl_tenant_read");
        run("CREATE ROLE pool_writer LOGIN PASSWORD 'x' IN ROLE dl_tenant_override");
        run("CREATE ROLE pool_expired LOGIN PASSWORD 'x' VALID UNTIL '2000-01-01' IN ROLE dl_tenant_read");
        run("CREATE ROLE pool_outsider LOGIN PASSWORD 'x'");
        run("CREATE ROLE pool_elsewhere LOGIN PASSWORD 'x' IN ROLE dl_tenant_read");
        // CONNECT to this database only for the first three.
        run("DO $$ BEGIN EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
                        EXECUTE format('GRANT CONNECT ON DATABASE %I TO pool_reader, pool_writer, pool_expired', current_database()); END $$");
        run("SET LOCAL ROLE dl_pooler_auth");
        assert_eq!(lookup("pool_reader"), 1);
        assert_eq!(lookup("pool_writer"), 1);
        // Refused logins give no row at all (not a row of NULLs).
        for refused in [
            "pool_expired",
            "pool_outsider",
            "pool_elsewhere",
            "postgres",
            "no_such_login",
        ] {
            assert_eq!(rows(refused), 0, "{refused}");
        }
        // The lookup the tool's pooler runs in its lookup database (auth_dbname): any tenant
        // login that may log in, wherever it may connect; still nobody else.
        let login_lookup = |login: &str| {
            count(&format!(
                "SELECT count(*) FROM dl_internal.pooler_login_lookup('{login}') WHERE passwd LIKE 'SCRAM-SHA-256$%'"
            ))
        };
        for tenant in ["pool_reader", "pool_writer", "pool_elsewhere"] {
            assert_eq!(login_lookup(tenant), 1, "{tenant}");
        }
        for refused in ["pool_expired", "pool_outsider", "postgres", "no_such_login"] {
            assert_eq!(
                count(&format!(
                    "SELECT count(*) FROM dl_internal.pooler_login_lookup('{refused}')"
                )),
                0,
                "{refused}"
            );
        }
        run("RESET ROLE");
        run("SET LOCAL ROLE dl_tenant_read");
        for lookup in ["pooler_user_lookup", "pooler_login_lookup"] {
            assert_eq!(
                sqlstate_of(&format!(
                    "SELECT * FROM dl_internal.{lookup}('pool_reader')"
                )),
                "42501"
            );
        }
        run("RESET ROLE");
    }
}
