//! One former test crate at a time inside a target that gathers several (`tests/netns`,
//! `tests/edgelake`, `tests/packaging`). Their tests were written for a crate of their own, run
//! one crate after another: they share namespaces, bridges, containers, images and host
//! directories by fixed names with the other tests of their crate only. Each test enters the gate
//! of its module; tests of one module still run in parallel, as before, and another module's
//! wait until none of them is left.

use std::sync::{Condvar, Mutex, PoisonError};

/// The module whose tests are running, and how many of them.
static HOLDER: Mutex<(Option<&'static str>, usize)> = Mutex::new((None, 0));
static FREED: Condvar = Condvar::new();

/// Held for the length of one test; released on panic too.
pub struct Gate;

/// Wait until no other module's test runs, then run: `let _gate = gate::enter(module_path!());`.
pub fn enter(module: &'static str) -> Gate {
    let mut holder = HOLDER.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        match holder.0 {
            None => {
                *holder = (Some(module), 1);
                return Gate;
            }
            Some(running) if running == module => {
                holder.1 += 1;
                return Gate;
            }
            Some(_) => holder = FREED.wait(holder).unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut holder = HOLDER.lock().unwrap_or_else(PoisonError::into_inner);
        holder.1 -= 1;
        if holder.1 == 0 {
            holder.0 = None;
            FREED.notify_all();
        }
    }
}
