//! Human-readable durations (`"250ms"`, `"12s"`, `"5m"`) and sizes (`"10MB"`) as config values.

use std::{fmt, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit (`ms`, `s`, `m`, `h`, or any unit humantime knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds a duration from milliseconds (for defaults).
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// Builds a duration from seconds (for defaults).
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

/// A duration that does not parse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// It does not start with a number.
    #[error(
        "invalid duration {0:?}: expected a number and a unit, e.g. \"250ms\", \"12s\", \"5m\""
    )]
    NoNumber(String),
    /// humantime refused it.
    #[error("invalid duration {given:?} ({source}): expected a number and a unit, e.g. \"250ms\", \"12s\", \"5m\"")]
    Invalid {
        /// The text.
        given: String,
        /// Why.
        source: humantime::DurationError,
    },
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.is_empty() || !trimmed.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            return Err(DurationError::NoNumber(s.to_owned()));
        }
        humantime::parse_duration(trimmed)
            .map(HumanDuration)
            .map_err(|source| DurationError::Invalid {
                given: s.to_owned(),
                source,
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes written as a number and a unit (`B`, `KB`, `MB`, `GB`; `KiB`, `MiB`, `GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A size that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// It does not start with a number.
    #[error("invalid size {0:?}: expected a number and a unit, e.g. \"512KB\", \"10MB\"")]
    NoNumber(String),
    /// The unit is not one of B, KB, MB, GB, KiB, MiB, GiB.
    #[error("invalid size {given:?}: unknown unit {unit:?}, expected a number and a unit, e.g. \"512KB\", \"10MB\"")]
    Unit {
        /// The text.
        given: String,
        /// The unit found.
        unit: String,
    },
    /// It does not fit in 64 bits.
    #[error("invalid size {0:?}: too large")]
    TooLarge(String),
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| SizeError::NoNumber(s.to_owned()))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            other => {
                return Err(SizeError::Unit {
                    given: s.to_owned(),
                    unit: other.to_owned(),
                })
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| SizeError::TooLarge(s.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1_000_000_000 && n % 1_000_000_000 == 0 {
            write!(f, "{}GB", n / 1_000_000_000)
        } else if n >= 1_000_000 && n % 1_000_000 == 0 {
            write!(f, "{}MB", n / 1_000_000)
        } else if n >= 1_000 && n % 1_000 == 0 {
            write!(f, "{}KB", n / 1_000)
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "12s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(12)
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
        assert!("12".parse::<HumanDuration>().is_err());
        assert!("fast".parse::<HumanDuration>().is_err());
        assert!("-1s".parse::<HumanDuration>().is_err());
        let err = "12x".parse::<HumanDuration>().unwrap_err().to_string();
        assert!(err.contains("\"12x\""), "{err}");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("10MB".parse::<ByteSize>().unwrap().0, 10_000_000);
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert_eq!("512".parse::<ByteSize>().unwrap().0, 512);
        assert!("ten".parse::<ByteSize>().is_err());
        assert!("10XB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(10_000_000).to_string(), "10MB");
    }
}
