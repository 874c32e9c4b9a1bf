//! The agents that may take work now, so that a pick looks at them and not
//! at the whole fleet.
//!
//! With thousands of agents connected, most are busy at any moment; scanning
//! every one of them on each dispatch made the cost of a task grow with the
//! fleet. The index keeps the agents that asked for work and got none yet,
//! and of those the ones that asked since the last pick: a pick looks only
//! at those, unless something happened that may give work to an agent that
//! found none before (new work queued, an agent gone).
//!
//! It may hold an agent that is no longer waiting (it left, or was given
//! work through another path): the pick checks each agent's state and drops
//! those. It never misses one: every way into the waiting state goes
//! through [`WaitingIndex::asked`].

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct WaitingIndex {
    /// Agents that asked for work and were not given any since.
    waiting: BTreeSet<String>,
    /// Of those, the ones that asked since the last pick.
    fresh: BTreeSet<String>,
    /// Work may have become eligible for agents that found none before.
    recheck: bool,
}

impl WaitingIndex {
    /// `host` waits for work.
    pub fn asked(&mut self, host: &str) {
        if !self.waiting.contains(host) {
            self.waiting.insert(host.to_owned());
        }
        if !self.fresh.contains(host) {
            self.fresh.insert(host.to_owned());
        }
    }

    /// `host` no longer waits (it was given work, or left).
    pub fn remove(&mut self, host: &str) {
        self.waiting.remove(host);
        self.fresh.remove(host);
    }

    /// Every waiting agent is looked at by the next pick: new work was
    /// queued, or an agent left (a retry avoiding its last agent may now go
    /// back to it).
    pub fn recheck_all(&mut self) {
        self.recheck = true;
    }

    /// The agents the next pick looks at, in host order: every waiting one
    /// after [`WaitingIndex::recheck_all`], else those that asked since the
    /// last pick. They stay indexed until [`WaitingIndex::remove`].
    pub fn take_candidates(&mut self) -> Vec<String> {
        let fresh = std::mem::take(&mut self.fresh);
        if std::mem::take(&mut self.recheck) {
            self.waiting.iter().cloned().collect()
        } else {
            fresh.into_iter().collect()
        }
    }

    /// Agents indexed as waiting (some may have stopped waiting since).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_looks_at_fresh_agents_unless_all_must_be_rechecked() {
        let mut index = WaitingIndex::default();
        index.asked("b");
        index.asked("a");
        index.asked("a");
        assert_eq!(index.take_candidates(), ["a", "b"]);
        // Nothing new: nobody to look at, both still waiting.
        assert!(index.take_candidates().is_empty());
        assert_eq!(index.len(), 2);
        index.asked("c");
        assert_eq!(index.take_candidates(), ["c"]);
        index.recheck_all();
        assert_eq!(index.take_candidates(), ["a", "b", "c"]);
        index.remove("b");
        index.recheck_all();
        assert_eq!(index.take_candidates(), ["a", "c"]);
        assert!(index.take_candidates().is_empty());
    }
}
