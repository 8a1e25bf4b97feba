//! The decisions of a move: what to do with an attempt that stopped half-way, whether there
//! is anything to move, and how to copy. The move's steps themselves are in `ops::moves`.

use crate::domain::error::{invalid, Error, Result};
use crate::domain::state::MoveState;
use std::str::FromStr;

/// How a move copies the workspace's data (`ops::moves`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoveMethod {
    /// `logical` when the source can stream, `copy` otherwise.
    #[default]
    Auto,
    Logical,
    Copy,
}

impl FromStr for MoveMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<MoveMethod> {
        match s {
            "auto" => Ok(MoveMethod::Auto),
            "logical" => Ok(MoveMethod::Logical),
            "copy" => Ok(MoveMethod::Copy),
            _ => Err(invalid(format!(
                "unknown move method {s:?}: use auto, logical or copy"
            ))),
        }
    }
}

/// What becomes of an earlier attempt, by the state it was recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing in flight.
    None,
    /// Stopped before the switch: the target copy and the stream go, the source opens again.
    Undo,
    /// Stopped after the switch: the pooler is repointed and the source copy dropped.
    Finish,
}

pub fn recovery(recorded: Option<MoveState>) -> Recovery {
    match recorded {
        Some(MoveState::Copying) => Recovery::Undo,
        Some(MoveState::Switched) => Recovery::Finish,
        Some(MoveState::Done | MoveState::Failed) | None => Recovery::None,
    }
}

/// How to copy, from the method asked for and why the source cannot stream (if it cannot):
/// `(stream?, note)`. `logical` on a source that cannot stream is refused before anything is
/// made; `auto` copies and says why.
pub fn copy_method(
    asked: MoveMethod,
    cannot_stream: Option<String>,
) -> Result<(bool, Option<String>)> {
    match (asked, cannot_stream) {
        (MoveMethod::Copy, _) => Ok((false, None)),
        (MoveMethod::Logical, Some(why)) => Err(invalid(format!(
            "cannot move by logical replication: {why}"
        ))),
        (_, Some(why)) => Ok((false, Some(why))),
        (_, None) => Ok((true, None)),
    }
}

/// The status a move answers with when the workspace is already on the target: `moved` when
/// it got there by finishing a switched attempt just now.
pub fn arrived_status(recovered: Recovery) -> &'static str {
    if recovered == Recovery::Finish {
        "moved"
    } else {
        "already_there"
    }
}

impl Recovery {
    /// How a report names it (`recovered`).
    pub fn as_report(self) -> Option<String> {
        match self {
            Recovery::None => None,
            Recovery::Undo => Some("undone".into()),
            Recovery::Finish => Some("finished".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_way_attempts_are_undone_before_the_switch_and_finished_after() {
        assert_eq!(recovery(Some(MoveState::Copying)), Recovery::Undo);
        assert_eq!(recovery(Some(MoveState::Switched)), Recovery::Finish);
        assert_eq!(recovery(Some(MoveState::Done)), Recovery::None);
        assert_eq!(recovery(Some(MoveState::Failed)), Recovery::None);
        assert_eq!(recovery(None), Recovery::None);
        assert_eq!(arrived_status(Recovery::Finish), "moved");
        assert_eq!(arrived_status(Recovery::Undo), "already_there");
        assert_eq!(Recovery::Undo.as_report().as_deref(), Some("undone"));
    }

    #[test]
    fn the_copy_method() {
        assert_eq!(copy_method(MoveMethod::Auto, None).unwrap(), (true, None));
        assert_eq!(
            copy_method(MoveMethod::Auto, Some("wal_level is replica".into())).unwrap(),
            (false, Some("wal_level is replica".into()))
        );
        let e = copy_method(MoveMethod::Logical, Some("wal_level is replica".into())).unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.message.contains("wal_level is replica"));
        assert_eq!(
            copy_method(MoveMethod::Logical, None).unwrap(),
            (true, None)
        );
        assert_eq!(
            copy_method(MoveMethod::Copy, Some("x".into())).unwrap(),
            (false, None)
        );
        assert_eq!("copy".parse::<MoveMethod>().unwrap(), MoveMethod::Copy);
        assert!("rsync".parse::<MoveMethod>().is_err());
    }
}
