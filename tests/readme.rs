//! The README's SQL examples run as printed, in order, on a fresh database, and the merge
//! example prints what the README says it prints.

use dl_tenancy_extension_tests::*;
use serde_json::Value;

/// The ```sql blocks of README.md.
fn sql_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn readme_sql_examples_run_as_printed() {
    let blocks = sql_blocks();
    assert!(blocks.len() >= 4, "found {} sql blocks", blocks.len());
    let tc = TenantCluster::start();
    let mut client = tc.create_db_with("readme", "SELECT 1");
    for block in &blocks {
        client
            .batch_execute(block)
            .unwrap_or_else(|e| panic!("README example failed:\n{block}\n{e:?}"));
    }

    // The merge example's documented result is the real one.
    let merge = blocks
        .iter()
        .find(|b| b.contains("SELECT dl_jsonb_merge_patch("))
        .expect("a merge example");
    let (query, documented) = merge
        .split_once(";\n-- ")
        .expect("the example documents its result");
    let got: Value = client.query_one(query, &[]).unwrap().get(0);
    let documented: Value = serde_json::from_str(documented.trim()).unwrap();
    assert_eq!(got, documented);
}
