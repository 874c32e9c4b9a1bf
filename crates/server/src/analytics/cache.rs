//! The change cache: one incremental [`Detector`] per series, fed only the
//! points added since the last query.
//!
//! An entry is keyed by series id and checked against the series' point
//! count: the points after the last one it holds (by time, then id) are
//! read and pushed; when the count says a point arrived out of order (an
//! integration timestamp older than the newest point) or the entry holds
//! more than the series, it is rebuilt from the series' newest
//! [`MAX_HISTORY`] points. At most `capacity` series are cached; the least
//! recently used go first. Each entry has its own lock, so queries of two
//! series never wait for each other, and two queries of one series update
//! it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use testfleet_core::analysis::changes::{ChangeOptions, ChangePoint, Detector};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{StoredPoint, StoredSeries};

use super::{Analytics, Result};

/// Most points of a series the detector reads when it starts over.
pub(super) const MAX_HISTORY: usize = 50_000;

/// What the cache keeps of each point: enough to place a change in history.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PointMeta {
    pub id: i64,
    pub job_id: i64,
    pub at: UnixMillis,
    pub sha: Option<String>,
    pub value: f64,
}

impl PointMeta {
    fn of(p: &StoredPoint) -> PointMeta {
        PointMeta {
            id: p.id,
            job_id: p.job_id,
            at: p.at,
            sha: p.sha.clone(),
            value: p.value,
        }
    }
}

/// A change point placed in its series' history.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Located {
    pub change: ChangePoint,
    /// Index of the first point after the change in the whole series.
    pub index: u64,
    pub at: UnixMillis,
    pub sha: Option<String>,
}

/// One series' detector and the points it was fed.
#[derive(Debug)]
pub(super) struct Entry {
    /// Points of the series older than the first one held (a series longer
    /// than [`MAX_HISTORY`] when the entry was built).
    offset: u64,
    detector: Detector,
    points: Vec<PointMeta>,
}

/// What [`Entry::append`] made of the points read after its last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Appended {
    /// These many points were pushed (0: nothing new).
    Pushed(usize),
    /// The series does not continue the entry: rebuild it.
    Stale,
}

impl Entry {
    pub(super) fn new(options: &ChangeOptions) -> Entry {
        Entry {
            offset: 0,
            detector: Detector::new(options.clone()),
            points: Vec::new(),
        }
    }

    /// The entry of a series of `total` points from its newest `points`.
    pub(super) fn build(options: &ChangeOptions, total: u64, points: &[StoredPoint]) -> Entry {
        let mut entry = Entry::new(options);
        entry.offset = total.saturating_sub(points.len() as u64);
        entry.push(points);
        entry
    }

    fn push(&mut self, points: &[StoredPoint]) {
        for p in points {
            self.detector.push(p.value);
            self.points.push(PointMeta::of(p));
        }
    }

    /// Points of the series the entry accounts for.
    pub(super) fn known(&self) -> u64 {
        self.offset + self.points.len() as u64
    }

    /// The newest point held, where the next read starts.
    pub(super) fn last(&self) -> Option<&PointMeta> {
        self.points.last()
    }

    /// Pushes the points of `read` (the series' points at or after the last
    /// one held, oldest first) that come after the last one held, when the
    /// series now has `total` points.
    pub(super) fn append(&mut self, total: u64, read: &[StoredPoint]) -> Appended {
        if total < self.known() {
            return Appended::Stale;
        }
        let new: Vec<StoredPoint> = match self.last() {
            Some(last) => read
                .iter()
                .filter(|p| (p.at, p.id) > (last.at, last.id))
                .cloned()
                .collect(),
            None => read.to_vec(),
        };
        // Fewer than the count says: some point landed before the last one
        // held (or the read was cut short).
        if self.known() + (new.len() as u64) < total {
            return Appended::Stale;
        }
        self.push(&new);
        Appended::Pushed(new.len())
    }

    /// The change points found so far, placed in history.
    pub(super) fn located(&self) -> Vec<Located> {
        self.detector
            .changes()
            .iter()
            .filter_map(|c| {
                let p = self.points.get(c.index)?;
                Some(Located {
                    change: c.clone(),
                    index: self.offset + c.index as u64,
                    at: p.at,
                    sha: p.sha.clone(),
                })
            })
            .collect()
    }

    /// The values after the last change point (the series' current level),
    /// the newest `max` of them.
    pub(super) fn current_values(&self, max: usize) -> Vec<f64> {
        let from = self.detector.changes().last().map_or(0, |c| c.index);
        let from = from.max(self.points.len().saturating_sub(max));
        self.points[from.min(self.points.len())..]
            .iter()
            .map(|p| p.value)
            .collect()
    }

    /// The points held (for a sha's lookup).
    pub(super) fn points(&self) -> &[PointMeta] {
        &self.points
    }
}

/// The cache of entries, LRU-bounded.
pub(super) struct ChangeCache {
    capacity: usize,
    inner: Mutex<Lru>,
}

/// A series' entry behind its own lock (empty until first read).
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

#[derive(Default)]
struct Lru {
    tick: u64,
    /// Each slot with the tick it was last used at.
    entries: HashMap<i64, (Slot, u64)>,
}

