//! dl_resolved.people / companies: what a customer reads after every kind of write.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;
    use serde_json::json;

    fn person(key: &str) -> serde_json::Value {
        json(&format!(
            "SELECT to_jsonb(p) - 'updated_at' FROM dl_resolved.people p WHERE identity_key = '{key}'"
        ))
    }

    fn company(key: &str) -> serde_json::Value {
        json(&format!(
            "SELECT to_jsonb(c) - 'updated_at' FROM dl_resolved.companies c WHERE identity_key = '{key}'"
        ))
    }

    fn base_person(key: &str, identity: &str, raw: &str, status: &str) {
        run(&format!(
            "INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload, status, source)
             VALUES ('{key}', '{identity}', '{raw}', {status}, 'test')"
        ));
    }

    #[pg_test]
    fn base_only() {
        base_person(
            "p1",
            r#"{"full_name":"Ada Lovelace","email":"ada@example.com"}"#,
            r#"{"id":1}"#,
            "'active'",
        );
        assert_eq!(
            person("p1"),
            json!({
                "identity_key": "p1", "display_name": "Ada Lovelace", "status": "active",
                "identity_payload": {"full_name": "Ada Lovelace", "email": "ada@example.com"},
                "raw_payload": {"id": 1}, "is_overridden": false, "overridden_fields": []
            })
        );
    }

    #[pg_test]
    fn override_only_record_is_a_new_person() {
        run(
            r#"SELECT dl_apply_person_override('p2', 'lead', '{"name":"Grace","x":null,"o":{"y":null}}', NULL)"#,
        );
        assert_eq!(
            person("p2"),
            json!({
                "identity_key": "p2", "display_name": "Grace", "status": "lead",
                "identity_payload": {"name": "Grace", "o": {}},
                "raw_payload": {}, "is_overridden": true,
                "overridden_fields": ["name", "o", "status", "x"]
            })
        );
    }

    #[pg_test]
    fn override_merges_over_base() {
        base_person(
            "p3",
            r#"{"first_name":"Alan","last_name":"Turing","title":"Dr","address":{"city":"London","zip":"N1"},"tags":["a","b"]}"#,
            r#"{"provider":{"score":7,"raw":"x"}}"#,
            "'active'",
        );
        run(r#"SELECT dl_apply_person_override('p3', NULL,
                 '{"title":null,"address":{"zip":"M1","country":"UK"},"tags":["c"]}',
                 '{"provider":{"raw":null}}')"#);
        assert_eq!(
            person("p3"),
            json!({
                "identity_key": "p3", "display_name": "Alan Turing",
                // The override sets no status: the base's shows.
                "status": "active",
                "identity_payload": {"first_name": "Alan", "last_name": "Turing",
                                     "address": {"city": "London", "zip": "M1", "country": "UK"},
                                     "tags": ["c"]},
                "raw_payload": {"provider": {"score": 7}},
                "is_overridden": true,
                "overridden_fields": ["address", "tags", "title"]
            })
        );
        // An override status wins over the base's.
        run("SELECT dl_apply_person_override('p3', 'churned', NULL, NULL)");
        assert_eq!(person("p3")["status"], json!("churned"));
        // The new patch replaces the stored one: the earlier changes are gone.
        assert_eq!(person("p3")["identity_payload"]["title"], json!("Dr"));
    }

    #[pg_test]
    fn tombstone_hides_and_clear_restores() {
        base_person("p4", r#"{"email":"x@example.com"}"#, "{}", "NULL");
        run(r#"SELECT dl_apply_person_override('p4', NULL, '{"display_name":"X"}', NULL)"#);
        run("SELECT dl_tombstone_person('p4')");
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key = 'p4'"),
            0
        );
        // Re-applying an override un-tombstones.
        run(r#"SELECT dl_apply_person_override('p4', NULL, '{"display_name":"Y"}', NULL)"#);
        assert_eq!(person("p4")["display_name"], json!("Y"));
        run("SELECT dl_tombstone_person('p4')");
        assert_eq!(
            Spi::get_one::<bool>("SELECT dl_clear_person_override('p4')").unwrap(),
            Some(true)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT dl_clear_person_override('p4')").unwrap(),
            Some(false)
        );
        assert_eq!(
            person("p4"),
            json!({
                "identity_key": "p4", "display_name": "x@example.com", "status": null,
                "identity_payload": {"email": "x@example.com"}, "raw_payload": {},
                "is_overridden": false, "overridden_fields": []
            })
        );
        // Tombstoning a key with no base record leaves nothing behind in the view.
        run("SELECT dl_tombstone_person('nobody')");
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key = 'nobody'"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM dl_override.person_overrides WHERE identity_key = 'nobody' AND tombstoned"), 1);
    }

    #[pg_test]
    fn display_name_rules() {
        let cases = [
            (
                r#"{"display_name":"D","full_name":"F","name":"N","email":"e@x"}"#,
                Some("D"),
            ),
            (
                r#"{"display_name":"  ","full_name":"F","name":"N"}"#,
                Some("F"),
            ),
            (
                r#"{"name":"N","first_name":"A","last_name":"B"}"#,
                Some("N"),
            ),
            (
                r#"{"first_name":"A","last_name":"B","email":"e@x"}"#,
                Some("A B"),
            ),
            (r#"{"last_name":"B","email":"e@x"}"#, Some("B")),
            (r#"{"email":"e@x"}"#, Some("e@x")),
            (r#"{"title":"CEO"}"#, None),
        ];
        for (i, (identity, expected)) in cases.iter().enumerate() {
            base_person(&format!("dn{i}"), identity, "{}", "NULL");
            assert_eq!(
                text(&format!(
                    "SELECT display_name FROM dl_resolved.people WHERE identity_key = 'dn{i}'"
                ))
                .as_deref(),
                *expected,
                "{identity}"
            );
        }
        let company_cases = [
            (
                r#"{"display_name":"D","name":"N","domain":"d.com"}"#,
                Some("D"),
            ),
            (r#"{"name":"N","domain":"d.com"}"#, Some("N")),
            (r#"{"domain":"d.com"}"#, Some("d.com")),
            (r#"{"industry":"x"}"#, None),
        ];
        for (i, (identity, expected)) in company_cases.iter().enumerate() {
            run(&format!(
                "SELECT dl_upsert_company_enrichment('c{i}', '{identity}', '{{}}')"
            ));
            assert_eq!(
                text(&format!(
                    "SELECT display_name FROM dl_resolved.companies WHERE identity_key = 'c{i}'"
                ))
                .as_deref(),
                *expected,
                "{identity}"
            );
        }
    }

    #[pg_test]
    fn companies_merge_like_people() {
        run(
            r#"SELECT dl_upsert_company_enrichment('acme', '{"name":"Acme","domain":"acme.com"}', '{"employees":10}', 'customer', 'crm')"#,
        );
        run(
            r#"SELECT dl_apply_company_override('acme', NULL, '{"name":"ACME Corp"}', '{"employees":null}')"#,
        );
        assert_eq!(
            company("acme"),
            json!({
                "identity_key": "acme", "display_name": "ACME Corp", "status": "customer",
                "identity_payload": {"name": "ACME Corp", "domain": "acme.com"},
                "raw_payload": {}, "is_overridden": true, "overridden_fields": ["name"]
            })
        );
        run("SELECT dl_tombstone_company('acme')");
        assert_eq!(count("SELECT count(*) FROM dl_resolved.companies"), 0);
        run("SELECT dl_clear_company_override('acme')");
        assert_eq!(company("acme")["display_name"], json!("Acme"));
    }

    #[pg_test]
    fn updated_at_is_the_newer_of_base_and_override() {
        run(
            r#"INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload, updated_at)
               VALUES ('t1', '{}', '{}', '2020-01-01')"#,
        );
        assert_eq!(
            text("SELECT updated_at::text FROM dl_resolved.people WHERE identity_key = 't1'")
                .as_deref(),
            Some("2020-01-01 00:00:00+00")
        );
        run(
            r#"INSERT INTO dl_override.person_overrides (identity_key, updated_at) VALUES ('t1', '2021-06-01')"#,
        );
        assert_eq!(
            text("SELECT updated_at::text FROM dl_resolved.people WHERE identity_key = 't1'")
                .as_deref(),
            Some("2021-06-01 00:00:00+00")
        );
        run("UPDATE dl_cache.person_enrichments SET updated_at = '2022-01-01' WHERE identity_key = 't1'");
        assert_eq!(
            text("SELECT updated_at::text FROM dl_resolved.people WHERE identity_key = 't1'")
                .as_deref(),
            Some("2022-01-01 00:00:00+00")
        );
    }

    /// Raw SQL on both layers, not just the helpers, keeps the view right.
    #[pg_test]
    fn raw_writes_on_both_layers() {
        run(
            r#"INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload)
               SELECT 'r' || i, jsonb_build_object('name', 'n' || i), '{}' FROM generate_series(1, 50) i"#,
        );
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key LIKE 'r%'"),
            50
        );

        run(
            r#"INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch)
               SELECT 'r' || i, jsonb_build_object('name', 'o' || i) FROM generate_series(1, 10) i"#,
        );
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people WHERE display_name LIKE 'o%' AND is_overridden"), 10);

        run("UPDATE dl_override.person_overrides SET tombstoned = true WHERE identity_key IN ('r1', 'r2')");
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key LIKE 'r%'"),
            48
        );

        run("UPDATE dl_cache.person_enrichments SET identity_payload = '{\"name\":\"renamed\"}' WHERE identity_key = 'r20'");
        assert_eq!(
            text("SELECT display_name FROM dl_resolved.people WHERE identity_key = 'r20'")
                .as_deref(),
            Some("renamed")
        );

        // Changing a key moves the row.
        run("UPDATE dl_cache.person_enrichments SET identity_key = 'r20b' WHERE identity_key = 'r20'");
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key = 'r20'"),
            0
        );
        assert_eq!(
            text("SELECT display_name FROM dl_resolved.people WHERE identity_key = 'r20b'")
                .as_deref(),
            Some("renamed")
        );

        // Deleting the override brings back the base; deleting the base of an overridden key
        // leaves an override-only row.
        run("DELETE FROM dl_override.person_overrides WHERE identity_key = 'r1'");
        assert_eq!(
            text("SELECT display_name FROM dl_resolved.people WHERE identity_key = 'r1'")
                .as_deref(),
            Some("n1")
        );
        run("DELETE FROM dl_cache.person_enrichments WHERE identity_key = 'r3'");
        assert_eq!(
            json("SELECT identity_payload FROM dl_resolved.people WHERE identity_key = 'r3'"),
            json!({"name": "o3"})
        );
        run("DELETE FROM dl_cache.person_enrichments WHERE identity_key = 'r30'");
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key = 'r30'"),
            0
        );

        // The seed's upsert, verbatim, with parameters.
        let seed_upsert = include_str!("../../tests/seed/override_upsert.sql");
        Spi::run_with_args(
            seed_upsert,
            &[
                "r2".into(),
                "vip".into(),
                r#"{"name":"Seeded"}"#.into(),
                Option::<&str>::None.into(),
            ],
        )
        .unwrap();
        assert_eq!(
            text("SELECT display_name || '/' || status FROM dl_resolved.people WHERE identity_key = 'r2'").as_deref(),
            Some("Seeded/vip")
        );

        // The store and a from-scratch merge agree on every row.
        assert_eq!(count(MISMATCHES), 0);
    }

    #[pg_test]
    fn copy_and_truncate() {
        let path = format!("/tmp/dl_tenancy_copy_{}.csv", std::process::id());
        let mut rows = String::new();
        for i in 0..200 {
            rows.push_str(&format!(
                "c{i}\t{{\"name\": \"copied {i}\"}}\t{{\"i\": {i}}}\n"
            ));
        }
        std::fs::write(&path, rows).unwrap();
        run(
            r#"INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('c7', '{"name":"patched"}')"#,
        );
        run(&format!(
            "COPY dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) FROM '{path}'"
        ));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key LIKE 'c%'"),
            200
        );
        assert_eq!(
            text("SELECT display_name FROM dl_resolved.people WHERE identity_key = 'c7'")
                .as_deref(),
            Some("patched")
        );
        assert_eq!(count(MISMATCHES), 0);

        run("TRUNCATE dl_override.person_overrides");
        assert_eq!(
            text("SELECT display_name FROM dl_resolved.people WHERE identity_key = 'c7'")
                .as_deref(),
            Some("copied 7")
        );
        run("TRUNCATE dl_cache.person_enrichments");
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 0);
    }

    #[pg_test]
    fn seed_read_query_is_index_backed() {
        run(
            r#"INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload, updated_at)
               SELECT 'k' || i, jsonb_build_object('name', 'n' || i), '{}', now() - i * interval '1 minute'
                 FROM generate_series(1, 2000) i"#,
        );
        run("ANALYZE dl_internal.resolved_people");
        let plan = explain(include_str!("../../tests/seed/read_query.sql"));
        assert!(plan.contains("resolved_people_updated_at_idx"), "{plan}");
        let plan = explain("SELECT * FROM dl_resolved.people WHERE identity_key = 'k5'");
        assert!(plan.contains("resolved_people_pkey"), "{plan}");
        assert_eq!(
            text("SELECT string_agg(identity_key, ',') FROM (SELECT identity_key FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 3) s").as_deref(),
            Some("k1,k2,k3")
        );
    }

    fn explain(query: &str) -> String {
        Spi::get_one::<pgrx::Json>(&format!("EXPLAIN (FORMAT JSON) {query}"))
            .unwrap()
            .expect("a plan")
            .0
            .to_string()
    }

    /// Rows where the store differs from merging the two layers from scratch.
    const MISMATCHES: &str = "
        WITH expected AS (
            SELECT COALESCE(b.identity_key, o.identity_key) AS identity_key,
                   dl_jsonb_merge_patch(COALESCE(b.identity_payload, '{}'), o.identity_payload_patch) AS identity_payload,
                   dl_jsonb_merge_patch(COALESCE(b.raw_payload, '{}'), o.raw_payload_patch) AS raw_payload,
                   COALESCE(o.status, b.status) AS status
              FROM dl_cache.person_enrichments b
              FULL JOIN dl_override.person_overrides o USING (identity_key)
             WHERE o.tombstoned IS NOT TRUE
        )
        SELECT count(*) FROM expected e FULL JOIN dl_resolved.people p USING (identity_key)
         WHERE e.identity_key IS NULL OR p.identity_key IS NULL
            OR e.identity_payload IS DISTINCT FROM p.identity_payload
            OR e.raw_payload IS DISTINCT FROM p.raw_payload
            OR e.status IS DISTINCT FROM p.status";
}
