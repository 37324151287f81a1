//! The email channel: SMTP through lettre, with STARTTLS (required, never opportunistic) or TLS, and
//! authentication from the URL's user-info. The settings come checked from the config
//! ([`SmtpSettings`]), so a mailer is always built; only sending can fail, with a [`SendError`]
//! that never shows the URL's secrets.

use std::time::Duration;

use lettre::{
    message::{header::ContentType, Mailbox},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};

use super::Notification;
use crate::config::SmtpSettings;

/// Time allowed for one SMTP conversation.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message could not be put together.
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    /// The SMTP conversation failed.
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

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

impl Mailer {
    /// The transport `settings` describe.
    pub fn new(settings: SmtpSettings) -> Self {
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                .port(settings.port)
                .tls(settings.tls)
                .timeout(Some(SMTP_TIMEOUT));
        if let Some(credentials) = settings.credentials {
            builder = builder.credentials(credentials);
        }
        Self {
            transport: builder.build(),
            from: settings.from,
            to: settings.to,
        }
    }

    /// Sends `n` as a plain-text mail.
    pub async fn send(&self, n: &Notification) -> Result<(), SendError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(&n.title)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(format!(
            "{}\n\n-- \nblockwatch alert ({} {})\n",
            n.text,
            n.rule.as_str(),
            n.status.as_str()
        ))?;
        self.transport.send(message).await?;
        Ok(())
    }
}
