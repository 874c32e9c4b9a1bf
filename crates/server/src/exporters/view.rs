//! The outbox consumer that builds the ResultsDB view (the tables the
//! ResultsDB API v2.0 serves): mapping a report into results costs in
//! proportion to its size, so it runs here, after the finish committed, not
//! inside the finish's transaction. Readers of the view catch it up first,
//! so a finished attempt's results are there as soon as the finish answered.
//!
//! The same loop maps the outbox's benchmark values into the store's series
//! (`Store::map_series_pending`), a batch of events after the view each
//! round; the store writes a large report in small transactions on SQLite,
//! so claims keep the writer.

use std::time::Duration;

use testfleet_store::Store;
use tokio::task::JoinHandle;

/// How often an idle consumer looks for new events.
const POLL: Duration = Duration::from_millis(100);

/// Events mapped per transaction: small, so claims interleave on SQLite's
/// single writer.
const BATCH: i64 = 8;

/// Most rounds a reader spends catching the view up before it answers.
const CATCH_UP_ROUNDS: usize = 1000;

/// Starts the consumer; it stops once the store is closed.
pub fn start(store: Store) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if store.is_closed() {
                return;
            }
            let view = catch_up(&store).await;
            if let Err(e) = &view
                && !store.is_closed()
            {
                tracing::warn!("failed to build the ResultsDB view: {e}");
            }
            // One batch of series per round, so a long back-fill of the
            // series never keeps new results out of the view (and so from
            // the exporters, which deliver only what the view mapped).
            let series = store.map_series_pending(BATCH).await;
            if let Err(e) = &series
                && !store.is_closed()
            {
                tracing::warn!("failed to map benchmark values into series: {e}");
            }
            match (&view, &series) {
                (Ok(()), Ok(0)) => tokio::time::sleep(POLL).await,
                (Ok(()), Ok(_)) => {}
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    })
}

/// Maps the benchmark values of every event committed so far into series
/// (for a reader that must see them).
pub async fn series_catch_up(store: &Store) -> Result<(), testfleet_store::StoreError> {
    for _ in 0..CATCH_UP_ROUNDS {
        if store.series_caught_up().await? {
            return Ok(());
        }
        store.map_series_pending(BATCH).await?;
    }
    Ok(())
}

/// Maps every event committed so far into the view.
pub async fn catch_up(store: &Store) -> Result<(), testfleet_store::StoreError> {
    for _ in 0..CATCH_UP_ROUNDS {
        if store.resultsdb_view_caught_up().await? {
            return Ok(());
        }
        store.materialize_pending(BATCH).await?;
    }
    Ok(())
}
