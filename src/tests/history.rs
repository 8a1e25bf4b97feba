//! 0.2.0: every change of an override leaves a history row; the resolved views say which
//! fields an override changes.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;
    use serde_json::json;

    fn history(key: &str) -> serde_json::Value {
        json(&format!(
            "SELECT jsonb_agg(jsonb_build_object(
                        'op', operation, 'old_status', old_status, 'new_status', new_status,
                        'old_patch', old_identity_payload_patch, 'new_patch', new_identity_payload_patch,
                        'old_tombstoned', old_tombstoned, 'new_tombstoned', new_tombstoned,
                        'by', changed_by) ORDER BY changed_at)
               FROM dl_override.person_override_history WHERE identity_key = '{key}'"
        ))
    }

    #[pg_test]
    fn helpers_and_raw_sql_leave_history() {
        let me = text("SELECT session_user::text").unwrap();
        run(r#"SELECT dl_apply_person_override('h1', 'vip', '{"name":"A"}', NULL)"#);
        run(r#"SELECT dl_apply_person_override('h1', NULL, '{"name":"B"}', NULL)"#);
        run("SELECT dl_tombstone_person('h1')");
        run("UPDATE dl_override.person_overrides SET status = 'raw' WHERE identity_key = 'h1'");
        run("SELECT dl_clear_person_override('h1')");
        assert_eq!(
            history("h1"),
            json!([
                {"op": "insert", "old_status": null, "new_status": "vip", "old_patch": null, "new_patch": {"name": "A"},
                 "old_tombstoned": null, "new_tombstoned": false, "by": me},
                {"op": "update", "old_status": "vip", "new_status": null, "old_patch": {"name": "A"}, "new_patch": {"name": "B"},
                 "old_tombstoned": false, "new_tombstoned": false, "by": me},
                {"op": "update", "old_status": null, "new_status": null, "old_patch": {"name": "B"}, "new_patch": {"name": "B"},
                 "old_tombstoned": false, "new_tombstoned": true, "by": me},
                {"op": "update", "old_status": null, "new_status": "raw", "old_patch": {"name": "B"}, "new_patch": {"name": "B"},
                 "old_tombstoned": true, "new_tombstoned": true, "by": me},
                {"op": "delete", "old_status": "raw", "new_status": null, "old_patch": {"name": "B"}, "new_patch": null,
                 "old_tombstoned": true, "new_tombstoned": null, "by": me},
            ])
        );
    }

    #[pg_test]
    fn bulk_writes_and_truncate_leave_history() {
        run("INSERT INTO dl_override.person_overrides (identity_key) SELECT 'b' || i FROM generate_series(1, 100) i");
        run("INSERT INTO dl_override.company_overrides (identity_key) VALUES ('c1')");
        assert_eq!(count("SELECT count(*) FROM dl_override.person_override_history WHERE operation = 'insert'"), 100);
        run("TRUNCATE dl_override.person_overrides");
        assert_eq!(count("SELECT count(*) FROM dl_override.person_override_history WHERE operation = 'delete'"), 100);
        assert_eq!(
            count("SELECT count(*) FROM dl_override.company_override_history"),
            1
        );
    }

    #[pg_test]
    fn history_is_read_only_for_tenants() {
        run(r#"SELECT dl_apply_person_override('h2', NULL, '{"name":"A"}', NULL)"#);
        run("SET LOCAL ROLE dl_tenant_override");
        assert_eq!(
            sqlstate_of("SELECT * FROM dl_override.person_override_history"),
            "00000"
        );
        assert_eq!(
            sqlstate_of("INSERT INTO dl_override.person_override_history (identity_key, operation) VALUES ('x', 'insert')"),
            "42501"
        );
        assert_eq!(
            sqlstate_of("UPDATE dl_override.person_override_history SET changed_by = 'someone'"),
            "42501"
        );
        assert_eq!(
            sqlstate_of("DELETE FROM dl_override.company_override_history"),
            "42501"
        );
        // The override role writes history through its own changes, without any grant on it.
        assert_eq!(sqlstate_of("SELECT dl_tombstone_person('h2')"), "00000");
        run("RESET ROLE");
        assert_eq!(count("SELECT count(*) FROM dl_override.person_override_history WHERE identity_key = 'h2'"), 2);
        run("SET LOCAL ROLE dl_tenant_read");
        assert_eq!(
            sqlstate_of("SELECT * FROM dl_override.person_override_history"),
            "42501"
        );
        run("RESET ROLE");
    }

    #[pg_test]
    fn overridden_fields_follow_the_override() {
        run(
            r#"SELECT dl_upsert_person_enrichment('f1', '{"name":"A","title":"Eng","phone":"1"}', '{}', 'active')"#,
        );
        let fields = || {
            json("SELECT to_jsonb(overridden_fields) FROM dl_resolved.people WHERE identity_key = 'f1'")
        };
        assert_eq!(fields(), json!([]));
        run(
            r#"SELECT dl_apply_person_override('f1', NULL, '{"title":"CTO","phone":null,"Zeta":1}', '{"raw":1}')"#,
        );
        // Removed fields count as changed; raw patch keys do not; byte order.
        assert_eq!(fields(), json!(["Zeta", "phone", "title"]));
        run("SELECT dl_apply_person_override('f1', 'churned', NULL, NULL)");
        assert_eq!(fields(), json!(["status"]));
        run("SELECT dl_clear_person_override('f1')");
        assert_eq!(fields(), json!([]));
        // The helper returns the new column too.
        assert_eq!(
            json(
                r#"SELECT dl_apply_person_override('f1', NULL, '{"name":"B"}', NULL) -> 'overridden_fields'"#
            ),
            json!(["name"])
        );
    }
}
