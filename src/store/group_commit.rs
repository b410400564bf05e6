//! Group commit of prediction records. Every hook call writes one record and waits for it
//! (suppression and dedup read it back), and on SQLite with `synchronous = FULL` each commit
//! is an fsync: one at a time, they capped a gateway at a few hundred calls a second. Calls
//! arriving together now share one transaction: a single writer task takes whatever has
//! queued (up to [`MAX_BATCH`]), inserts it, commits once, and answers every waiting call.
//! Each caller still returns only after its record is durable and visible.
//!
//! It knows nothing of what a record holds: a [`Row`] inserts itself.

use std::future::Future;
use std::pin::Pin;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// A record the writer can insert within its transaction.
pub(super) trait Row: Send + Sync + 'static {
    /// Inserts this record within `tx` (a repeat of a stored record is ignored).
    fn insert<'t, 'c: 't>(
        &'t self,
        tx: &'t mut sqlx::Transaction<'c, sqlx::Any>,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 't>>;
}

/// Most records in one transaction.
const MAX_BATCH: usize = 256;
/// Records waiting for the writer at most; a caller beyond it waits for room.
const QUEUE: usize = 4096;

/// A record and who waits for its commit.
pub(super) struct Queued<R> {
    pub(super) record: R,
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

/// Starts the writer on the current Tokio runtime; it ends when every sender is gone.
pub(super) fn start<R: Row>(pool: AnyPool) -> mpsc::Sender<Queued<R>> {
    let (tx, mut rx) = mpsc::channel::<Queued<R>>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let result = write(&pool, &batch).await.map_err(|e| e.to_string());
            for q in batch {
                // The caller may have given up (its request was dropped): nothing to tell.
                let _ = q.done.send(result.clone());
            }
        }
    });
    tx
}

async fn write<R: Row>(pool: &AnyPool, batch: &[Queued<R>]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for q in batch {
        q.record.insert(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
