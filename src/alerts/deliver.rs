//! Delivery: every message is logged and is a span event; each channel then gets it through its own
//! bounded queue and task, which retries with backoff and counts what it delivers and gives up on.
//! A slow or dead channel never blocks the rules, the block stream or the other channels.

use std::{path::PathBuf, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use opentelemetry::KeyValue;
use tokio::{io::AsyncWriteExt, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    email::{Mailer, SendError},
    Notification, Status,
};
use crate::{
    config::{
        alerts::redact_channel_url, AlertsConfig, ChannelConfig, ChannelKind, SmtpError, Tier,
    },
    redact::Redactor,
    telemetry::{metrics::attr, Metrics},
};

/// Messages waiting per channel; more are dropped (and counted as failed).
const QUEUE: usize = 256;
/// Time allowed for one HTTP delivery.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for any one delivery attempt (an SMTP server that goes quiet included).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest wait between two delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a failed delivery is retried.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    /// Attempts after the first.
    retries: usize,
    /// The first wait; it doubles, with jitter.
    first: Duration,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(Arc<reqwest::Error>),
    /// The request failed; `url` is the redacted URL (reqwest's own message would quote it).
    #[error("{url}: {kind}")]
    Http { url: String, kind: &'static str },
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Email(#[from] SendError),
    #[error(transparent)]
    Smtp(SmtpError),
    #[error("no SMTP transport")]
    NoMailer,
    #[error("cannot write {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DeliveryError {
    /// Worth another attempt: anything but a refusal that will not change (an HTTP 4xx other
    /// than 408 and 429).
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Status(s) => !(400..500).contains(s) || *s == 408 || *s == 429,
            _ => true,
        }
    }
}

struct Queue {
    label: String,
    min_severity: Tier,
    tx: mpsc::Sender<Arc<Notification>>,
}

/// Hands each message to the channels whose `min_severity` it reaches.
pub struct Dispatcher {
    queues: Vec<Queue>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field(
                "channels",
                &self.queues.iter().map(|q| &q.label).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One channel's sender.
struct Channel {
    label: String,
    cfg: ChannelConfig,
    /// The HTTP client (`Err`: it could not be built, and HTTP channels fail with why).
    http: Result<reqwest::Client, Arc<reqwest::Error>>,
    /// The email channel's transport (its settings were checked with the config, so it builds).
    mailer: Option<Result<Mailer, SmtpError>>,
}

impl Dispatcher {
    /// Starts a delivery task per channel of `cfg` (they stop at `cancel`).
    pub fn start(
        cfg: &AlertsConfig,
        redactor: Arc<Redactor>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let retry = RetryPolicy {
            retries: cfg.delivery_retries as usize,
            first: cfg.delivery_backoff.0,
        };
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // A redirect could carry the webhook's headers to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("blockwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Arc::new);
        let mut queues = Vec::new();
        for (i, c) in cfg.channels.iter().enumerate() {
            let label = c.label(i, &cfg.channels);
            let (tx, rx) = mpsc::channel(QUEUE);
            let mailer = (c.kind == ChannelKind::Email).then(|| c.smtp().map(Mailer::new));
            let channel = Channel {
                label: label.clone(),
                cfg: c.clone(),
                http: http.clone(),
                mailer,
            };
            tokio::spawn(channel.run(rx, retry, metrics.clone(), redactor.clone(), cancel.clone()));
            queues.push(Queue {
                label,
                min_severity: c.min_severity,
                tx,
            });
        }
        Arc::new(Self { queues, metrics })
    }

    /// Logs `n`, makes it a span event, and queues it for each channel it is for.
    pub fn send(&self, n: Notification) {
        record(&n);
        let n = Arc::new(n);
        for q in self.queues.iter().filter(|q| n.tier >= q.min_severity) {
            if let Err(e) = q.tx.try_send(n.clone()) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "its queue is full",
                    mpsc::error::TrySendError::Closed(_) => "it has stopped",
                };
                tracing::error!(channel = %q.label, rule = n.rule.as_str(), "alert not queued for its channel: {why}");
                self.metrics
                    .alerts_failed
                    .add(1, &[KeyValue::new(attr::CHANNEL, q.label.clone())]);
            }
        }
    }
}

