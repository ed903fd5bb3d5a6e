//! `last_used_at`, written behind: the request path only compares two integers
//! and, at most once per token per interval, queues a note; a background task
//! writes the notes to the store in batches.
//!
//! This module must never put a store write on the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::store::{TokenId, TokenStore};

/// The most notes written in one `touch`.
const BATCH: usize = 512;

enum Note {
    Used(TokenId, OffsetDateTime),
    Flush(oneshot::Sender<()>),
}

/// When a token's use was last noted, in Unix nanoseconds (an `i64` lasts until
/// 2262); lives in its cache entry, seeded from the stored `last_used_at` so a
/// reload does not write again early.
#[derive(Debug)]
pub(crate) struct LastNoted(AtomicI64);

impl LastNoted {
    pub(crate) fn new(last_used_at: Option<OffsetDateTime>) -> Self {
        let nanos =
            last_used_at.map(|t| i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX));
        Self(AtomicI64::new(nanos.unwrap_or(i64::MIN)))
    }
}

/// Queues token uses for the background writer.
#[derive(Debug)]
pub(crate) struct Usage {
    notes: mpsc::UnboundedSender<Note>,
    interval_ns: i64,
}

impl Usage {
    /// Starts the writer on the current tokio runtime.
    pub(crate) fn start(store: Arc<dyn TokenStore>, interval: Duration) -> Self {
        let (notes, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_behind(store, rx));
        Self {
            notes,
            interval_ns: i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// Notes a use of `id` at `now` (Unix nanoseconds), unless one was noted
    /// within the interval.
    pub(crate) fn used(&self, id: TokenId, last: &LastNoted, now_ns: i64) {
        let prev = last.0.load(Ordering::Relaxed);
        if now_ns.saturating_sub(prev) < self.interval_ns {
            return;
        }
        // One request per interval wins the right to write.
        if last
            .0
            .compare_exchange(prev, now_ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ns))
        {
            let _ = self.notes.send(Note::Used(id, at));
        }
    }

    /// Waits until every use noted before this call is written (or failed).
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.notes.send(Note::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_behind(store: Arc<dyn TokenStore>, mut rx: mpsc::UnboundedReceiver<Note>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushed = Vec::new();
    while let Some(note) = rx.recv().await {
        let mut next = Some(note);
        while let Some(note) = next.take() {
            match note {
                Note::Used(id, at) => batch.push((id, at)),
                Note::Flush(done) => flushed.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(error) = store.touch(&batch).await {
                tracing::warn!(%error, tokens = batch.len(), "recording token use failed");
            }
            batch.clear();
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
