//! `[alerts]`: the rules' thresholds, throttling, and the channels alerts are delivered to.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

/// An alert's tier, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// One provider down or degraded, a provider failing or slow, too many switches.
    Warning,
    /// Several providers down, a streak of missed blocks.
    Critical,
    /// The chain stalled, or no provider left.
    Emergency,
}

impl Tier {
    /// The name in texts, payloads and the `tier` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Warning => "warning",
            Tier::Critical => "critical",
            Tier::Emergency => "emergency",
        }
    }
}

/// `max_switches`: more than `count` provider switches within `window`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchLimit {
    /// Switches allowed within the window.
    pub count: u32,
    /// The window.
    pub window: HumanDuration,
}

/// `[alerts]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A chain without a new block for this long has stalled (emergency).
    pub no_new_block_after: HumanDuration,
    /// Provider switches per window before a warning.
    pub max_switches: SwitchLimit,
    /// Failed calls in a row on one provider before a warning.
    pub consecutive_failures: u32,
    /// A provider's failed share of calls over its score window above this is a warning.
    pub error_rate: f64,
    /// A provider's p95 latency over its score window above this is a warning.
    pub p95_latency: HumanDuration,
    /// At most one message per rule and target in this window (an escalation is sent at once).
    pub throttle: HumanDuration,
    /// Grafana's base URL: alert texts link to the dashboards when set.
    pub dashboard_url: String,
    /// A failed delivery is retried this many times…
    pub delivery_retries: u32,
    /// …first after this long, doubling (with jitter) up to 30 s.
    pub delivery_backoff: HumanDuration,
    /// Where alerts go; none: alerts are logged only.
    pub channels: Vec<ChannelConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            no_new_block_after: HumanDuration::from_secs(60),
            max_switches: SwitchLimit {
                count: 5,
                window: HumanDuration::from_secs(600),
            },
            consecutive_failures: 5,
            error_rate: 0.05,
            p95_latency: HumanDuration::from_secs(2),
            throttle: HumanDuration::from_secs(300),
            dashboard_url: String::new(),
            delivery_retries: 5,
            delivery_backoff: HumanDuration::from_secs(1),
            channels: Vec::new(),
        }
    }
}

/// What a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A line on stderr.
    Console,
    /// JSON lines appended to `path`.
    File,
    /// A JSON POST to `url`.
    Webhook,
    /// A Slack incoming webhook at `url`.
    Slack,
    /// A Discord webhook at `url`.
    Discord,
    /// Mail through `smtp_url`, from `from` to `to`.
    Email,
}

impl ChannelKind {
    /// The name in logs and the `channel` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Console => "console",
            ChannelKind::File => "file",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Discord => "discord",
            ChannelKind::Email => "email",
        }
    }
}

/// `[[alerts.channels]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// What it is.
    pub kind: ChannelKind,
    /// Alerts below this tier are not sent here.
    #[serde(default = "default_min_severity")]
    pub min_severity: Tier,
    /// webhook, slack, discord: where to POST (secret: redacted everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook: extra headers (values secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// file: the JSON-lines file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// email: `smtp://user:pass@host:587` (STARTTLS required), `smtps://…:465` (TLS), or
    /// `smtp://host:25?tls=none` (plain, for a relay on the same host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// email: a PEM file of extra root certificates to trust (a private CA), besides the public
    /// ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_ca_file: Option<PathBuf>,
    /// email: the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
}

fn default_min_severity() -> Tier {
    Tier::Warning
}

impl ChannelConfig {
    /// A name for logs and the `channel` attribute: the kind, and its index when several channels
    /// share it.
    pub fn label(&self, index: usize, all: &[ChannelConfig]) -> String {
        if all.iter().filter(|c| c.kind == self.kind).count() > 1 {
            format!("{}-{index}", self.kind.as_str())
        } else {
            self.kind.as_str().to_owned()
        }
    }
}

