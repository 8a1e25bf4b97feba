#[pgrx::pg_schema]
mod tests {
    use crate::tests::*;

    #[pg_test]
    fn smoke_merge() {
        assert_eq!(
            json(r#"SELECT dl_jsonb_merge_patch('{"a":"b"}', '{"a":"c"}')"#),
            serde_json::json!({"a": "c"})
        );
    }
}
