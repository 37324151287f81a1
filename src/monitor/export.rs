//! Missed-block records out of the state database, as JSON or CSV (`blockwatch export`,
//! `GET /export`).

use std::str::FromStr;

use crate::model::MissedBlock;

/// A format name that is neither `json` nor `csv`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("format {0:?} is not supported: use \"json\" or \"csv\"")]
pub struct UnknownFormat(pub String);

/// A `since` that is neither Unix seconds nor an RFC 3339 time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("since {0:?} is neither Unix seconds nor an RFC 3339 time (2026-11-23T10:00:00Z)")]
pub struct BadSince(pub String);

/// Why records could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// JSON serialization failed.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// CSV serialization failed.
    #[error("{0}")]
    Csv(#[from] csv::Error),
    /// The CSV writer could not be flushed.
    #[error("{0}")]
    Flush(#[from] std::io::Error),
    /// The CSV text is not UTF-8.
    #[error("{0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// Most records one export returns (the oldest blocks first); narrow it with `chain` and `since`.
pub const MAX_RECORDS: usize = 1_000_000;

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A JSON array of missed-block records.
    Json,
    /// CSV with the record's columns and a header line.
    Csv,
}

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

impl Format {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Parses `since`: Unix seconds, or an RFC 3339 time (`2026-11-23T10:00:00Z`).
pub fn parse_since(s: &str) -> Result<u64, BadSince> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| BadSince(s.to_owned()))
}

/// Renders `records` in `format`.
pub fn render(records: &[MissedBlock], format: Format) -> Result<String, RenderError> {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(records)?;
            s.push('\n');
            Ok(s)
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(MissedBlock::CSV_HEADER)?;
            for r in records {
                w.write_record(r.csv_fields())?;
            }
            let bytes = w.into_inner().map_err(csv::IntoInnerError::into_error)?;
            Ok(String::from_utf8(bytes)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(chain: &str) -> MissedBlock {
        crate::model::readme_example(chain)
    }

    #[test]
    fn csv_has_the_record_columns_and_quotes_what_needs_it() {
        let csv = render(&[record("main,net")], Format::Csv).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("chain,block_number,reason,severity,expected_timestamp,actual_timestamp,recovery_attempts,recovered,missed_at")
        );
        assert_eq!(
            lines.next(),
            Some("\"main,net\",1001,NetworkLatency,Medium,1640995212,1640995220,1,true,1640995220")
        );
    }

    #[test]
    fn json_round_trips_and_since_takes_both_forms() {
        let json = render(&[record("a")], Format::Json).unwrap();
        let back: Vec<MissedBlock> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![record("a")]);
        assert_eq!(parse_since("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_since("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        assert!(parse_since("yesterday")
            .unwrap_err()
            .to_string()
            .contains("yesterday"));
        assert!("xml"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("xml"));
    }
}
