//! `[cluster]`: where the agent keeps its state — its own SQLite file (one agent, the default) or a
//! PostgreSQL database shared by several agents, which then lead the chains in turn under leases.
//! A checked value is one the lease manager can run with: leases renewed well before they expire.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{defaults::*, ConfigError, HumanDuration};

/// `cluster.store`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `agent.state_path`, a SQLite file: one agent.
    #[default]
    Sqlite,
    /// `cluster.url`, a PostgreSQL database: several agents, each chain led by one at a time.
    Postgres,
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where the state is kept.
    pub store: StoreKind,
    /// The PostgreSQL connection string (`postgres://user:password@host:port/database?…` or
    /// `host=… user=… …`), for `store = "postgres"`. A secret: never shown with its password.
    pub url: String,
    /// This agent's name among the replicas; empty: the host name and the process id.
    pub instance: String,
    /// How long a chain's lease lasts without a renewal (by PostgreSQL's clock): the longest a
    /// chain goes unled after its leader dies.
    pub lease_ttl: HumanDuration,
    /// How often leases are renewed and the replicas' shares recomputed.
    pub renew_every: HumanDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Sqlite,
            url: String::new(),
            instance: String::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            renew_every: DEFAULT_RENEW_EVERY,
        }
    }
}

impl ClusterConfig {
    /// Whether several agents share the state.
    pub fn shared(&self) -> bool {
        self.store == StoreKind::Postgres
    }

    /// This agent's instance name: the configured one, or `<host name>-<pid>`.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "blockwatch".to_owned());
        format!("{host}-{}", std::process::id())
    }

    /// The secrets of `url`: its password (in either form), and the whole value when it has one.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = password_of(&self.url) {
            out.push(self.url.clone());
            out.push(p);
        }
        out
    }

    /// Checks the store's settings: a URL for PostgreSQL (and none for SQLite), an instance name
    /// fit for a label, and a renewal at most a third of the lease's time to live, so that two
    /// renewals can fail before a leader steps down.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.store {
            StoreKind::Postgres if self.url.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    "cluster.url",
                    "is empty: store = \"postgres\" needs the database's connection string, e.g. \"${BLOCKWATCH_PG_URL}\"",
                ))
            }
            StoreKind::Postgres => {
                let lower = self.url.to_ascii_lowercase();
                let url_form =
                    lower.starts_with("postgres://") || lower.starts_with("postgresql://");
                if !url_form && !self.url.contains('=') {
                    return Err(ConfigError::invalid(
                        "cluster.url",
                        "is not a PostgreSQL connection string: write postgres://user:password@host:5432/database or host=… user=… dbname=…",
                    ));
                }
            }
            StoreKind::Sqlite if !self.url.is_empty() => {
                return Err(ConfigError::invalid(
                    "cluster.url",
                    "is set but cluster.store is \"sqlite\": set store = \"postgres\" to share the state, or remove the url",
                ))
            }
            StoreKind::Sqlite => {}
        }
        if self.instance.len() > MAX_INSTANCE_LEN
            || !self
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(ConfigError::invalid(
                "cluster.instance",
                format!(
                    "{:?}: at most {MAX_INSTANCE_LEN} letters, digits, '-', '_', '.' or ':'",
                    self.instance
                ),
            ));
        }
        let (ttl, every) = (self.lease_ttl.0, self.renew_every.0);
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(600) {
            return Err(ConfigError::invalid(
                "cluster.lease_ttl",
                format!("{} is out of range: between 1s and 10m", self.lease_ttl),
            ));
        }
        if every < Duration::from_millis(100) || every * 3 > ttl {
            return Err(ConfigError::invalid(
                "cluster.renew_every",
                format!(
                    "{} is out of range: at least 100ms and at most a third of lease_ttl ({}), so that a leader can miss two renewals before it steps down",
                    self.renew_every, self.lease_ttl
                ),
            ));
        }
        Ok(())
    }
}

/// The password in a PostgreSQL connection string, in URL (`postgres://user:pw@…`) or key/value
/// (`password=pw`, `password='p w'`) form.
pub fn password_of(url: &str) -> Option<String> {
    if let Ok(u) = url::Url::parse(url) {
        if matches!(u.scheme(), "postgres" | "postgresql") {
            let from_query = u
                .query_pairs()
                .find(|(k, _)| k == "password")
                .map(|(_, v)| v.into_owned());
            let from_user = u.password().map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            });
            return from_user.or(from_query).filter(|p| !p.is_empty());
        }
    }
    let at = url.find("password")?;
    let rest = url[at + "password".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let value = match rest.strip_prefix('\'') {
        Some(quoted) => quoted.split('\'').next().unwrap_or_default(),
        None => rest.split_whitespace().next().unwrap_or_default(),
    };
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_both_forms() {
        assert_eq!(
            password_of("postgres://bw:s3cr%40t@db:5432/bw").as_deref(),
            Some("s3cr@t")
        );
        assert_eq!(
            password_of("postgresql://bw@db/bw?password=hunter22").as_deref(),
            Some("hunter22")
        );
        assert_eq!(password_of("postgres://bw@db/bw"), None);
        assert_eq!(
            password_of("host=db user=bw password=hunter22 dbname=bw").as_deref(),
            Some("hunter22")
        );
        assert_eq!(
            password_of("host=db password = 'a b c' dbname=bw").as_deref(),
            Some("a b c")
        );
        assert_eq!(password_of("host=db dbname=bw"), None);
    }

    #[test]
    fn renewals_must_fit_the_lease_three_times() {
        let mut c = ClusterConfig {
            store: StoreKind::Postgres,
            url: "postgres://bw@127.0.0.1/bw".into(),
            ..Default::default()
        };
        c.validate().unwrap();
        c.renew_every = HumanDuration::from_secs(4);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("cluster.renew_every") && e.contains("third"),
            "{e}"
        );
        c.renew_every = HumanDuration::from_secs(2);
        c.lease_ttl = HumanDuration::from_millis(500);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster.lease_ttl"));
    }

    #[test]
    fn a_store_and_its_url_go_together() {
        let c = ClusterConfig {
            store: StoreKind::Postgres,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster.url"));
        let c = ClusterConfig {
            url: "postgres://bw@db/bw".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("\"sqlite\""));
        let c = ClusterConfig {
            store: StoreKind::Postgres,
            url: "mysql://db".into(),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not a PostgreSQL"));
        let c = ClusterConfig {
            instance: "a b".into(),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster.instance"));
    }
}
