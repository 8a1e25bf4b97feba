#[pgrx::pg_schema]
mod tests {
    #[allow(unused_imports)]
    use crate::tests::*;
}