/// The alert as a log record (warn, error from critical) and an `alert` span event.
fn record(n: &Notification) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "alert",
        otel.name = "alert",
        blockwatch.chain = %n.chain,
        blockwatch.alert.rule = n.rule.as_str(),
    );
    span.add_event(
        "alert",
        vec![
            KeyValue::new("rule", n.rule.as_str()),
            KeyValue::new("tier", n.tier.as_str()),
            KeyValue::new("status", n.status.as_str()),
            KeyValue::new("chain", n.chain.clone()),
            KeyValue::new("provider", n.provider.clone().unwrap_or_default()),
        ],
    );
    span.in_scope(|| {
        macro_rules! log {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    rule = n.rule.as_str(), tier = n.tier.as_str(), status = n.status.as_str(),
                    chain = %n.chain, provider = n.provider.as_deref(), since = %n.since,
                    what = %n.what, "alert"
                )
            };
        }
        match (n.status, n.tier) {
            (Status::Resolved, _) => log!(tracing::Level::INFO),
            (Status::Firing, Tier::Warning) => log!(tracing::Level::WARN),
            (Status::Firing, _) => log!(tracing::Level::ERROR),
        }
    });
}

/// Discord embed colours by tier, and for a resolution.
fn colour(n: &Notification) -> u32 {
    match (n.status, n.tier) {
        (Status::Resolved, _) => 0x2e_b8_86,
        (_, Tier::Warning) => 0xf2_c9_4c,
        (_, Tier::Critical) => 0xe0_5d_44,
        (_, Tier::Emergency) => 0x8b_1e_3f,
    }
}

/// The body POSTed to a channel of `kind`.
pub fn payload(kind: ChannelKind, n: &Notification) -> serde_json::Value {
    use serde_json::json;
    match kind {
        // Slack: `text` is the notification fallback, the block is what the channel shows.
        ChannelKind::Slack => json!({
            "text": n.title,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": truncate(&n.title, 150)}},
                {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&slack_escape(&n.text), 3000)}},
            ],
        }),
        // Discord: an embed, coloured by tier, linking to the dashboard.
        ChannelKind::Discord => {
            let mut embed = json!({
                "title": truncate(&n.title, 256),
                "description": truncate(&n.text, 4096),
                "color": colour(n),
                "timestamp": n.at,
            });
            if let Some(d) = &n.dashboard {
                embed["url"] = json!(d);
            }
            json!({"username": "blockwatch", "embeds": [embed]})
        }
        _ => serde_json::to_value(n).unwrap_or_default(),
    }
}

/// `text` with the characters Slack's mrkdwn gives a meaning to escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `s` cut to at most `max` characters (the apps refuse longer fields).
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

