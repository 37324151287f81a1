//! An email channel's SMTP settings, read from its `[[alerts.channels]]` entry and checked: the URL
//! (scheme, host, port, TLS mode), the credentials in its user-info, the extra root certificates and
//! the addresses. Settings that pass are everything the mail transport needs: it cannot fail to be
//! built from them. Errors name the channel key at fault and never show the URL's secrets.

use lettre::{
    message::Mailbox,
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};

use super::alerts::{redact_channel_url, ChannelConfig};

/// A key of an email channel's config that is wrong, and what is wrong (secrets left out).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SmtpError {
    /// The key within the channel (`smtp_url`, `smtp_ca_file`, `from`, `to`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SmtpError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// The checked SMTP settings of an email channel.
#[derive(Clone)]
pub struct SmtpSettings {
    /// The server's host.
    pub host: String,
    /// The server's port (587 for STARTTLS, 25 in plain text, 465 for TLS unless the URL says).
    pub port: u16,
    /// STARTTLS required, TLS from the start, or none.
    pub tls: Tls,
    /// User and password from the URL's user-info (percent-decoded).
    pub credentials: Option<Credentials>,
    /// The sender.
    pub from: Mailbox,
    /// The recipients.
    pub to: Vec<Mailbox>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl ChannelConfig {
    /// The SMTP settings of this email channel: `smtp://` with STARTTLS required (port 587 by
    /// default), `smtp://…?tls=none` in plain text (port 25), or `smtps://` with TLS from the start
    /// (465); user and password from the URL; extra roots from `smtp_ca_file`.
    pub fn smtp(&self) -> Result<SmtpSettings, SmtpError> {
        let raw = self.smtp_url.as_deref().unwrap_or_default();
        let shown = redact_channel_url(raw);
        let url = url::Url::parse(raw)
            .map_err(|e| SmtpError::new("smtp_url", format!("{shown} is not a valid URL ({e})")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| SmtpError::new("smtp_url", format!("{shown} has no host")))?
            .to_owned();
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || -> Result<TlsParameters, SmtpError> {
            let mut b = TlsParameters::builder(host.clone());
            if let Some(path) = &self.smtp_ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    SmtpError::new(
                        "smtp_ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    SmtpError::new(
                        "smtp_ca_file",
                        format!("{} is not a PEM certificate: {e}", path.display()),
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| {
                SmtpError::new("smtp_url", format!("cannot set up TLS for {host}: {e}"))
            })
        };
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None | Some("required")) => (Tls::Required(params()?), 587),
            ("smtp", Some("none")) if !url.username().is_empty() => {
                return Err(SmtpError::new(
                    "smtp_url",
                    "tls=none would send the SMTP credentials in clear: use STARTTLS (smtp://) or TLS (smtps://), or no credentials",
                ))
            }
            ("smtp", Some("none")) => (Tls::None, 25),
            ("smtps", None) => (Tls::Wrapper(params()?), 465),
            (scheme, tls) => {
                return Err(SmtpError::new(
                    "smtp_url",
                    format!(
                        "{scheme}:// with tls={} is not supported: use smtp:// (STARTTLS required), \
                         smtp://…?tls=none (plain) or smtps:// (TLS)",
                        tls.unwrap_or("")
                    ),
                ))
            }
        };
        let credentials = (!url.username().is_empty()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            )
        });
        let mailbox = |key: &'static str, s: &str| {
            s.parse::<Mailbox>()
                .map_err(|e| SmtpError::new(key, format!("{s:?} is not an email address: {e}")))
        };
        let from = mailbox("from", self.from.as_deref().unwrap_or_default())?;
        let to = self
            .to
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SmtpSettings {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            credentials,
            from,
            to,
        })
    }
}
