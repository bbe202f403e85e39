//! Group commit: callers that arrive while a group is committing wait, and the next of them
//! commits everything that queued up in one transaction, so one fsync acknowledges many writes.
//!
//! There is no thread of its own: the first caller that finds no group committing leads one
//! (takes at most [`MAX_GROUP`] waiting items, commits them, hands each caller its outcome); the
//! others wait on a condition variable until their outcome is there or no group is committing.
//! The queue holds one item per blocked caller, so it is bounded by the callers' threads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The most items one group commits.
pub(crate) const MAX_GROUP: usize = 512;

/// The group an item was in failed without an outcome (a panic while committing it).
#[derive(Debug, thiserror::Error)]
#[error("the write group was abandoned while committing")]
pub(crate) struct Abandoned;

/// Items waiting to be committed together, and the outcomes not yet collected.
pub(crate) struct GroupCommit<I, O> {
    state: Mutex<State<I, O>>,
    changed: Condvar,
}

struct State<I, O> {
    waiting: VecDeque<(u64, I)>,
    /// Outcomes by ticket; `None` when the item's group was abandoned.
    done: HashMap<u64, Option<O>>,
    next_ticket: u64,
    committing: bool,
}

impl<I, O> Default for GroupCommit<I, O> {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                done: HashMap::new(),
                next_ticket: 0,
                committing: false,
            }),
            changed: Condvar::new(),
        }
    }
}

impl<I, O> GroupCommit<I, O> {
    /// Queues `item` and returns its outcome once the group it was committed in is done.
    /// `commit` receives a group in arrival order and must return one outcome per item, in the
    /// same order (an item without one is [`Abandoned`]).
    pub(crate) fn submit(&self, item: I, commit: impl Fn(Vec<I>) -> Vec<O>) -> Result<O, Abandoned> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back((ticket, item));
        loop {
            if let Some(outcome) = state.done.remove(&ticket) {
                return outcome.ok_or(Abandoned);
            }
            if state.committing {
                state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // No group is committing and ours is not done: it is waiting, so lead the next one.
            state.committing = true;
            let take = state.waiting.len().min(MAX_GROUP);
            let (tickets, items): (Vec<u64>, Vec<I>) = state.waiting.drain(..take).unzip();
            drop(state);
            let mut leading = Leading { group: self, tickets };
            let outcomes = commit(items);
            let tickets = std::mem::take(&mut leading.tickets);
            drop(leading);
            state = self.lock();
            let mut outcomes = outcomes.into_iter();
            for t in tickets {
                state.done.insert(t, outcomes.next());
            }
            state.committing = false;
            self.changed.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<I, O>> {
        // The state is only changed outside of `commit`, by code that does not panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The leader of a group while it commits: if `commit` unwinds, the group's callers are told
/// it was abandoned and the next caller may lead.
struct Leading<'a, I, O> {
    group: &'a GroupCommit<I, O>,
    tickets: Vec<u64>,
}

impl<I, O> Drop for Leading<'_, I, O> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let mut state = self.group.lock();
        for t in self.tickets.drain(..) {
            state.done.insert(t, None);
        }
        state.committing = false;
        self.group.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_caller_gets_its_own_outcome_and_groups_form_under_load() {
        let group = GroupCommit::<usize, usize>::default();
        let commits = AtomicUsize::new(0);
        let callers = 32;
        std::thread::scope(|s| {
            for i in 0..callers {
                let (group, commits) = (&group, &commits);
                s.spawn(move || {
                    for round in 0..20 {
                        let item = i * 1000 + round;
                        let out = group
                            .submit(item, |items| {
                                commits.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                items.iter().map(|x| x * 2).collect()
                            })
                            .unwrap();
                        assert_eq!(out, item * 2, "each caller gets the outcome of its own item");
                    }
                });
            }
        });
        let commits = commits.load(Ordering::Relaxed);
        assert!(commits < callers * 20, "{commits} commits for {} items: no group formed", callers * 20);
        assert!(group.lock().done.is_empty() && group.lock().waiting.is_empty());
    }

    #[test]
    fn a_group_that_panics_is_abandoned_and_the_next_commits() {
        let group = GroupCommit::<u32, u32>::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit(1, |_| panic!("commit failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(group.submit(2, |items| items).unwrap(), 2, "a later caller leads a new group");
    }

    #[test]
    fn a_missing_outcome_is_abandoned() {
        let group = GroupCommit::<u32, u32>::default();
        assert!(group.submit(1, |_| Vec::new()).is_err());
    }
}
