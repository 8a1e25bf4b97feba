pub mod fleet;
pub mod limits;
pub mod operator;
