//! The missed-block log: the records as JSON lines at `missed_block_log.path`, written in batches, rotated at
//! `rotation_size` (rotated files get a timestamp suffix and, with `compress`, gzip), and rotated files
//! older than `retention_days` removed (file-rotate does the rotation, compression and removal).
//!
//! The state database is the source: every record is stored there with the cursor, marked unlogged,
//! and this writer appends unlogged records to the file and then marks them logged. So a kill between
//! a miss and its flush loses nothing: the record is written on the next start. A record updated after
//! it was written (an open miss later recovered) is written again, with its final state.

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use file_rotate::{
    compression::Compression,
    suffix::{AppendTimestamp, FileLimit},
    ContentLimit, FileRotate,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::MissedBlockLogConfig,
    store::{StateStore, StoreError},
};

/// Records read from the database per write.
const CHUNK: usize = 1000;

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The directory could not be created.
    #[error("cannot create the missed-block log directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state database could not be read or updated.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The writer of the missed-block log.
pub struct MissedBlockLog {
    cfg: MissedBlockLogConfig,
    store: Arc<dyn StateStore>,
    file: Arc<Mutex<FileRotate<AppendTimestamp>>>,
    /// Told when records were stored.
    notify: Arc<Notify>,
    /// Reads of the state database for records to write.
    reads: Arc<std::sync::atomic::AtomicU64>,
}

/// What one write did.
#[derive(Clone, Copy, Debug)]
struct Written {
    /// It wrote records.
    wrote: bool,
    /// Records are left waiting (fewer than a batch, or the write failed).
    left: bool,
    /// It failed (the records stay in the state database).
    failed: bool,
}

impl std::fmt::Debug for MissedBlockLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MissedBlockLog")
            .field("path", &self.cfg.path)
            .finish()
    }
}

impl MissedBlockLog {
    /// Opens (creating its directory) the log `cfg` names, reading records from `store`.
    pub fn open(cfg: &MissedBlockLogConfig, store: Arc<dyn StateStore>) -> Result<Self, LogError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LogError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let limit = match cfg.retention_days {
            0 => FileLimit::Unlimited,
            days => FileLimit::Age(chrono::Duration::days(i64::from(days))),
        };
        let file = FileRotate::new(
            &cfg.path,
            AppendTimestamp::default(limit),
            // Rotate after a whole batch of lines, never inside one.
            ContentLimit::BytesSurpassed(
                usize::try_from(cfg.rotation_size.0).unwrap_or(usize::MAX),
            ),
            if cfg.compress {
                Compression::OnRotate(0)
            } else {
                Compression::None
            },
            None,
        );
        Ok(Self {
            cfg: cfg.clone(),
            store,
            file: Arc::new(Mutex::new(file)),
            notify: Arc::new(Notify::new()),
            reads: Arc::default(),
        })
    }

    /// The handle to tell the writer that records were stored.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Writes records as they come: a batch once `batch_size` wait, or `batch_timeout` after the
    /// last write, and everything left when `cancel` fires. Starts by writing what a previous run
    /// left. While nothing waits it sleeps until records are stored (no timer); a failed write is
    /// retried `batch_timeout` later, or when more records come.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_write = Instant::now();
        // What an earlier run stored but did not write.
        let mut waiting = self.write(true).await.left;
        loop {
            let due = last_write + self.cfg.batch_timeout.0;
            let force = tokio::select! {
                _ = cancel.cancelled() => {
                    self.write(true).await;
                    return;
                }
                _ = self.notify.notified() => false,
                _ = tokio::time::sleep_until(due.into()), if waiting => true,
            };
            let w = self.write(force).await;
            if w.wrote || w.failed {
                last_write = Instant::now();
            }
            waiting = w.left;
        }
    }

    /// Writes waiting records if there are `batch_size` of them, or any at all when `force`.
    async fn write(&self, force: bool) -> Written {
        let (store, file, batch) = (self.store.clone(), self.file.clone(), self.cfg.batch_size);
        let (path, reads) = (self.cfg.path.clone(), self.reads.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<Written, LogError> {
            let mut wrote = false;
            loop {
                reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let records = store.unlogged(CHUNK)?;
                if records.is_empty() || (!force && records.len() < batch) {
                    return Ok(Written {
                        wrote,
                        left: !records.is_empty(),
                        failed: false,
                    });
                }
                let mut text = String::new();
                for (_, _, json) in &records {
                    text.push_str(json);
                    text.push('\n');
                }
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(text.as_bytes())
                    .and_then(|()| f.flush())
                    .map_err(|source| LogError::Write {
                        path: path.clone(),
                        source,
                    })?;
                drop(f);
                store.mark_logged(&records)?;
                wrote = true;
                if records.len() < CHUNK {
                    return Ok(Written {
                        wrote,
                        left: false,
                        failed: false,
                    });
                }
            }
        })
        .await;
        let failed = Written {
            wrote: false,
            left: true,
            failed: true,
        };
        match done {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "missed-block log write failed; the records stay in the state database and are retried");
                failed
            }
            Err(e) => {
                tracing::error!(error = %e, "missed-block log task failed");
                failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Duration};

    use super::*;
    use crate::{config::units::HumanDuration, store::SqliteStore};

    /// Waits (in the test's paused time, 10 ms a step) until `f` holds, for at most `limit`.
    async fn within(limit: Duration, f: impl Fn() -> bool) -> bool {
        let start = tokio::time::Instant::now();
        while start.elapsed() < limit {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_writer_sleeps_and_a_record_stored_long_after_the_last_write_is_written_at_once(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
        let path = dir.path().join("missed.jsonl");
        let cfg = MissedBlockLogConfig {
            path: path.clone(),
            batch_timeout: HumanDuration::from_secs(60),
            ..Default::default()
        };
        let log = MissedBlockLog::open(&cfg, store.clone()).unwrap();
        let (reads, notify) = (log.reads.clone(), log.notifier());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(log.run(cancel.clone()));
        assert!(
            within(Duration::from_secs(1), || reads.load(Ordering::Relaxed)
                >= 1)
            .await
        );
        // Ten batch timeouts with nothing stored: no read after the one at start.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        // Fewer than a batch, but the last write is older than the timeout: written at once.
        store
            .save_missed(&[crate::model::readme_example("c")], None)
            .unwrap();
        notify.notify_one();
        let written =
            || std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"chain\":\"c\""));
        assert!(within(Duration::from_secs(5), written).await);
        cancel.cancel();
        task.await.unwrap();
    }
}