impl ChangeCache {
    pub(super) fn new(capacity: usize) -> ChangeCache {
        ChangeCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Lru::default()),
        }
    }

    /// The slot of series `id` (empty when new), marked as just used.
    fn slot(&self, id: i64) -> Slot {
        // A poisoned lock only means another request panicked while holding
        // it; the map itself is still whole.
        let mut lru = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((slot, used)) = lru.entries.get_mut(&id) {
            *used = tick;
            return slot.clone();
        }
        if lru.entries.len() >= self.capacity
            && let Some(oldest) = lru
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            lru.entries.remove(&oldest);
        }
        let slot = Arc::new(tokio::sync::Mutex::new(None));
        lru.entries.insert(id, (slot.clone(), tick));
        slot
    }

    /// Series cached now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|l| l.entries.len()).unwrap_or(0)
    }
}

impl Analytics {
    /// Brings the cached detector of `series` up to date and hands its
    /// entry to `read`.
    pub(super) async fn with_entry<T>(
        &self,
        series: &StoredSeries,
        read: impl FnOnce(&Entry) -> T,
    ) -> Result<T> {
        let slot = self.cache.slot(series.id);
        let mut guard = slot.lock().await;
        let total = u64::try_from(series.points).unwrap_or(0);
        let limit = i64::try_from(MAX_HISTORY).unwrap_or(i64::MAX);
        let fresh = match guard.as_mut() {
            Some(entry) if entry.known() == total => false,
            Some(entry) => {
                let since = entry.last().map(|p| p.at);
                let read = self.views().series_points(series.id, since, limit).await?;
                entry.append(total, &read) == Appended::Stale
            }
            None => true,
        };
        if fresh {
            let points = self.views().series_points(series.id, None, limit).await?;
            *guard = Some(Entry::build(&self.changes, total, &points));
        }
        match guard.as_ref() {
            Some(entry) => Ok(read(entry)),
            None => Ok(read(&Entry::new(&self.changes))),
        }
    }

    /// The change points of `series`, oldest first.
    pub(super) async fn located_changes(&self, series: &StoredSeries) -> Result<Vec<Located>> {
        self.with_entry(series, Entry::located).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: i64, at: i64, value: f64) -> StoredPoint {
        StoredPoint {
            id,
            series_id: 1,
            attempt_id: id,
            job_id: 1,
            task_id: 1,
            repetition: 0,
            value,
            sha: Some(format!("sha{id}")),
            branch: None,
            integration: None,
            fingerprint: "f".into(),
            at,
        }
    }

    fn step(n: usize, from: usize) -> Vec<StoredPoint> {
        (0..n)
            .map(|i| {
                let jitter = [0.0, 0.4, -0.3, 0.2, -0.1][i % 5];
                let level = if i < from { 100.0 } else { 130.0 };
                point(i as i64 + 1, 1_000 * (i as i64 + 1), level + jitter)
            })
            .collect()
    }

    #[test]
    fn points_in_order_are_pushed_and_changes_placed() {
        let options = ChangeOptions::default();
        let all = step(60, 30);
        let mut entry = Entry::build(&options, 40, &all[..40]);
        assert_eq!(entry.known(), 40);
        // The read starts at the last point held, which it includes again.
        assert_eq!(entry.append(60, &all[39..]), Appended::Pushed(20));
        assert_eq!(entry.known(), 60);
        let changes = entry.located();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].index, 30);
        assert_eq!(changes[0].at, 31_000);
        assert_eq!(changes[0].sha.as_deref(), Some("sha31"));
        // Nothing new: nothing pushed.
        assert_eq!(entry.append(60, &all[59..]), Appended::Pushed(0));
        // The current level is the one after the step.
        assert!(entry.current_values(1000).iter().all(|v| *v > 120.0));
        assert_eq!(entry.current_values(5).len(), 5);
    }

    #[test]
    fn a_point_out_of_order_or_a_shorter_series_makes_the_entry_stale() {
        let options = ChangeOptions::default();
        let all = step(20, 100);
        let mut entry = Entry::build(&options, 10, &all[..10]);
        // The series has 12 points, but only one comes after the last held:
        // the other landed before it.
        assert_eq!(entry.append(12, &all[9..11]), Appended::Stale);
        assert_eq!(entry.append(5, &[]), Appended::Stale);
        assert_eq!(entry.known(), 10, "a stale read pushes nothing");
    }

    #[test]
    fn a_long_series_is_read_from_its_newest_points() {
        let options = ChangeOptions::default();
        let all = step(60, 30);
        let entry = Entry::build(&options, 1_060, &all);
        assert_eq!(entry.known(), 1_060);
        let changes = entry.located();
        assert_eq!(changes[0].index, 1_030, "indexes count the older points");
    }

    #[test]
    fn the_least_recently_used_series_goes_first() {
        let cache = ChangeCache::new(2);
        let one = cache.slot(1);
        let _two = cache.slot(2);
        assert!(Arc::ptr_eq(&one, &cache.slot(1)), "a hit keeps the slot");
        let _three = cache.slot(3);
        assert_eq!(cache.len(), 2);
        // Series 2 was the least recently used: it was dropped, 1 was kept.
        assert!(Arc::ptr_eq(&one, &cache.slot(1)));
        let lru = cache.inner.lock().unwrap();
        assert!(!lru.entries.contains_key(&2));
    }
}