impl AlertsConfig {
    /// Secrets in the channels' URLs and headers, to be redacted everywhere.
    pub(super) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.channels {
            for url in [&c.url, &c.smtp_url].into_iter().flatten() {
                out.extend(channel_url_secrets(url));
            }
            out.extend(
                c.headers
                    .values()
                    .flat_map(|v| crate::redact::header_secrets(v)),
            );
        }
        out
    }

    /// Checks ranges and each channel's required keys.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.no_new_block_after.0.is_zero() {
            return Err(ConfigError::invalid(
                "alerts.no_new_block_after",
                "must be above zero",
            ));
        }
        if self.max_switches.count == 0 || self.max_switches.window.0.is_zero() {
            return Err(ConfigError::invalid(
                "alerts.max_switches",
                "count and window must be above zero",
            ));
        }
        if self.consecutive_failures == 0 {
            return Err(ConfigError::invalid(
                "alerts.consecutive_failures",
                "must be at least 1",
            ));
        }
        if !(self.error_rate > 0.0 && self.error_rate <= 1.0) {
            return Err(ConfigError::invalid(
                "alerts.error_rate",
                format!(
                    "{} is out of range: a share above 0, at most 1",
                    self.error_rate
                ),
            ));
        }
        if self.delivery_retries > 100 {
            return Err(ConfigError::invalid(
                "alerts.delivery_retries",
                "must be at most 100",
            ));
        }
        if self.delivery_backoff.0 < std::time::Duration::from_millis(10)
            || self.delivery_backoff.0 > std::time::Duration::from_secs(30)
        {
            return Err(ConfigError::invalid(
                "alerts.delivery_backoff",
                "must be between 10ms and 30s",
            ));
        }
        if self.p95_latency.0.is_zero() {
            return Err(ConfigError::invalid(
                "alerts.p95_latency",
                "must be above zero",
            ));
        }
        if !self.dashboard_url.is_empty() {
            let ok = url::Url::parse(&self.dashboard_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(ConfigError::invalid(
                    "alerts.dashboard_url",
                    "must be an http(s) URL, e.g. https://grafana.example.com",
                ));
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            let key = |k: &str| format!("alerts.channels[{i}].{k}");
            let need = |k: &str, present: bool| {
                if present {
                    Ok(())
                } else {
                    Err(ConfigError::invalid(
                        key(k),
                        format!("required for a {} channel", c.kind.as_str()),
                    ))
                }
            };
            match c.kind {
                ChannelKind::Console => {}
                ChannelKind::File => need("path", c.path.is_some())?,
                ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Discord => {
                    need("url", c.url.is_some())?;
                    let url = c.url.as_deref().unwrap_or_default();
                    let ok =
                        url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                    if !ok {
                        return Err(ConfigError::invalid(
                            key("url"),
                            format!("{} is not an http(s) URL", redact_channel_url(url)),
                        ));
                    }
                }
                ChannelKind::Email => {
                    need("smtp_url", c.smtp_url.is_some())?;
                    need("from", c.from.is_some())?;
                    need("to", !c.to.is_empty())?;
                    c.smtp()
                        .map_err(|e| ConfigError::invalid(key(e.key), e.message))?;
                }
            }
            for (name, value) in &c.headers {
                let ok = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && http::HeaderValue::from_str(value).is_ok();
                if !ok {
                    return Err(ConfigError::invalid(
                        key(&format!("headers.{name}")),
                        "not a valid HTTP header name and value",
                    ));
                }
            }
            if !c.headers.is_empty() && c.kind != ChannelKind::Webhook {
                return Err(ConfigError::invalid(
                    key("headers"),
                    "only a webhook channel takes headers",
                ));
            }
        }
        Ok(())
    }
}

/// A channel's URL as logs and errors show it: scheme and host only (webhook paths are tokens).
pub fn redact_channel_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}/{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            crate::redact::REDACTED
        ),
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// The parts of a channel URL that are credentials: user-info, query values, and path segments
/// that look like ids or tokens (8 characters or more with a digit, or 20 or more).
fn channel_url_secrets(url: &str) -> Vec<String> {
    // User-info and query values; the path has its own rule here (`services`, `webhooks` and the
    // like are no secrets, and would be replaced in every log line).
    let mut out = crate::redact::url_secrets(url, true);
    if let Ok(u) = url::Url::parse(url) {
        out.extend(
            u.path()
                .split('/')
                .filter(|s| {
                    (s.len() >= 8 && s.chars().any(|c| c.is_ascii_digit())) || s.len() >= 20
                })
                .map(str::to_owned),
        );
    }
    out
}
