//! dl_jsonb_merge_patch against RFC 7396: the Appendix A examples, the SQL NULL rules,
//! TOASTed inputs, and random documents compared with the plain-Rust reference.

#[pgrx::pg_schema]
mod tests {
    use crate::merge_patch::reference;
    use crate::tests::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{json, Value};

    fn merge(target: &Value, patch: &Value) -> Value {
        Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT dl_jsonb_merge_patch($1, $2)",
            &[
                pgrx::JsonB(target.clone()).into(),
                pgrx::JsonB(patch.clone()).into(),
            ],
        )
        .expect("merge runs")
        .expect("merge of two non-null documents is not null")
        .0
    }

    /// RFC 7396, Appendix A, every row.
    #[pg_test]
    fn rfc7396_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(merge(&target, &patch), expected, "{target} + {patch}");
            assert_eq!(reference::merge_patch(&target, &patch), expected);
        }
    }

    #[pg_test]
    fn sql_null_rules() {
        // SQL NULL patch: the target unchanged.
        assert_eq!(
            json(r#"SELECT dl_jsonb_merge_patch('{"a":1}', NULL)"#),
            json!({"a": 1})
        );
        // SQL NULL target: patched as if it were {}.
        assert_eq!(
            json(r#"SELECT dl_jsonb_merge_patch(NULL, '{"a":1,"b":null}')"#),
            json!({"a": 1})
        );
        // Both NULL: NULL.
        assert_eq!(
            count("SELECT count(*) FROM (SELECT dl_jsonb_merge_patch(NULL, NULL) AS m) s WHERE m IS NULL"),
            1
        );
        // Empty patch: the target as it is, including non-object targets.
        assert_eq!(
            json(r#"SELECT dl_jsonb_merge_patch('{"a":{"b":[1,2]}}', '{}')"#),
            json!({"a": {"b": [1, 2]}})
        );
        assert_eq!(
            json(r#"SELECT dl_jsonb_merge_patch('[1]', '{}')"#),
            json!({})
        );
        // Scalars inside objects keep their types, nested containers are copied whole.
        assert_eq!(
            json(
                r#"SELECT dl_jsonb_merge_patch('{"n":1.50,"t":true,"s":"x","o":{"k":[{"z":null}]}}', '{"t":false}')"#
            ),
            json!({"n": 1.50, "t": false, "s": "x", "o": {"k": [{"z": null}]}})
        );
    }

    /// Documents large enough to be TOASTed (compressed, then out of line) still merge.
    #[pg_test]
    fn toasted_documents() {
        run("CREATE TEMP TABLE big AS
             SELECT (SELECT jsonb_object_agg('k' || i, repeat(md5(i::text), 20)) FROM generate_series(1, 3000) i) AS target,
                    '{\"k1\": null, \"k2\": {\"x\": 1}, \"new\": [1]}'::jsonb AS patch");
        let merged = json("SELECT dl_jsonb_merge_patch(target, patch) FROM big");
        let object = merged.as_object().expect("an object");
        assert_eq!(object.len(), 3000); // k1 removed, new added
        assert!(!object.contains_key("k1"));
        assert_eq!(object["k2"], json!({"x": 1}));
        assert_eq!(object["new"], json!([1]));
        assert_eq!(object["k3000"].as_str().map(str::len), Some(640));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
        ]
    }

    fn document() -> impl Strategy<Value = Value> {
        // A small key alphabet, so target and patch share keys often; keys of different
        // lengths exercise jsonb's length-first key order.
        leaf().prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]{1,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `check` on `cases` random (target, patch) pairs; a failure is shrunk and reported.
    fn for_random_pairs(cases: u32, check: impl Fn((Value, Value)) -> Result<(), TestCaseError>) {
        TestRunner::new(Config {
            cases,
            ..Config::default()
        })
        .run(&(document(), document()), check)
        .unwrap();
    }

    #[pg_test]
    fn matches_reference_on_random_documents() {
        for_random_pairs(512, |(target, patch)| {
            prop_assert_eq!(
                merge(&target, &patch),
                reference::merge_patch(&target, &patch)
            );
            Ok(())
        });
    }

    /// RFC 7396 section 3: applying the same patch twice gives the same document.
    #[pg_test]
    fn idempotent_on_random_documents() {
        for_random_pairs(128, |(target, patch)| {
            let once = merge(&target, &patch);
            prop_assert_eq!(merge(&once, &patch), once);
            Ok(())
        });
    }
    /// Nesting as deep as PostgreSQL's own jsonb input accepts, through every entry point that
    /// merges (the function, override INSERT and UPDATE, the helper): each either merges right
    /// or refuses with 54001 (stack depth limit exceeded); none crashes the backend (0.3.0 died
    /// with SIGSEGV at depth 10,000 and took every workspace's sessions with it).
    #[pg_test]
    fn deep_nesting_merges_or_refuses_with_54001_at_every_entry_point() {
        run(r#"SELECT dl_upsert_person_enrichment('deep', '{"name":"D"}', '{}')"#);
        let mut refused = 0;
        let mut deepest_accepted = 0;
        for depth in [100, 1_000, 5_000, 10_000, 20_000, 40_000, 60_000, 100_000] {
            let doc = format!("(repeat('{{\"a\":', {depth}) || '1' || repeat('}}', {depth}))");
            // Depths PostgreSQL's parser itself refuses (54001) cannot reach the extension.
            let parsed = sqlstate_of(&format!("SELECT {doc}::jsonb"));
            if parsed != "00000" {
                assert_eq!(parsed, "54001", "jsonb input at depth {depth}");
                continue;
            }
            deepest_accepted = depth;
            // (statement, a query that is true when what it merged is right)
            let entry_points = [
                (
                    format!("SELECT dl_jsonb_merge_patch('{{}}', {doc}::jsonb)"),
                    format!("SELECT dl_jsonb_merge_patch('{{}}', {doc}::jsonb) = {doc}::jsonb"),
                ),
                (
                    format!("SELECT dl_jsonb_merge_patch({doc}::jsonb, {doc}::jsonb)"),
                    format!("SELECT dl_jsonb_merge_patch({doc}::jsonb, {doc}::jsonb) = {doc}::jsonb"),
                ),
                (
                    format!("INSERT INTO dl_override.person_overrides (identity_key, identity_payload_patch) VALUES ('deep', {doc}::jsonb)"),
                    format!("SELECT identity_payload = jsonb_build_object('name', 'D') || {doc}::jsonb FROM dl_resolved.people WHERE identity_key = 'deep'"),
                ),
                (
                    format!("UPDATE dl_override.person_overrides SET raw_payload_patch = {doc}::jsonb WHERE identity_key = 'other'"),
                    format!("SELECT raw_payload = {doc}::jsonb FROM dl_resolved.people WHERE identity_key = 'other'"),
                ),
                (
                    format!("SELECT dl_apply_person_override('deep', NULL, NULL, {doc}::jsonb)"),
                    format!("SELECT raw_payload = {doc}::jsonb FROM dl_resolved.people WHERE identity_key = 'deep'"),
                ),
            ];
            run("INSERT INTO dl_override.person_overrides (identity_key) VALUES ('other') ON CONFLICT DO NOTHING");
            for (statement, merged_right) in &entry_points {
                match sqlstate_of(statement).as_str() {
                    "00000" => assert_eq!(
                        Spi::get_one::<bool>(merged_right).unwrap(),
                        Some(true),
                        "depth {depth}: {statement:.100}"
                    ),
                    "54001" => refused += 1,
                    other => panic!("depth {depth}: {other} from {statement:.100}"),
                }
            }
            run("DELETE FROM dl_override.person_overrides WHERE identity_key = 'deep'");
        }
        assert!(
            deepest_accepted >= 10_000,
            "jsonb accepted only {deepest_accepted}"
        );
        assert!(refused > 0, "no depth reached the stack limit");
        // The backend is alive and the data is intact.
        assert_eq!(
            text("SELECT display_name FROM dl_resolved.people WHERE identity_key = 'deep'")
                .as_deref(),
            Some("D")
        );
    }
}
