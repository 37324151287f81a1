//! The email channel: SMTP through lettre, with STARTTLS (required, never opportunistic) or TLS, and
//! authentication from the URL's user-info.

use std::time::Duration;

use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};

use super::Notification;
use crate::config::{alerts::redact_channel_url, ChannelConfig};

/// Time allowed for one SMTP conversation.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A ready SMTP transport and the envelope.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// An error in a key of the channel's config: the key, and what is wrong (secrets left out).
pub type KeyError = (&'static str, String);

impl Mailer {
    /// The transport `cfg` describes: `smtp://` with STARTTLS required (port 587 by default),
    /// `smtp://…?tls=none` in plain text (port 25), or `smtps://` with TLS from the start (465);
    /// user and password from the URL; extra roots from `smtp_ca_file`.
    pub fn new(cfg: &ChannelConfig) -> Result<Self, KeyError> {
        let raw = cfg.smtp_url.as_deref().unwrap_or_default();
        let shown = redact_channel_url(raw);
        let url = url::Url::parse(raw)
            .map_err(|e| ("smtp_url", format!("{shown} is not a valid URL ({e})")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(("smtp_url", format!("{shown} has no host")))?
            .to_owned();
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || -> Result<TlsParameters, KeyError> {
            let mut b = TlsParameters::builder(host.clone());
            if let Some(path) = &cfg.smtp_ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    (
                        "smtp_ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    (
                        "smtp_ca_file",
                        format!("{} is not a PEM certificate: {e}", path.display()),
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build()
                .map_err(|e| ("smtp_url", format!("cannot set up TLS for {host}: {e}")))
        };
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None | Some("required")) => (Tls::Required(params()?), 587),
            ("smtp", Some("none")) if !url.username().is_empty() => {
                return Err((
                    "smtp_url",
                    "tls=none would send the SMTP credentials in clear: use STARTTLS (smtp://) or TLS (smtps://), or no credentials"
                        .to_owned(),
                ))
            }
            ("smtp", Some("none")) => (Tls::None, 25),
            ("smtps", None) => (Tls::Wrapper(params()?), 465),
            (scheme, tls) => {
                return Err((
                    "smtp_url",
                    format!(
                    "{scheme}:// with tls={} is not supported: use smtp:// (STARTTLS required), \
                         smtp://…?tls=none (plain) or smtps:// (TLS)",
                    tls.unwrap_or("")
                ),
                ))
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(url.port().unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if !url.username().is_empty() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            builder = builder.credentials(Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            ));
        }
        let mailbox = |key: &'static str, s: &str| {
            s.parse::<Mailbox>()
                .map_err(|e| (key, format!("{s:?} is not an email address: {e}")))
        };
        let from = mailbox("from", cfg.from.as_deref().unwrap_or_default())?;
        let to = cfg
            .to
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// Sends `n` as a plain-text mail; the error says what failed, without the URL's secrets.
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(&n.title)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(format!(
                "{}\n\n-- \nblockwatch alert ({} {})\n",
                n.text,
                n.rule.as_str(),
                n.status.as_str()
            ))
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}
