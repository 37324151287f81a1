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
    time::{Duration, Instant},
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
        })
    }

    /// The handle to tell the writer that records were stored.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Writes records as they come: a batch once `batch_size` wait, or `batch_timeout` after the
    /// last write; everything left when `cancel` fires. Starts by writing what a previous run left.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_write = Instant::now();
        // What an earlier run stored but did not write.
        self.write(true).await;
        loop {
            let timeout = self
                .cfg
                .batch_timeout
                .0
                .saturating_sub(last_write.elapsed())
                .max(Duration::from_millis(10));
            let force = tokio::select! {
                _ = cancel.cancelled() => {
                    self.write(true).await;
                    return;
                }
                _ = self.notify.notified() => false,
                _ = tokio::time::sleep(timeout) => true,
            };
            if self.write(force).await {
                last_write = Instant::now();
            }
        }
    }

    /// Writes waiting records if there are `batch_size` of them, or any at all when `force`;
    /// returns whether it wrote.
    async fn write(&self, force: bool) -> bool {
        let (store, file, batch) = (self.store.clone(), self.file.clone(), self.cfg.batch_size);
        let path = self.cfg.path.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<bool, LogError> {
            let mut wrote = false;
            loop {
                let records = store.unlogged(CHUNK)?;
                if records.is_empty() || (!force && records.len() < batch) {
                    return Ok(wrote);
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
                    return Ok(true);
                }
            }
        })
        .await;
        match done {
            Ok(Ok(wrote)) => wrote,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "missed-block log write failed; the records stay in the state database and are retried");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "missed-block log task failed");
                false
            }
        }
    }
}
