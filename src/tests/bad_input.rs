//! Bad input gets an ERROR with a SQLSTATE that says what is wrong, through the helpers
//! (22004 null, 22023 bad value, 54000 too large) and through raw SQL (23502, 23514).

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;

    fn expect_all(cases: &[(&str, &str)]) {
        let failures = sqlstate_mismatches(cases);
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    const HUGE: &str = "jsonb_build_object('x', repeat('a', 1100000))";

    #[pg_test]
    fn helper_functions() {
        let huge_patch = format!("SELECT dl_apply_person_override('k', NULL, {HUGE}, NULL)");
        let huge_payload = format!("SELECT dl_upsert_person_enrichment('k', {HUGE}, '{{}}')");
        expect_all(&[
            ("SELECT dl_apply_person_override(NULL)", "22004"),
            ("SELECT dl_apply_person_override('')", "22023"),
            ("SELECT dl_apply_person_override('   ')", "22023"),
            ("SELECT dl_apply_person_override(repeat('k', 513))", "22023"),
            ("SELECT dl_apply_person_override('k', '')", "22023"),
            (
                "SELECT dl_apply_person_override('k', repeat('s', 65))",
                "22023",
            ),
            (
                "SELECT dl_apply_person_override('k', NULL, '[1]', NULL)",
                "22023",
            ),
            (
                "SELECT dl_apply_person_override('k', NULL, '\"scalar\"', NULL)",
                "22023",
            ),
            (
                "SELECT dl_apply_person_override('k', NULL, 'null', NULL)",
                "22023",
            ),
            (
                "SELECT dl_apply_person_override('k', NULL, NULL, '42')",
                "22023",
            ),
            (
                "SELECT dl_apply_company_override('k', NULL, 'true', NULL)",
                "22023",
            ),
            (&huge_patch, "54000"),
            ("SELECT dl_tombstone_person(NULL)", "22004"),
            ("SELECT dl_tombstone_company('')", "22023"),
            ("SELECT dl_clear_person_override(NULL)", "22004"),
            ("SELECT dl_clear_company_override(' ')", "22023"),
            (
                "SELECT dl_upsert_person_enrichment(NULL, '{}', '{}')",
                "22004",
            ),
            (
                "SELECT dl_upsert_person_enrichment('k', NULL, '{}')",
                "22004",
            ),
            (
                "SELECT dl_upsert_person_enrichment('k', '{}', '[]')",
                "22023",
            ),
            (
                "SELECT dl_upsert_company_enrichment('k', 'null', '{}')",
                "22023",
            ),
            (&huge_payload, "54000"),
        ]);
        // Nothing was stored by any of them.
        assert_eq!(
            count("SELECT count(*) FROM dl_override.person_overrides"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM dl_cache.person_enrichments"), 0);
    }

    /// The 1 MiB limit is on the uncompressed size: a value read from a table comes in
    /// compressed (here 19 MB of text stored as about 220 kB), and is still too large.
    #[pg_test]
    fn compressed_payloads_are_measured_uncompressed() {
        run("CREATE TABLE tests.big AS SELECT jsonb_build_object('x', repeat('a', 19000000)) AS p");
        assert!(count("SELECT pg_column_size(p)::bigint FROM tests.big") < 1024 * 1024);
        expect_all(&[
            ("INSERT INTO dl_override.person_overrides (identity_key, raw_payload_patch) SELECT 'k', p FROM tests.big", "23514"),
            ("INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) SELECT 'k', p FROM tests.big", "23514"),
            ("INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) SELECT 'k', '{}', p FROM tests.big", "23514"),
            ("SELECT dl_apply_person_override('k', NULL, p, NULL) FROM tests.big", "54000"),
            ("SELECT dl_apply_company_override('k', NULL, NULL, p) FROM tests.big", "54000"),
            ("SELECT dl_upsert_person_enrichment('k', p, '{}') FROM tests.big", "54000"),
        ]);
        assert_eq!(
            count("SELECT count(*) FROM dl_override.person_overrides"),
            0
        );
    }

    #[pg_test]
    fn raw_sql() {
        let huge = format!("INSERT INTO dl_override.person_overrides (identity_key, raw_payload_patch) VALUES ('k', {HUGE})");
        expect_all(&[
            ("INSERT INTO dl_override.person_overrides (identity_key) VALUES (NULL)", "23502"),
            ("INSERT INTO dl_override.person_overrides (identity_key) VALUES ('')", "23514"),
            ("INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('k', '[1,2]')", "23514"),
            ("INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('k', 'null')", "23514"),
            ("INSERT INTO dl_override.person_overrides (identity_key, raw_payload_patch) VALUES ('k', '\"x\"')", "23514"),
            ("INSERT INTO dl_override.company_overrides (identity_key, status) VALUES ('k', ' ')", "23514"),
            ("INSERT INTO dl_override.person_overrides (identity_key, tombstoned) VALUES ('k', NULL)", "23502"),
            ("INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) VALUES ('k', '[]', '{}')", "23514"),
            ("INSERT INTO dl_cache.company_enrichments (identity_key, identity_payload, raw_payload) VALUES ('k', '{}', NULL)", "23502"),
            ("INSERT INTO dl_meta.tenant_settings (key, value) VALUES ('', '1')", "23514"),
            ("INSERT INTO dl_meta.schema_migrations (version, action) VALUES ('9.9.9', 'bogus')", "23514"),
            ("INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload) VALUES ('k', '{}', '{}'), ('k', '{}', '{}')", "23505"),
            (&huge, "23514"),
        ]);
        // An update that would store a bad patch is refused too, and the row keeps its value.
        run(
            r#"INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('ok', '{"a":1}')"#,
        );
        assert_eq!(
            sqlstate_of("UPDATE dl_override.person_overrides SET identity_payload_patch = '[]' WHERE identity_key = 'ok'"),
            "23514"
        );
        assert_eq!(
            json("SELECT identity_payload FROM dl_resolved.people WHERE identity_key = 'ok'"),
            serde_json::json!({"a": 1})
        );
    }

    /// Errors read like errors of this product, not like a crash: a message naming the input,
    /// a detail saying what was given, a hint saying what to pass instead.
    #[pg_test]
    fn messages_name_the_problem() {
        run(
            "CREATE TEMP TABLE errors (message text, detail text, hint text);
             DO $$
             DECLARE m text; d text; h text;
             BEGIN
                 PERFORM dl_apply_person_override('k', NULL, '[1]', NULL);
             EXCEPTION WHEN OTHERS THEN
                 GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
                 INSERT INTO errors VALUES (m, d, h);
             END $$;",
        );
        assert_eq!(
            text("SELECT message FROM errors").as_deref(),
            Some("identity_payload_patch must be a JSON object or SQL NULL")
        );
        assert_eq!(
            text("SELECT detail FROM errors").as_deref(),
            Some("got a JSON array")
        );
        let hint = text("SELECT hint FROM errors").expect("a hint");
        assert!(hint.contains("SQL NULL for no patch"), "{hint}");
    }

    /// The platform's enrichment check says the same things as before 0.5.0 moved it into
    /// the library (the PL/pgSQL version's messages and details, word for word).
    #[pg_test]
    fn enrichment_messages_are_unchanged() {
        run("CREATE TEMP TABLE errors (n int, state text, message text, detail text, hint text)");
        for (n, call) in [
            (1, "dl_upsert_person_enrichment('k', NULL, '{}')"),
            (2, "dl_upsert_person_enrichment('k', '{}', '[1]')"),
            (3, "dl_upsert_company_enrichment('k', '\"x\"', '{}')"),
            (4, "dl_upsert_company_enrichment('  ', '{}', '{}')"),
        ] {
            run(&format!(
                "DO $$
                 DECLARE s text; m text; d text; h text;
                 BEGIN
                     PERFORM {call};
                 EXCEPTION WHEN OTHERS THEN
                     GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
                     INSERT INTO errors VALUES ({n}, s, m, d, h);
                 END $$;"
            ));
        }
        assert_eq!(
            json("SELECT jsonb_agg(jsonb_build_array(state, message, detail, hint) ORDER BY n) FROM errors"),
            serde_json::json!([
                ["22004", "identity_payload must not be null", "", ""],
                ["22023", "raw_payload must be a JSON object", "got a JSON array", ""],
                ["22023", "identity_payload must be a JSON object", "got a JSON string", ""],
                ["22023", "identity_key must be a non-blank string of at most 512 bytes", "got 2 bytes: '  '", ""],
            ])
        );
    }
}
