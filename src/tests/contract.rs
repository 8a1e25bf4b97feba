//! dl_sql_schema(): the contract says exactly what the database grants.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;
    use serde_json::json;

    /// For every contract role x contract relation x table privilege, and every schema and
    /// function privilege, the contract and PostgreSQL's own privilege checks agree.
    const DISAGREEMENTS: &str = r#"
        WITH contract AS (SELECT dl_sql_schema() AS c),
        roles AS (SELECT r.key AS role, r.value AS grants FROM contract, jsonb_each(c -> 'roles') r),
        relations AS (
            SELECT format('%I.%I', s ->> 'name', rel ->> 'name') AS relation
              FROM contract, jsonb_array_elements(c -> 'schemas') s, jsonb_array_elements(s -> 'relations') rel),
        schemas AS (SELECT s ->> 'name' AS schema FROM contract, jsonb_array_elements(c -> 'schemas') s),
        functions AS (SELECT f ->> 'signature' AS signature FROM contract, jsonb_array_elements(c -> 'functions') f),
        table_checks AS (
            SELECT r.role, rel.relation, p.privilege,
                   COALESCE(r.grants -> 'relations' -> rel.relation ? p.privilege, false) AS in_contract,
                   has_table_privilege(r.role, rel.relation, p.privilege) AS granted
              FROM roles r, relations rel,
                   unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p(privilege)),
        schema_checks AS (
            SELECT r.role, s.schema, p.privilege,
                   COALESCE(r.grants -> 'schemas' -> s.schema ? p.privilege, false) AS in_contract,
                   has_schema_privilege(r.role, s.schema, p.privilege) AS granted
              FROM roles r, schemas s, unnest(ARRAY['USAGE','CREATE']) p(privilege)),
        function_checks AS (
            SELECT r.role, f.signature,
                   COALESCE(r.grants -> 'functions' -> f.signature ? 'EXECUTE', false) AS in_contract,
                   has_function_privilege(r.role, f.signature, 'EXECUTE') AS granted
              FROM roles r, functions f)
        SELECT COALESCE(jsonb_agg(x), '[]') FROM (
            SELECT role, relation AS object, privilege, in_contract, granted FROM table_checks WHERE in_contract <> granted
            UNION ALL SELECT role, schema, privilege, in_contract, granted FROM schema_checks WHERE in_contract <> granted
            UNION ALL SELECT role, signature, 'EXECUTE', in_contract, granted FROM function_checks WHERE in_contract <> granted
        ) x"#;

    #[pg_test]
    fn contract_agrees_with_the_catalog() {
        // Include a customer table so tenant_custom is not empty.
        run("SET LOCAL ROLE dl_tenant_override");
        run("CREATE TABLE tenant_custom.account_segments (id text PRIMARY KEY, segment text NOT NULL)");
        run("RESET ROLE");
        assert_eq!(json(DISAGREEMENTS), json!([]));
        // And the checks covered something: 3 roles x 11 relations x 7 privileges.
        assert_eq!(
            count("SELECT count(*) FROM jsonb_array_elements(dl_sql_schema() -> 'schemas') s, jsonb_array_elements(s -> 'relations') r"),
            11
        );
    }

    #[pg_test]
    fn contract_matches_the_documented_access() {
        let contract = json("SELECT dl_sql_schema()");
        assert_eq!(
            contract["extension"],
            json!({"name": "dl_tenancy", "version": "0.7.0"})
        );
        let read = &contract["roles"]["dl_tenant_read"];
        assert_eq!(
            read["relations"],
            json!({"dl_resolved.companies": ["SELECT"], "dl_resolved.people": ["SELECT"]})
        );
        assert_eq!(read["schemas"], json!({"dl_resolved": ["USAGE"]}));
        let overrides = &contract["roles"]["dl_tenant_override"];
        assert_eq!(
            overrides["relations"]["dl_override.person_overrides"],
            json!(["DELETE", "INSERT", "SELECT", "UPDATE"])
        );
        assert_eq!(
            overrides["schemas"]["tenant_custom"],
            json!(["CREATE", "USAGE"])
        );
        assert!(overrides["relations"]["dl_cache.person_enrichments"].is_null());
        assert!(
            overrides["functions"]["dl_apply_person_override(text,text,jsonb,jsonb)"]
                .as_array()
                .is_some()
        );
        let runtime = &contract["roles"]["dl_platform_runtime"];
        assert_eq!(
            runtime["relations"]["dl_cache.person_enrichments"],
            json!(["DELETE", "INSERT", "SELECT", "UPDATE"])
        );
        assert_eq!(
            runtime["relations"]["dl_override.person_overrides"],
            json!(["SELECT"])
        );

        let schemas: Vec<(String, String)> = contract["schemas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().into(),
                    s["owner"].as_str().unwrap().into(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("dl_cache", "platform"),
            ("dl_meta", "platform"),
            ("dl_override", "platform"),
            ("dl_resolved", "platform"),
            ("tenant_custom", "customer"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(schemas, expected);

        let people = json(
            "SELECT r FROM jsonb_array_elements(dl_sql_schema() -> 'schemas') s, jsonb_array_elements(s -> 'relations') r
              WHERE s ->> 'name' = 'dl_resolved' AND r ->> 'name' = 'people'",
        );
        assert_eq!(people["kind"], json!("view"));
        let columns: Vec<&str> = people["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "identity_key",
                "display_name",
                "status",
                "identity_payload",
                "raw_payload",
                "is_overridden",
                "updated_at",
                "overridden_fields"
            ]
        );
    }

    #[pg_test]
    fn install_records_its_version_and_registers_dump_tables() {
        assert_eq!(
            text("SELECT string_agg(version || '/' || action, ',') FROM dl_meta.schema_migrations")
                .as_deref(),
            Some("0.7.0/install")
        );
        assert_eq!(
            text("SELECT dl_tenancy_version()").as_deref(),
            Some("0.7.0")
        );
        assert_eq!(
            text("SELECT dl_tenancy_library_version()").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            text("SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
                    FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'dl_tenancy'")
            .as_deref(),
            Some("dl_cache.company_enrichments,dl_cache.person_enrichments,dl_meta.schema_migrations,dl_meta.tenant_settings,dl_override.company_override_history,dl_override.company_overrides,dl_override.person_override_history,dl_override.person_overrides")
        );
        // Every PL/pgSQL function of the extension pins its search_path (SQL-standard bodies
        // and C functions are bound when created), SECURITY DEFINER ones always, and no
        // function is executable by PUBLIC.
        let offenders = |condition: &str| {
            text(&format!(
                "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
                   JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'dl_tenancy'
                  WHERE p.pronamespace <> 'tests'::regnamespace AND ({condition})"
            ))
        };
        let unpinned = "NOT COALESCE('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)";
        assert_eq!(offenders(&format!("p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql') AND {unpinned}")), None);
        assert_eq!(offenders(&format!("p.prosecdef AND {unpinned}")), None);
        assert_eq!(
            offenders("p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0)"),
            None
        );
    }
}
