//! Which queued task an agent gets next, and each coordinator's part of
//! the queue when several share one database.

use super::*;

/// How many tasks past the first eligible one a pick looks for one of this
/// coordinator's part.
const PARTITION_LOOKAHEAD: usize = 1024;

impl Scheduler {
    /// The task this agent gets next: from the queue furthest below its
    /// share, the first task it may take. With other coordinators on the
    /// database ([`Scheduler::set_partition`]), a task of this
    /// coordinator's part is taken before an earlier one of the same
    /// priority among the next [`PARTITION_LOOKAHEAD`]: every coordinator
    /// indexes every queued task, and without this they would all claim
    /// the same head of the queue, all but one in vain. With none of its
    /// part there, it takes one from the back of that priority
    /// ([`Scheduler::back_of_priority`]).
    pub fn head_for(&self, host: &str) -> Option<i64> {
        let labels = &self.agents.get(host)?.labels;
        for (_, queue) in self.queues_by_share() {
            let mut first: Option<&QueuedTask> = None;
            let mut looked = 0;
            for t in queue.tasks.values() {
                if let Some(f) = first {
                    looked += 1;
                    if t.priority != f.priority || looked > PARTITION_LOOKAHEAD {
                        break;
                    }
                    // The others' part is passed over at the cost of a
                    // division: most of the lookahead may be theirs.
                    if !self.in_partition(t.id) {
                        continue;
                    }
                }
                if !self.eligible(t, host, labels) {
                    continue;
                }
                if self.in_partition(t.id) {
                    return Some(t.id);
                }
                first.get_or_insert(t);
            }
            if let Some(t) = first {
                return Some(
                    self.back_of_priority(queue, t, host, labels)
                        .unwrap_or(t.id),
                );
            }
        }
        None
    }

    /// The last task `host` may take among the back [`PARTITION_LOOKAHEAD`]
    /// of `first`'s priority. A coordinator that ran ahead of another finds
    /// only the other's part near the head, which the other is claiming
    /// right then: taking from there, the two claimed the same tasks and
    /// lost about half of all claims (two coordinators, 200 agents).
    /// The back is where the other gets last.
    fn back_of_priority(
        &self,
        queue: &QueueState,
        first: &QueuedTask,
        host: &str,
        labels: &LabelSet,
    ) -> Option<i64> {
        queue
            .tasks
            .values()
            .rev()
            .take(PARTITION_LOOKAHEAD)
            .filter(|t| t.priority == first.priority)
            .find(|t| self.eligible(t, host, labels))
            .map(|t| t.id)
    }

    /// This coordinator is `index` of `count` sharing one database (`None`:
    /// alone). Each takes the tasks whose id modulo `count` is its index
    /// first.
    pub fn set_partition(&mut self, partition: Option<(u64, u64)>) {
        self.partition = partition.filter(|(index, count)| *count > 1 && index < count);
    }

    fn in_partition(&self, task_id: i64) -> bool {
        match self.partition {
            Some((index, count)) => task_id.unsigned_abs() % count == index,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{sched_with, task};
    use super::*;

    #[test]
    fn coordinators_sharing_a_database_take_their_own_part_first() {
        let mut s = sched_with(&["a"]);
        for id in 1..=4 {
            s.enqueue(task(id, "q", 0, None, id));
        }
        s.enqueue(task(5, "q", 1, None, 5));
        // Alone: the queue's order.
        assert_eq!(s.head_for("a"), Some(5));
        s.dequeue(5);
        assert_eq!(s.head_for("a"), Some(1));
        // Second of two: odd ids are the other's part.
        s.set_partition(Some((0, 2)));
        assert_eq!(s.head_for("a"), Some(2));
        s.set_partition(Some((1, 2)));
        assert_eq!(s.head_for("a"), Some(1));
        // Never before higher priority: task 6 comes first though not ours.
        s.enqueue(task(6, "q", 1, None, 6));
        s.set_partition(Some((1, 2)));
        assert_eq!(s.head_for("a"), Some(6));
        // Nothing of ours left: the other's, from the back (it takes its
        // own from the front).
        s.dequeue(6);
        s.dequeue(1);
        s.dequeue(3);
        assert_eq!(s.head_for("a"), Some(4));
        // Not a lower priority from the back: the first of the highest.
        s.enqueue(task(7, "q", -1, None, 7));
        assert_eq!(s.head_for("a"), Some(4));
        s.dequeue(4);
        assert_eq!(s.head_for("a"), Some(2));
    }

    #[test]
    fn a_coordinator_ahead_of_the_other_takes_from_the_back() {
        let mut s = sched_with(&["a"]);
        // The other's part (odd ids) waits at the head: this coordinator
        // (even ids) ran ahead of it.
        let n = PARTITION_LOOKAHEAD as i64 * 2;
        for id in 0..n {
            s.enqueue(task(2 * id + 1, "q", 0, None, id));
        }
        // Its own, in the middle: beyond the lookahead from the head.
        s.enqueue(task(2 * n + 2, "q", 0, None, n / 2 + 10));
        s.set_partition(Some((0, 2)));
        // The other's last is taken, not the head the other is claiming.
        assert_eq!(s.head_for("a"), Some(2 * n - 1));
        // Alone again: the head.
        s.set_partition(None);
        assert_eq!(s.head_for("a"), Some(1));
    }
}
