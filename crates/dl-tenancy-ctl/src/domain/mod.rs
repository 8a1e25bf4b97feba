//! Layer 1, the domain: ids and names, states and their transitions, limits, errors, reports.
//! Pure: no connection, no file, no clock. Imports nothing of this crate outside `domain`.

pub mod error;
pub mod limits;
pub mod names;
pub mod progress;
pub mod state;
pub mod types;
