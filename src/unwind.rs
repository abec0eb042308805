//! Containing panics of user code (handlers, payload destructors) where
//! they must not unwind any further: into rayon, which aborts the process,
//! or out of teardown before it is done.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// A caught panic.
pub(crate) struct Panic(Box<dyn Any + Send>);

/// Runs `f`, catching a panic. (`AssertUnwindSafe`: every caller touches,
/// after a panic, only state the panicking code cannot have left half-done:
/// the state word was settled before any user code ran.)
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panic> {
    catch_unwind(AssertUnwindSafe(f)).map_err(Panic)
}

impl Panic {
    /// Drops the panic's payload, whose own destructor may panic too.
    pub(crate) fn discard(self) {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(self.0)));
    }

    /// Resumes unwinding with this panic, unless the thread is unwinding
    /// already (a second panic would abort the process): then it is
    /// discarded.
    pub(crate) fn resume(self) {
        if std::thread::panicking() {
            self.discard();
        } else {
            resume_unwind(self.0);
        }
    }
}
