pub mod fleet;
pub mod limits;
