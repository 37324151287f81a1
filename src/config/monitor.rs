//! `[missed_block_log]` and `[monitor]`: where missed-block records are written and how a missed
//! block is recovered. A checked value is one the log writer and the recovery loop can run with.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{defaults::*, ByteSize, ConfigError, HumanDuration};

/// `[missed_block_log]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissedBlockLogConfig {
    /// The JSON-lines file; `""` writes no file (records stay in the state database).
    pub path: PathBuf,
    /// The file is rotated once it passes this size.
    pub rotation_size: ByteSize,
    /// Rotated files older than this many days are removed (0: never).
    pub retention_days: u32,
    /// Rotated files are gzip-compressed.
    pub compress: bool,
    /// Records are written once this many are waiting…
    pub batch_size: usize,
    /// …or this long after the last write, and at shutdown.
    pub batch_timeout: HumanDuration,
    /// Each missed block is also logged on stderr at warn level (otherwise at debug).
    pub console: bool,
}

impl Default for MissedBlockLogConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_MISSED_BLOCK_LOG),
            rotation_size: DEFAULT_ROTATION_SIZE,
            retention_days: DEFAULT_RETENTION_DAYS,
            compress: true,
            batch_size: DEFAULT_LOG_BATCH_SIZE,
            batch_timeout: DEFAULT_LOG_BATCH_TIMEOUT,
            console: true,
        }
    }
}

/// `[monitor]`: how a block that no provider could serve is recovered.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Recovery attempts (each a call that asks every usable provider, those that failed last)
    /// before the block is declared unrecovered; it is still asked for afterwards.
    pub retry_attempts: u32,
    /// The wait between two recovery attempts.
    pub retry_delay: HumanDuration,
    /// A streak of this many missed blocks in a row is logged at error (and alerted on).
    pub alert_threshold: u64,
    /// Recover missed blocks with dedicated attempts, `retry_delay` apart; when off, the stream
    /// asks for the block it waits on at every poll, like any other.
    pub enable_recovery: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            retry_attempts: DEFAULT_RETRY_ATTEMPTS,
            retry_delay: DEFAULT_RETRY_DELAY,
            alert_threshold: DEFAULT_ALERT_THRESHOLD,
            enable_recovery: true,
        }
    }
}

impl MissedBlockLogConfig {
    /// Checks the rotation and batching knobs (only when a file is written).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let log = self;
        if !log.path.as_os_str().is_empty() {
            if log.rotation_size.0 < 1000 {
                return Err(ConfigError::invalid(
                    "missed_block_log.rotation_size",
                    "must be at least 1KB",
                ));
            }
            if log.batch_size == 0 || log.batch_size > 100_000 {
                return Err(ConfigError::invalid(
                    "missed_block_log.batch_size",
                    "must be between 1 and 100000",
                ));
            }
            if log.batch_timeout.0.is_zero() {
                return Err(ConfigError::invalid(
                    "missed_block_log.batch_timeout",
                    "must be above zero",
                ));
            }
        }
        Ok(())
    }
}

impl MonitorConfig {
    /// Checks the recovery knobs.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        if m.enable_recovery && m.retry_attempts == 0 {
            return Err(ConfigError::invalid(
                "monitor.retry_attempts",
                "must be at least 1 (to make no recovery attempts, set monitor.enable_recovery = false)",
            ));
        }
        if m.retry_delay.0 < std::time::Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "monitor.retry_delay",
                "must be at least 10ms",
            ));
        }
        if m.alert_threshold == 0 {
            return Err(ConfigError::invalid(
                "monitor.alert_threshold",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
