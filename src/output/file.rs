//! The file sink: JSON lines appended to a file. A kill between a batch's write and its commit can
//! leave lines that the cursor does not cover: [`uncommitted_tail`] finds them on the next start so
//! they are adopted instead of written again.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use super::BlockSink;
use crate::model::{BlockRef, StreamEvent};

/// How much of a file's end is read to find uncommitted lines: far more than one batch.
const TAIL_BYTES: u64 = 8 << 20;

/// Block lines appended to a file. On open, a partial last line (a write cut off by a kill) is
/// removed; on start, lines after the committed cursor are found by [`uncommitted_tail`].
pub struct FileSink {
    file: Mutex<File>,
    path: PathBuf,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .finish()
    }
}

impl FileSink {
    /// Opens (creating it and its folder if needed) the file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        drop_partial_line(&mut file, path)?;
        Ok(Self {
            file: Mutex::new(file),
            path: path.to_owned(),
        })
    }
}

impl BlockSink for FileSink {
    fn write(&self, events: &[StreamEvent]) -> io::Result<()> {
        let buf = super::lines(events)?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&buf)?;
        file.flush()
    }

    fn uncommitted(
        &self,
        chain: &str,
        cursor: Option<BlockRef>,
    ) -> io::Result<Option<Vec<StreamEvent>>> {
        let tail = uncommitted_tail(&self.path, chain, cursor)?;
        if tail.is_none() {
            tracing::warn!(chain = %chain, cursor = ?cursor.map(|c| c.number),
                "the block output file does not contain the cursor's block; not reconciling it");
        }
        Ok(tail)
    }

    fn sync(&self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_data()
    }
}

fn drop_partial_line(file: &mut File, path: &Path) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last complete line's end.
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        None => return Ok(()),
    };
    tracing::warn!(path = %path.display(), bytes = len - keep, "removing a partial last line from the block output");
    file.set_len(keep)
}

/// The lines of `chain` in the file at `path` that come after the committed `cursor` block (or all of
/// the chain's lines in the file's tail when there is no cursor), oldest first.
///
/// Returns `None` when there is a cursor but its line is not in the file's tail: the file was replaced
/// or truncated, and nothing in it can be trusted to extend the cursor.
pub fn uncommitted_tail(
    path: &Path,
    chain: &str,
    cursor: Option<BlockRef>,
) -> io::Result<Option<Vec<StreamEvent>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut reader = io::BufReader::new(file);
    if start > 0 {
        let mut skipped = Vec::new();
        reader.read_until(b'\n', &mut skipped)?;
    }
    let mut events = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<StreamEvent>(&line) {
            Ok(e) if e.chain() == chain => events.push(e),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable line in the block output")
            }
        }
    }
    let Some(cursor) = cursor else {
        return Ok(Some(events));
    };
    let at = events
        .iter()
        .rposition(|e| matches!(e, StreamEvent::Block(b) if b.block_ref() == cursor));
    Ok(at.map(|i| events.split_off(i + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BlockLine;
    use alloy_primitives::B256;

    fn line(chain: &str, n: u64, fork: u8) -> StreamEvent {
        StreamEvent::Block(BlockLine {
            chain: chain.into(),
            block_number: n,
            hash: B256::repeat_byte(fork.wrapping_add(n as u8)),
            parent_hash: B256::ZERO,
            timestamp: n,
            transactions: 0,
            provider: "p".into(),
            received_at: "2026-11-23T10:00:01.123Z".into(),
            lag_ms: 1,
        })
    }

    fn as_ref(e: &StreamEvent) -> BlockRef {
        match e {
            StreamEvent::Block(b) => b.block_ref(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn lines_round_trip_in_their_documented_shape() {
        let e = line("main", 7, 0);
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            text.starts_with(r#"{"type":"block","chain":"main","block_number":7,"hash":"0x07"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<StreamEvent>(&text).unwrap(), e);
    }

    #[test]
    fn finds_lines_after_the_cursor_and_repairs_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let out = FileSink::open(&path).unwrap();
        let lines = [
            line("a", 1, 0),
            line("b", 1, 0),
            line("a", 2, 0),
            line("a", 3, 0),
        ];
        out.write(&lines).unwrap();
        drop(out);
        // A kill in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"type\":\"block\",\"cha").unwrap();
        drop(f);
        let out = FileSink::open(&path).unwrap();
        drop(out);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 4);

        let tail = uncommitted_tail(&path, "a", Some(as_ref(&lines[0])))
            .unwrap()
            .unwrap();
        assert_eq!(tail, vec![lines[2].clone(), lines[3].clone()]);
        let tail = uncommitted_tail(&path, "a", Some(as_ref(&lines[3])))
            .unwrap()
            .unwrap();
        assert!(tail.is_empty());
        assert_eq!(
            uncommitted_tail(&path, "a", None).unwrap().unwrap().len(),
            3
        );
        let foreign = as_ref(&line("a", 9, 0));
        assert!(uncommitted_tail(&path, "a", Some(foreign))
            .unwrap()
            .is_none());
    }
}
