//! Group commit: callers that arrive while a group is committing wait, and the next of them
//! commits everything that queued up in one transaction, so one fsync acknowledges many writes.
//!
//! There is no thread of its own: the first caller that finds no group committing leads one
//! (takes at most [`MAX_GROUP`] waiting items, commits them, hands each caller its outcome). The
//! others each wait on a slot of their own, so a commit wakes exactly the callers it answers,
//! not every waiting thread; when callers are still queued, the leader hands the lead to the
//! first of them, which commits the next group. Each caller receives one message: its outcome,
//! or the lead. The queue holds one item per blocked caller, so it is bounded by the callers'
//! threads.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The most items one group commits.
pub(crate) const MAX_GROUP: usize = 512;

/// The group an item was in failed without an outcome (a panic while committing it).
#[derive(Debug, thiserror::Error)]
#[error("the write group was abandoned while committing")]
pub(crate) struct Abandoned;

/// Items waiting to be committed together.
pub(crate) struct GroupCommit<I, O> {
    state: Mutex<State<I, O>>,
}

struct State<I, O> {
    waiting: VecDeque<(I, Arc<Slot<O>>)>,
    committing: bool,
}

impl<I, O> Default for GroupCommit<I, O> {
    fn default() -> Self {
        GroupCommit { state: Mutex::new(State { waiting: VecDeque::new(), committing: false }) }
    }
}

/// What a waiting caller is told: its item's outcome (`None` when its group was abandoned), or
/// that it leads the next group.
enum Message<O> {
    Outcome(Option<O>),
    Lead,
}

/// Where one waiting caller receives its message.
struct Slot<O> {
    message: Mutex<Option<Message<O>>>,
    ready: Condvar,
}

impl<O> Slot<O> {
    fn new() -> Self {
        Slot { message: Mutex::new(None), ready: Condvar::new() }
    }

    fn send(&self, message: Message<O>) {
        *self.message.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
        self.ready.notify_one();
    }

    fn receive(&self) -> Message<O> {
        let mut message = self.message.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(m) = message.take() {
                return m;
            }
            message = self.ready.wait(message).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<I, O> GroupCommit<I, O> {
    /// Queues `item` and returns its outcome once the group it was committed in is done.
    /// `commit` receives a group in arrival order and must return one outcome per item, in the
    /// same order (an item without one is [`Abandoned`]).
    pub(crate) fn submit(&self, item: I, commit: impl Fn(Vec<I>) -> Vec<O>) -> Result<O, Abandoned> {
        let mine = Arc::new(Slot::new());
        {
            let mut state = self.lock();
            state.waiting.push_back((item, mine.clone()));
            if state.committing {
                drop(state);
                match mine.receive() {
                    Message::Outcome(outcome) => return outcome.ok_or(Abandoned),
                    // The leader before handed over: this caller's item is first in the queue.
                    Message::Lead => {}
                }
            } else {
                // Nobody leads, so nothing else is queued: this caller's item is first.
                state.committing = true;
            }
        }
        let (items, slots): (Vec<I>, Vec<Arc<Slot<O>>>) = {
            let mut state = self.lock();
            let take = state.waiting.len().min(MAX_GROUP);
            state.waiting.drain(..take).unzip()
        };
        let mut leading = Leading { group: self, slots };
        let outcomes = commit(items);
        let slots = std::mem::take(&mut leading.slots);
        let mut own = None;
        let mut outcomes = outcomes.into_iter();
        for slot in slots {
            let outcome = outcomes.next();
            if Arc::ptr_eq(&slot, &mine) {
                own = outcome;
            } else {
                slot.send(Message::Outcome(outcome));
            }
        }
        drop(leading);
        own.ok_or(Abandoned)
    }

    fn lock(&self) -> MutexGuard<'_, State<I, O>> {
        // The state is only changed outside of `commit`, by code that does not panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends a group: the first caller still queued leads the next one, or no group commits.
    fn hand_over(&self) {
        let mut state = self.lock();
        match state.waiting.front() {
            Some((_, next)) => next.send(Message::Lead),
            None => state.committing = false,
        }
    }
}

/// The leader of a group while it commits: when it is done, or if `commit` unwinds, the group's
/// callers not yet answered are told it was abandoned, and the lead passes on.
struct Leading<'a, I, O> {
    group: &'a GroupCommit<I, O>,
    slots: Vec<Arc<Slot<O>>>,
}

impl<I, O> Drop for Leading<'_, I, O> {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            slot.send(Message::Outcome(None));
        }
        self.group.hand_over();
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
        let state = group.lock();
        assert!(state.waiting.is_empty() && !state.committing, "nothing left queued, nobody leading");
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
