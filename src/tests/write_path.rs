//! The write path in the library (src/resolved_store.rs): its locking protocol (0.1.0), in lock
//! spaces SQL cannot name (0.4.0), right for bulk statements, subtransactions and repair calls.

#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;

    /// The extension's advisory locks this backend holds: "kind/hash" for a key lock, "kind"
    /// for a kind lock, with the mode. Its lock spaces (objsubid) are 0x6401 (kind) and 0x6402
    /// (key); SQL's own are 1 and 2, listed as "sql:...".
    fn advisory_locks() -> String {
        text(
            "SELECT string_agg(CASE objsubid WHEN 25602 THEN classid || '/' || objid::int
                                             WHEN 25601 THEN objid::text
                                             ELSE 'sql:' || objsubid || ':' || classid || '/' || objid::int END
                               || ' ' || mode, ', ' ORDER BY objsubid, classid, objid)
               FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        )
        .unwrap_or_default()
    }

    #[pg_test]
    fn a_single_write_locks_its_key_where_sql_cannot_reach() {
        run("SELECT dl_apply_person_override('k1', 'customer')");
        let hash = text("SELECT hashtext('k1')::text").unwrap();
        assert_eq!(
            advisory_locks(),
            format!("1 ShareLock, 1/{hash} ExclusiveLock")
        );
        // The lock SQL would name for the same key (the 0.3.0 protocol) is another lock: holding
        // it, as a tenant could, does not touch the write path's.
        run("SELECT pg_advisory_xact_lock(1, hashtext('k1'))");
        assert_eq!(
            advisory_locks(),
            format!("sql:2:1/{hash} ExclusiveLock, 1 ShareLock, 1/{hash} ExclusiveLock")
        );
    }

    #[pg_test]
    fn past_256_keys_the_whole_kind_is_locked_and_a_bulk_statement_is_refreshed_in_slices() {
        run(
            "INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload)
             SELECT 'bulk-' || i, jsonb_build_object('name', 'Bulk ' || i), '{}' FROM generate_series(1, 45000) i",
        );
        assert_eq!(advisory_locks(), "1 ExclusiveLock");
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 45000);
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE display_name = 'Bulk ' || substr(identity_key, 6)"),
            45000
        );
        // Later small writes in the same transaction need no more locks.
        run("SELECT dl_apply_person_override('bulk-7', 'customer')");
        assert_eq!(advisory_locks(), "1 ExclusiveLock");
        run("DELETE FROM dl_cache.person_enrichments WHERE identity_key LIKE 'bulk-1%'");
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people"),
            45000 - 11111 // bulk-1, bulk-10..19, ..., bulk-10000..19999
        );
    }

    #[pg_test]
    fn a_bulk_refresh_leaves_out_tombstoned_keys_in_every_slice() {
        // One tombstone in each of the three 20,000-key slices of a 45,000-row statement.
        for key in ["bulk-00005", "bulk-30000", "bulk-44999"] {
            run(&format!("SELECT dl_tombstone_person('{key}')"));
        }
        run(
            "INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload)
             SELECT 'bulk-' || lpad(i::text, 5, '0'), '{}', '{}' FROM generate_series(1, 45000) i",
        );
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 45000 - 3);
        assert_eq!(
            count("SELECT count(*) FROM dl_resolved.people WHERE identity_key IN ('bulk-00005', 'bulk-30000', 'bulk-44999')"),
            0
        );
        // Lifted in one statement, the three come back; a bulk delete of the base removes them
        // all again.
        run("DELETE FROM dl_override.person_overrides WHERE tombstoned");
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 45000);
        run("DELETE FROM dl_cache.person_enrichments");
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 0);
    }

    #[pg_test]
    fn a_kind_lock_lost_with_a_rolled_back_subtransaction_is_taken_again() {
        // The bulk insert (and its kind-wide lock) happens in a subtransaction that fails.
        run("DO $$
             BEGIN
                 INSERT INTO dl_override.person_overrides (identity_key, status)
                 SELECT 'sub-' || i, 'x' FROM generate_series(1, 300) i;
                 RAISE EXCEPTION 'roll back';
             EXCEPTION WHEN raise_exception THEN NULL;
             END $$");
        assert_eq!(advisory_locks(), "");
        run("SELECT dl_apply_person_override('after', 'customer')");
        let hash = text("SELECT hashtext('after')::text").unwrap();
        assert_eq!(
            advisory_locks(),
            format!("1 ShareLock, 1/{hash} ExclusiveLock")
        );
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 1);
    }

    #[pg_test]
    fn refresh_accepts_duplicates_nulls_and_null_for_every_key() {
        run(
            "INSERT INTO dl_cache.person_enrichments (identity_key, identity_payload, raw_payload)
             VALUES ('r1', '{\"name\": \"One\"}', '{}'), ('r2', '{\"name\": \"Two\"}', '{}')",
        );
        // Rows changed behind the triggers' back are put right by a refresh.
        run("ALTER TABLE dl_cache.person_enrichments DISABLE TRIGGER USER");
        run("UPDATE dl_cache.person_enrichments SET identity_payload = '{\"name\": \"Uno\"}' WHERE identity_key = 'r1'");
        run("DELETE FROM dl_cache.person_enrichments WHERE identity_key = 'r2'");
        run("ALTER TABLE dl_cache.person_enrichments ENABLE TRIGGER USER");
        run("SELECT dl_internal.refresh_people(ARRAY['r1', 'r1', NULL, 'nope'])");
        assert_eq!(
            text("SELECT string_agg(identity_key || '=' || display_name, ',' ORDER BY identity_key) FROM dl_resolved.people")
                .as_deref(),
            Some("r1=Uno,r2=Two")
        );
        run("SELECT dl_internal.refresh_people(NULL)");
        assert_eq!(
            text("SELECT string_agg(identity_key || '=' || display_name, ',' ORDER BY identity_key) FROM dl_resolved.people")
                .as_deref(),
            Some("r1=Uno")
        );
        run("SELECT dl_internal.refresh_people('{}')");
        assert_eq!(count("SELECT count(*) FROM dl_resolved.people"), 1);
    }

    #[pg_test]
    fn the_trigger_function_refuses_to_be_misused() {
        run("CREATE TEMP TABLE t (identity_key text)");
        run("CREATE TRIGGER row_level AFTER INSERT ON t FOR EACH ROW
             EXECUTE FUNCTION dl_internal.maintain_layers('person', 'cache')");
        assert_eq!(sqlstate_of("INSERT INTO t VALUES ('x')"), "39P01");
        run("DROP TRIGGER row_level ON t");
        run(
            "CREATE TRIGGER no_table AFTER INSERT ON t FOR EACH STATEMENT
             EXECUTE FUNCTION dl_internal.maintain_layers('person', 'cache')",
        );
        assert_eq!(sqlstate_of("INSERT INTO t VALUES ('x')"), "39P01");
        assert_eq!(sqlstate_of("SELECT dl_internal.maintain_layers()"), "39P01");
    }
}
