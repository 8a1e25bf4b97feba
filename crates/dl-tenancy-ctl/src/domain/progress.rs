//! Steps of long operations (move, drain, backup, restore) as they happen, for a front end
//! to show: the CLI prints them on a terminal; the library itself never prints.

use std::sync::Arc;

/// What receives each step, as one line of text.
type Report = dyn Fn(&str) + Send + Sync;

/// Where [`Tenancy`](crate::Tenancy) reports steps; nowhere by default.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Report>>);

impl Progress {
    pub fn to(report: impl Fn(&str) + Send + Sync + 'static) -> Progress {
        Progress(Some(Arc::new(report)))
    }

    /// Report one step; `step` is only formatted when somebody listens.
    pub(crate) fn step(&self, step: impl FnOnce() -> String) {
        if let Some(report) = &self.0 {
            report(&step());
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}
