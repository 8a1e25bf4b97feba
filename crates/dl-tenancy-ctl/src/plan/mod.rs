//! Layer 2, the decisions: from what should be (a workspace's names and limits, a recorded
//! state) and what a server was seen to have, the statements that make it so. Pure functions
//! over domain types, tested without a server; `ops` observes, asks here, then runs the
//! statements. SQL text is quoted here only ([`quote`]).

pub mod access;
pub mod moves;
pub mod quote;
pub mod workspace;