impl Channel {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Arc<Notification>>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
        redactor: Arc<Redactor>,
        cancel: CancellationToken,
    ) {
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            let backoff = ExponentialBuilder::default()
                .with_min_delay(retry.first)
                // Jitter adds up to the delay again: waits stay under MAX_BACKOFF.
                .with_max_delay((MAX_BACKOFF / 2).max(retry.first))
                .with_max_times(retry.retries)
                .with_jitter();
            let attempt = || async {
                tokio::time::timeout(ATTEMPT_TIMEOUT, self.deliver(&n))
                    .await
                    .unwrap_or(Err(DeliveryError::TimedOut(ATTEMPT_TIMEOUT)))
            };
            let delivered = attempt
                .retry(backoff)
                .sleep(tokio::time::sleep)
                .when(DeliveryError::retryable)
                .notify(|e, wait| {
                    tracing::warn!(channel = %self.label, rule = n.rule.as_str(),
                        error = %redactor.redact(&e.to_string()), retry_in_ms = wait.as_millis() as u64,
                        "alert delivery failed; retrying");
                });
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = delivered => r,
            };
            match result {
                Ok(()) => metrics.alerts_sent.add(
                    1,
                    &[
                        KeyValue::new(attr::CHANNEL, self.label.clone()),
                        KeyValue::new(attr::RULE, n.rule.as_str()),
                        KeyValue::new(attr::TIER, n.tier.as_str()),
                        KeyValue::new(attr::STATUS, n.status.as_str()),
                    ],
                ),
                Err(e) => {
                    tracing::error!(channel = %self.label, rule = n.rule.as_str(), retries = retry.retries,
                        error = %redactor.redact(&e.to_string()), "alert not delivered; giving up on this message");
                    metrics
                        .alerts_failed
                        .add(1, &[KeyValue::new(attr::CHANNEL, self.label.clone())]);
                }
            }
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        match self.cfg.kind {
            ChannelKind::Console => {
                let text = format!("ALERT {}\n{}\n", n.title, indent(&n.text));
                let mut err = tokio::io::stderr();
                // A failed write to stderr is nothing to retry.
                let _ = err.write_all(text.as_bytes()).await;
                let _ = err.flush().await;
                Ok(())
            }
            ChannelKind::File => {
                let path = self.cfg.path.clone().unwrap_or_default();
                let file_err = |source| DeliveryError::File {
                    path: path.clone(),
                    source,
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await.map_err(file_err)?;
                }
                let mut line = serde_json::to_vec(n).unwrap_or_default();
                line.push(b'\n');
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .map_err(file_err)?;
                f.write_all(&line).await.map_err(file_err)?;
                f.flush().await.map_err(file_err)
            }
            ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Discord => {
                let url = self.cfg.url.as_deref().unwrap_or_default();
                let http = self
                    .http
                    .as_ref()
                    .map_err(|e| DeliveryError::HttpClient(e.clone()))?;
                let mut req = http.post(url).json(&payload(self.cfg.kind, n));
                for (k, v) in &self.cfg.headers {
                    req = req.header(k, v);
                }
                let shown = redact_channel_url(url);
                let resp = req.send().await.map_err(|e| {
                    // reqwest quotes the URL: say only where, and what kind of failure.
                    let kind = if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "cannot connect"
                    } else {
                        "request failed"
                    };
                    DeliveryError::Http { url: shown, kind }
                })?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(DeliveryError::Status(resp.status().as_u16()))
                }
            }
            ChannelKind::Email => match &self.mailer {
                Some(Ok(m)) => Ok(m.send(n).await?),
                Some(Err(e)) => Err(DeliveryError::Smtp(e.clone())),
                None => Err(DeliveryError::NoMailer),
            },
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{rules::Condition, Rule};

    fn notification() -> Notification {
        let c = Condition {
            rule: Rule::ProvidersDown,
            chain: "main net & co".into(),
            provider: None,
            tier: Tier::Critical,
            what: "2 of 3 providers down: <a>, <b>".into(),
            action: "x".repeat(5000),
        };
        Notification::new(
            Status::Firing,
            &c,
            Tier::Critical,
            std::time::SystemTime::now(),
            "https://grafana.example.com/",
        )
    }

    #[test]
    fn payloads_fit_each_app() {
        let n = notification();
        assert_eq!(
            n.dashboard.as_deref(),
            Some("https://grafana.example.com/d/blockwatch-providers?var-chain=main+net+%26+co")
        );
        let slack = payload(ChannelKind::Slack, &n);
        let section = slack["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;a&gt;") && !section.contains("<a>"));
        assert!(section.chars().count() <= 3000);
        let discord = payload(ChannelKind::Discord, &n);
        let embed = &discord["embeds"][0];
        assert!(embed["description"].as_str().unwrap().chars().count() <= 4096);
        assert_eq!(embed["color"], 0xe0_5d_44);
        assert_eq!(embed["url"], n.dashboard.clone().unwrap());
        let webhook = payload(ChannelKind::Webhook, &n);
        assert_eq!(webhook["rule"], "providers_down");
        assert_eq!(webhook["tier"], "critical");
        assert_eq!(webhook["status"], "firing");
    }

    #[test]
    fn only_lasting_refusals_are_not_retried() {
        assert!(!DeliveryError::Status(404).retryable());
        assert!(!DeliveryError::Status(400).retryable());
        assert!(DeliveryError::Status(429).retryable());
        assert!(DeliveryError::Status(503).retryable());
        assert!(DeliveryError::TimedOut(ATTEMPT_TIMEOUT).retryable());
    }
}
