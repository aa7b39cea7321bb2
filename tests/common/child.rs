//! A child process that cannot outlive the test that started it.
#![allow(dead_code)]

use std::process::Child;

/// A child process killed (and reaped) when dropped, unless disarmed.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not disarmed")
    }

    /// Hands the child over to a caller who kills it.
    pub fn disarm(mut self) -> Child {
        self.0.take().expect("not disarmed")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
