//! How far a long operation is: the operations report steps, the binary's
//! edge decides whether and how to show them (a bar on a terminal, nothing
//! otherwise), so nothing below the edge knows about terminals.

use std::{fmt, sync::Arc};

/// What a long operation reports. Calls come from one thread at a time.
pub trait Progress: Send + Sync {
    /// `total` steps of `what` (e.g. "creating endpoints") begin.
    fn begin(&self, what: &str, total: usize);
    /// One step is done.
    fn step(&self);
    /// The operation ended (done or failed).
    fn end(&self);
}

/// Shows nothing: the default, and what scripts and `--json` get.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: usize) {}
    fn step(&self) {}
    fn end(&self) {}
}

/// An instance's progress reporter.
#[derive(Clone)]
pub struct Reporter(pub Arc<dyn Progress>);

impl Default for Reporter {
    fn default() -> Self {
        Reporter(Arc::new(Silent))
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reporter")
    }
}

/// Fewer steps than this finish too fast for a bar to help.
pub const WORTH_SHOWING: usize = 10;

impl Reporter {
    /// Begins `total` steps of `what`, shown only when there are enough of
    /// them to be worth showing; the steps end when the result drops.
    pub fn begin(&self, what: &str, total: usize) -> Steps<'_> {
        let shown = total >= WORTH_SHOWING;
        if shown {
            self.0.begin(what, total);
        }
        Steps {
            reporter: self,
            shown,
        }
    }
}

/// The steps of one operation; ends it when dropped, also on an error.
pub struct Steps<'a> {
    reporter: &'a Reporter,
    shown: bool,
}

impl Steps<'_> {
    pub fn step(&self) {
        if self.shown {
            self.reporter.0.step();
        }
    }
}

impl Drop for Steps<'_> {
    fn drop(&mut self) {
        if self.shown {
            self.reporter.0.end();
        }
    }
}
