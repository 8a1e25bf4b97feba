//! The states a workspace and a move go through, and which state may follow which: the one
//! place that says so. The control database stores them as text (`as_str`); updates name the
//! states they move from ([`WorkspaceState::comes_from`]), so a transition not listed here
//! changes nothing.

use crate::domain::error::{Error, ErrorCode, Result};
use std::fmt;
use std::str::FromStr;

/// A workspace's recorded state (`workspaces.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkspaceState {
    /// A provision (or undelete) is creating what is missing; a crash leaves it here.
    Provisioning,
    /// Everything exists and its logins work.
    Active,
    /// The last provisioning attempt failed (`error_message` says why).
    Error,
    /// Deleted by `deprovision`: logins refused, data kept until `purge_after`.
    Suspended,
    /// `purge` is dropping the database and roles.
    Purging,
    /// Gone: only the record is kept (the id may be provisioned anew).
    Deleted,
}

impl WorkspaceState {
    pub const ALL: [WorkspaceState; 6] = [
        WorkspaceState::Provisioning,
        WorkspaceState::Active,
        WorkspaceState::Error,
        WorkspaceState::Suspended,
        WorkspaceState::Purging,
        WorkspaceState::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceState::Provisioning => "provisioning",
            WorkspaceState::Active => "active",
            WorkspaceState::Error => "error",
            WorkspaceState::Suspended => "suspended",
            WorkspaceState::Purging => "purging",
            WorkspaceState::Deleted => "deleted",
        }
    }

    /// The states a workspace may be in just before it becomes `self`.
    pub fn comes_from(self) -> &'static [WorkspaceState] {
        use WorkspaceState::*;
        match self {
            // provision (new, repair, retry) and undelete.
            Provisioning => &[Provisioning, Active, Error, Suspended, Deleted],
            Active => &[Provisioning],
            Error => &[Provisioning, Error],
            // deprovision of a workspace in any live state.
            Suspended => &[Provisioning, Active, Error],
            Purging => &[Suspended, Purging],
            Deleted => &[Purging],
        }
    }

    /// `comes_from` as the text the control database stores (for `state = ANY($n)`).
    pub fn comes_from_text(self) -> Vec<&'static str> {
        self.comes_from().iter().map(|s| s.as_str()).collect()
    }

    pub fn may_become(self, next: WorkspaceState) -> bool {
        next.comes_from().contains(&self)
    }

    /// Deleted by `deprovision` (tenants see `suspended` for both).
    pub fn is_suspended(self) -> bool {
        matches!(self, WorkspaceState::Suspended | WorkspaceState::Purging)
    }
}

impl FromStr for WorkspaceState {
    type Err = Error;
    fn from_str(s: &str) -> Result<WorkspaceState> {
        WorkspaceState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Internal,
                    format!("unknown workspace state {s:?}"),
                )
            })
    }
}

impl fmt::Display for WorkspaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move's recorded state (`workspace_moves.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveState {
    /// The target is being prepared and filled; the source still serves.
    Copying,
    /// The control database points at the target; the source copy is not dropped yet.
    Switched,
    Done,
    /// Undone (`error_message` says why).
    Failed,
}

impl MoveState {
    pub const ALL: [MoveState; 4] = [
        MoveState::Copying,
        MoveState::Switched,
        MoveState::Done,
        MoveState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveState::Copying => "copying",
            MoveState::Switched => "switched",
            MoveState::Done => "done",
            MoveState::Failed => "failed",
        }
    }

    /// The states a move may be in just before it becomes `self` (a new attempt starts
    /// `copying` from any state but one in flight, which is recovered first).
    pub fn comes_from(self) -> &'static [MoveState] {
        use MoveState::*;
        match self {
            Copying => &[Done, Failed],
            Switched => &[Copying],
            Done => &[Switched],
            Failed => &[Copying],
        }
    }

    pub fn may_become(self, next: MoveState) -> bool {
        next.comes_from().contains(&self)
    }

    /// A move stopped in this state must be undone or finished before anything else.
    pub fn in_flight(self) -> bool {
        matches!(self, MoveState::Copying | MoveState::Switched)
    }
}

impl FromStr for MoveState {
    type Err = Error;
    fn from_str(s: &str) -> Result<MoveState> {
        MoveState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::new(ErrorCode::Internal, format!("unknown move state {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for s in WorkspaceState::ALL {
            assert_eq!(s.as_str().parse::<WorkspaceState>().unwrap(), s);
        }
        for s in MoveState::ALL {
            assert_eq!(s.as_str().parse::<MoveState>().unwrap(), s);
        }
        assert!("gone".parse::<WorkspaceState>().is_err());
    }

    #[test]
    fn workspace_transitions() {
        use WorkspaceState::*;
        // A deleted workspace comes back only through provisioning; a suspended one is
        // never made active without it (undelete provisions).
        assert!(Deleted.may_become(Provisioning));
        assert!(!Deleted.may_become(Active));
        assert!(!Suspended.may_become(Active));
        assert!(Suspended.may_become(Provisioning));
        // Only a suspended workspace is purged, and only a purge deletes.
        assert!(!Active.may_become(Purging));
        assert!(Suspended.may_become(Purging));
        for s in WorkspaceState::ALL {
            assert_eq!(s.may_become(Deleted), s == Purging, "{s}");
        }
    }

    #[test]
    fn move_transitions() {
        use MoveState::*;
        assert!(Copying.may_become(Switched) && Switched.may_become(Done));
        assert!(Copying.may_become(Failed));
        // Once switched, a move is finished, never undone.
        assert!(!Switched.may_become(Failed));
        assert!(!Copying.may_become(Copying) && !Switched.may_become(Copying));
        assert!(Copying.in_flight() && Switched.in_flight() && !Done.in_flight());
    }
}
