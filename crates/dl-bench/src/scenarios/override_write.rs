//! Scenario 4: override writes (the seed's upsert and dl_apply_person_override) vs a plain
//! upsert, with the floor of the design and diagnostics.

use crate::bench::{log, Bench, R};
use crate::measure::{clip, explain, one_string, pgbench_compare};
use crate::report::{Scenario, Target};

const ID_PATCH: &str = r#"{"title": "VP Data", "location": {"city": "Berlin", "timezone": null}}"#;
const RAW_PATCH: &str =
    r#"{"crm": {"stage": "won", "owner": "bench@customer.example"}, "tags": ["customer-edited"]}"#;

fn seed_upsert(table: &str, key_expr: &str) -> String {
    format!(
        "INSERT INTO {table} (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
VALUES ({key_expr}, 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb, false, now())
ON CONFLICT (identity_key) DO UPDATE
SET status = EXCLUDED.status, identity_payload_patch = EXCLUDED.identity_payload_patch, raw_payload_patch = EXCLUDED.raw_payload_patch, tombstoned = false, updated_at = now();"
    )
}

pub fn run(b: &Bench) -> R<Scenario> {
    log("scenario 4: override writes");
    let s = &b.cfg.sizes;
    let mut sc = Scenario::new(
        4,
        "Override write",
        "pgbench -M prepared as the tenant override role, keys uniform over the whole key space (so both new \
         overrides and updates of existing ones): `SELECT dl_apply_person_override(...)`, and the seed's raw \
         `INSERT ... ON CONFLICT` into dl_override.person_overrides, vs the same upsert into a plain table with one \
         index (its PK), prefilled with the same overrides.",
    );
    let mut a = b.admin()?;
    a.batch_execute(
        "CREATE TABLE bench.plain_overrides (
             identity_key text PRIMARY KEY, status text, identity_payload_patch jsonb, raw_payload_patch jsonb,
             tombstoned boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO bench.plain_overrides SELECT identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at
           FROM bench.overrides_src;
         GRANT SELECT, INSERT, UPDATE ON bench.plain_overrides TO dl_tenant_override;
         CREATE TABLE bench.plain_history
             (LIKE dl_override.person_override_history INCLUDING DEFAULTS INCLUDING INDEXES);
         GRANT INSERT ON bench.plain_history TO dl_tenant_override;
         GRANT SELECT, INSERT, UPDATE ON bench.plain_people TO dl_tenant_override;",
    )?;
    a.batch_execute("VACUUM ANALYZE bench.plain_overrides")?;
    let ks = s.key_space();
    let head = format!("\\set id random(1, {ks})\n");
    let p_plain = b.write_script(
        "upsert_plain.sql",
        &format!(
            "{head}{}\n",
            seed_upsert("bench.plain_overrides", "'person-' || :id")
        ),
    )?;
    let p_raw = b.write_script(
        "upsert_raw.sql",
        &format!(
            "{head}{}\n",
            seed_upsert("dl_override.person_overrides", "'person-' || :id")
        ),
    )?;
    let p_fn = b.write_script(
        "upsert_fn.sql",
        &format!(
            "{head}SELECT dl_apply_person_override('person-' || :id, 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb);\n"
        ),
    )?;
    // The floor of this design: the three rows every correction writes (the override, its
    // history row, the resolved row), as one plain statement into plain tables with the same
    // indexes, without triggers, CHECK constraints or merge patch.
    let p_floor = b.write_script(
        "upsert_floor.sql",
        &format!(
            "{head}WITH o AS (
    INSERT INTO bench.plain_overrides AS t (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
    VALUES ('person-' || :id, 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb, false, now())
    ON CONFLICT (identity_key) DO UPDATE
    SET status = EXCLUDED.status, identity_payload_patch = EXCLUDED.identity_payload_patch, raw_payload_patch = EXCLUDED.raw_payload_patch, tombstoned = false, updated_at = now()
    RETURNING *
), h AS (
    INSERT INTO bench.plain_history (identity_key, operation, new_status, new_identity_payload_patch, new_raw_payload_patch, new_tombstoned)
    SELECT identity_key, 'update', status, identity_payload_patch, raw_payload_patch, tombstoned FROM o
)
INSERT INTO bench.plain_people AS r (identity_key, display_name, status, identity_payload, raw_payload, is_overridden, updated_at, overridden_fields)
SELECT o.identity_key, p.display_name, o.status, COALESCE(p.identity_payload, '{{}}') || o.identity_payload_patch,
       COALESCE(p.raw_payload, '{{}}') || o.raw_payload_patch, true, now(), '{{location,status,title}}'
  FROM o LEFT JOIN bench.plain_people AS p ON p.identity_key = o.identity_key
ON CONFLICT (identity_key) DO UPDATE
SET display_name = EXCLUDED.display_name, status = EXCLUDED.status, identity_payload = EXCLUDED.identity_payload,
    raw_payload = EXCLUDED.raw_payload, is_overridden = true, updated_at = EXCLUDED.updated_at, overridden_fields = EXCLUDED.overridden_fields;
"
        ),
    )?;
    for clients in [1u32, 2] {
        let t = pgbench_compare(
            b,
            "bench_override",
            &[&p_plain, &p_fn, &p_raw, &p_floor],
            clients,
        )?;
        let base = sc.baseline(
            &format!("plain upsert, one index: {clients} client(s)"),
            "tps",
            t[0].clone(),
        );
        // The other scripts' rows, in the order of the scripts.
        let compared = [
            ("dl_apply_person_override", Some(Target::at_least(0.5))),
            (
                "seed's INSERT ... ON CONFLICT into dl_override",
                Some(Target::at_least(0.5)),
            ),
            (
                "floor: the same three row writes as one plain statement, no triggers/checks/merge",
                None,
            ),
        ];
        for ((what, target), samples) in compared.into_iter().zip(&t[1..]) {
            sc.compared(
                &format!("{what}: {clients} client(s)"),
                "tps",
                samples.clone(),
                base,
                target,
            );
        }
    }
    if b.cfg.diagnose {
        // Where the time goes: the same raw upsert, 1 client, with every user trigger disabled
        // (CHECK constraints only). On keys of their own ('diag-...', deleted afterwards with
        // the triggers still off) so the resolved store stays exact.
        let p_diag = b.write_script(
            "upsert_raw_diag.sql",
            &format!(
                "{head}{}\n",
                seed_upsert("dl_override.person_overrides", "'diag-' || :id")
            ),
        )?;
        let mut no_trig = Vec::new();
        let r: R<()> = (|| {
            a.batch_execute("ALTER TABLE dl_override.person_overrides DISABLE TRIGGER USER")?;
            for _ in 0..b.cfg.reps {
                no_trig.push(b.pgbench("bench_override", &p_diag, 1)?);
            }
            Ok(())
        })();
        a.batch_execute(
            "DELETE FROM dl_override.person_overrides WHERE identity_key LIKE 'diag-%'",
        )?;
        a.batch_execute("ALTER TABLE dl_override.person_overrides ENABLE TRIGGER USER")?;
        r?;
        sc.compared(
            "diagnostic: seed's upsert, 1 client, all user triggers disabled (constraints only)",
            "tps",
            no_trig,
            0, // the 1-client plain upsert row
            None,
        );
        let trig: Vec<String> = a
            .query(
                "SELECT tgname || ': ' || pg_get_triggerdef(oid) FROM pg_trigger
                  WHERE tgrelid = 'dl_override.person_overrides'::regclass AND NOT tgisinternal ORDER BY tgname",
                &[],
            )?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        sc.evidence("Triggers on dl_override.person_overrides", trig.join("\n"));
    }
    // Evidence: the statement-level trigger's share of one upsert (update path and insert path).
    let existing = one_string(
        &mut a,
        "SELECT identity_key FROM dl_override.person_overrides WHERE NOT tombstoned ORDER BY identity_key LIMIT 1",
    )?;
    let fresh = format!("person-{}", s.key_space() + 12345);
    for (label, key) in [("existing override", &existing), ("new override", &fresh)] {
        for table in ["bench.plain_overrides", "dl_override.person_overrides"] {
            // Warm the session's plan caches first (pgbench sessions run with warm caches).
            a.batch_execute("BEGIN")?;
            a.batch_execute(&seed_upsert(table, "'person-warmup-1'"))?;
            a.batch_execute(&seed_upsert(table, "'person-warmup-1'"))?;
            let e = explain(&mut a, &seed_upsert(table, &format!("'{key}'")));
            a.batch_execute("ROLLBACK")?;
            sc.evidence(&format!("EXPLAIN upsert into {table}, {label}"), e?);
        }
    }
    if b.cfg.diagnose {
        let from = b.log_len();
        a.batch_execute(&format!(
            "LOAD 'auto_explain';
             SET auto_explain.log_min_duration = 0;
             SET auto_explain.log_analyze = on;
             SET auto_explain.log_buffers = on;
             SET auto_explain.log_nested_statements = on;
             SET auto_explain.log_level = 'warning';
             BEGIN;
             SELECT dl_apply_person_override('{existing}', 'customer', '{ID_PATCH}'::jsonb, '{RAW_PATCH}'::jsonb);
             ROLLBACK;
             SET auto_explain.log_min_duration = -1;"
        ))?;
        sc.evidence(
            "auto_explain of one dl_apply_person_override call (every nested statement)",
            clip(&b.log_since(from), 30000),
        );
    }
    Ok(sc)
}
