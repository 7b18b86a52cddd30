//! Email delivery: the SMTP client (lettre, rustls) and the outbox sender.
//!
//! An adapter like `sftp`: it knows how to send, not what to say (that is
//! `report::mail`) nor when a run reports (that is `worker`).
//!
//! Invariants:
//! 1. Sending never blocks, slows or undoes an import: the sender is its
//!    own thread and reads the outbox from the store.
//! 2. A message's state is in the store after every attempt: a restart
//!    resumes exactly where the sender was.
//! 3. A message is retried with growing pauses (`smtp.retry_pause`,
//!    default 30 s, doubling to 1 h)
//!    until `smtp.retry_for` (default 48 h) has passed since it was
//!    queued, or until the server refuses it permanently (5xx).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};

use crate::config::Smtp;
use crate::report::mail::plan_attachment;
use crate::store::{Delivery, Message, Store};

/// An attachment (zipped) larger than this is left out; the report is
/// still in the account's `/errors` folder and on the status page.
const MAX_ATTACHMENT: u64 = 10 << 20;
/// Reports larger than this are not even read to be zipped.
const MAX_REPORT_READ: u64 = 512 << 20;
/// The longest pause between attempts, of mail, webhooks and SCIM alike.
pub(crate) const LONGEST_PAUSE: Duration = Duration::from_secs(3600);
/// The sender looks at the outbox at least this often (a run recorded by
/// another process queues its report without waking this one).
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0}")]
    Setup(String),
    #[error("{message}")]
    Send { message: String, permanent: bool },
}

/// A connected-on-demand SMTP client with the configured security.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
}

fn setup(message: impl Into<String>) -> MailError {
    MailError::Setup(message.into())
}

impl Mailer {
    pub fn new(smtp: &Smtp) -> Result<Mailer, MailError> {
        let from: Mailbox = smtp.from.parse().map_err(|e| {
            setup(format!(
                "smtp.from = \"{}\" is not an address: {e}",
                smtp.from
            ))
        })?;
        let mut tls = TlsParameters::builder(smtp.host.clone());
        if let Some(ca) = &smtp.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| setup(format!("smtp.ca_file {}: {e}", ca.display())))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                setup(format!(
                    "smtp.ca_file {} holds no PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| setup(format!("TLS settings: {e}")))?;
        let mut builder = SmtpTransport::builder_dangerous(smtp.host.as_str())
            .port(smtp.port)
            .timeout(Some(smtp.timeout))
            .tls(match smtp.security.as_str() {
                "tls" => Tls::Wrapper(tls),
                "none" => Tls::None,
                _ => Tls::Required(tls),
            });
        if let Some(user) = &smtp.username {
            let password = match &smtp.password_file {
                Some(p) => read_secret(p)?,
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Connects, says EHLO (with STARTTLS or TLS as configured, and logs
    /// in when a username is set) and quits: nothing is sent
    /// (`flagsync doctor`).
    pub fn test_connection(&self) -> Result<(), MailError> {
        match self.transport.test_connection() {
            Ok(true) => Ok(()),
            Ok(false) => Err(MailError::Send {
                message: "the server closed the connection after EHLO".into(),
                permanent: false,
            }),
            Err(e) => Err(MailError::Send {
                message: e.to_string(),
                permanent: e.is_permanent(),
            }),
        }
    }

    /// Sends one message; the server's answer on success. `id` makes its
    /// `Message-ID` (`<id@the sender's domain>`): the same on every retry,
    /// so a message the server took twice is one message to mail clients.
    pub fn send(
        &self,
        id: &str,
        to: &[String],
        subject: &str,
        text: &str,
        html: &str,
        attachment: Option<&Path>,
    ) -> Result<String, MailError> {
        // lettre adds Date and MIME-Version itself; strict mail servers
        // also want a Message-ID.
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .message_id(Some(format!("<{id}@{}>", self.from.email.domain())))
            .subject(subject);
        let mut valid = 0;
        let mut invalid = Vec::new();
        for address in to {
            match address.parse::<Mailbox>() {
                Ok(m) => {
                    builder = builder.to(m);
                    valid += 1;
                }
                Err(_) => invalid.push(address.clone()),
            }
        }
        if valid == 0 {
            return Err(MailError::Send {
                message: format!("no valid recipient address ({})", invalid.join(", ")),
                permanent: true,
            });
        }
        if !invalid.is_empty() {
            tracing::warn!(addresses = %invalid.join(", "), "invalid report addresses left out");
        }
        let body = MultiPart::alternative_plain_html(text.to_string(), html.to_string());
        let email = match attachment.and_then(attachment_of) {
            Some(a) => builder.multipart(MultiPart::mixed().multipart(body).singlepart(a)),
            None => builder.multipart(body),
        }
        .map_err(|e| MailError::Send {
            message: format!("the message cannot be built: {e}"),
            permanent: true,
        })?;
        match self.transport.send(&email) {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) => Err(MailError::Send {
                permanent: e.is_permanent(),
                message: describe(&e),
            }),
        }
    }
}

/// lettre's error with its causes, on one line.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn read_secret(path: &Path) -> Result<String, MailError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| setup(format!("smtp.password_file {}: {e}", path.display())))
}

/// The error report as an attachment: as it is when small, zipped when
/// larger than `report::mail::ZIP_ABOVE` (as `plan_attachment` decides), left out when even that is too large.
fn attachment_of(path: &Path) -> Option<lettre::message::SinglePart> {
    let plan = plan_attachment(path)?;
    if !plan.zipped {
        let bytes = std::fs::read(path).ok()?;
        let kind = ContentType::parse("text/csv; charset=utf-8").ok()?;
        return Some(Attachment::new(plan.name).body(bytes, kind));
    }
    if plan.size > MAX_REPORT_READ {
        tracing::warn!(path = %path.display(), size = plan.size, "the error report is too large to attach");
        return None;
    }
    let inner = path.file_name()?.to_string_lossy().into_owned();
    let zipped = match zip_one(path, &inner) {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the error report cannot be zipped");
            return None;
        }
    };
    if zipped.len() as u64 > MAX_ATTACHMENT {
        tracing::warn!(path = %path.display(), size = zipped.len(), "the zipped error report is too large to attach");
        return None;
    }
    let kind = ContentType::parse("application/zip").ok()?;
    Some(Attachment::new(plan.name).body(zipped, kind))
}

fn zip_one(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer
        .start_file(name, options)
        .map_err(std::io::Error::other)?;
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut writer)?;
    writer.flush()?;
    let cursor = writer.finish().map_err(std::io::Error::other)?;
    Ok(cursor.into_inner())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The pause after `attempts` failed attempts: `first`, doubling each
/// time, up to [`LONGEST_PAUSE`] (mail, webhooks and SCIM targets alike).
pub(crate) fn pause_after(first: Duration, attempts: u32) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    doubled.min(LONGEST_PAUSE)
}

/// Stops the sender. (It finds new messages itself, every [`POLL`]: they
/// are queued in run transactions, possibly by another process.)
#[derive(Clone)]
pub struct OutboxHandle {
    wake: Sender<()>,
    stopping: Arc<AtomicBool>,
}

impl OutboxHandle {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
    }
}

/// Starts the sender thread.
pub fn start_sender(store: Arc<Store>, smtp: Smtp) -> (OutboxHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("outbox".into())
        .spawn(move || run_sender(&store, &smtp, &rx, &flag))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the outbox sender cannot start; reports stay queued");
            std::thread::spawn(|| ())
        });
    (OutboxHandle { wake: tx, stopping }, thread)
}

fn run_sender(store: &Store, smtp: &Smtp, wake: &Receiver<()>, stopping: &AtomicBool) {
    while !stopping.load(Ordering::SeqCst) {
        let next_due = match deliver_due(store, smtp, stopping) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "the outbox cannot be read");
                Some(unix_now() + 60)
            }
        };
        let wait = next_due
            .map(|due| Duration::from_secs(due.saturating_sub(unix_now())))
            .unwrap_or(POLL)
            .min(POLL);
        match wake.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Attempts every message that is due; returns when the next one is due.
fn deliver_due(
    store: &Store,
    smtp: &Smtp,
    stopping: &AtomicBool,
) -> Result<Option<u64>, crate::store::StoreError> {
    let mut next_due: Option<u64> = None;
    let mut mailer: Option<Result<Mailer, String>> = None;
    for mut message in store.pending_messages()? {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        if message.next_attempt > unix_now() {
            next_due = Some(next_due.map_or(message.next_attempt, |n| n.min(message.next_attempt)));
            continue;
        }
        let mailer = mailer.get_or_insert_with(|| Mailer::new(smtp).map_err(|e| e.to_string()));
        let outcome = match mailer {
            Ok(m) => m.send(
                &format!("flagsync.{}.{}", message.queued_unix, message.id),
                &message.to,
                &message.subject,
                &message.text,
                &message.html,
                message.attachment.as_deref().map(Path::new),
            ),
            Err(e) => Err(MailError::Setup(e.clone())),
        };
        record_attempt(&mut message, outcome, smtp);
        if message.state == Delivery::Failing {
            next_due = Some(next_due.map_or(message.next_attempt, |n| n.min(message.next_attempt)));
        }
        store.update_message(&message)?;
    }
    Ok(next_due)
}

fn record_attempt(message: &mut Message, outcome: Result<String, MailError>, smtp: &Smtp) {
    let retry_for = smtp.retry_for;
    message.attempts += 1;
    let now = unix_now();
    match outcome {
        Ok(reply) => {
            tracing::info!(id = message.id, feed = %message.feed, subject = %message.subject, "report sent");
            message.state = Delivery::Sent;
            message.sent_at =
                Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
            message.server_reply = Some(reply);
            message.last_error = None;
        }
        Err(e) => {
            let permanent = matches!(
                e,
                MailError::Send {
                    permanent: true,
                    ..
                }
            );
            let expired = now.saturating_sub(message.queued_unix) >= retry_for.as_secs();
            message.last_error = Some(e.to_string());
            if permanent || expired {
                tracing::error!(id = message.id, feed = %message.feed, error = %e, "report given up");
                message.state = Delivery::GaveUp;
            } else {
                message.state = Delivery::Failing;
                message.next_attempt = now
                    + pause_after(smtp.retry_pause, message.attempts)
                        .as_secs()
                        .max(1);
                tracing::warn!(id = message.id, feed = %message.feed, error = %e, attempt = message.attempts, "report not sent; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_report_is_zipped_and_unzips_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hr.csv.errors.csv");
        let text = "line,reasons,Employee ID\n".to_string() + &"7,bad email,E1\n".repeat(200_000);
        std::fs::write(&path, &text).unwrap();
        let zipped = zip_one(&path, "hr.csv.errors.csv").unwrap();
        assert!(zipped.len() < text.len() / 10, "{} bytes", zipped.len());
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
        let mut back = String::new();
        std::io::Read::read_to_string(
            &mut archive.by_name("hr.csv.errors.csv").unwrap(),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn the_mail_text_and_the_attachment_agree_on_zipping() {
        let dir = tempfile::tempdir().unwrap();
        for (rows, zipped) in [(10, false), (200_000, true)] {
            let path = dir.path().join(format!("{rows}.errors.csv"));
            std::fs::write(&path, "7,bad email,E1\n".repeat(rows)).unwrap();
            let label = crate::report::mail::attachment_label(&path).unwrap();
            assert_eq!(label.ends_with(".zip"), zipped, "{label}");
            let part = attachment_of(&path).expect("attached");
            let headers = String::from_utf8_lossy(&part.formatted()).to_string();
            assert!(
                headers.contains(&label),
                "{label} in {}",
                &headers[..300.min(headers.len())]
            );
            assert_eq!(headers.contains("application/zip"), zipped);
        }
    }

    #[test]
    fn pauses_grow_to_an_hour() {
        let first = Duration::from_secs(30);
        assert_eq!(pause_after(first, 1), Duration::from_secs(30));
        assert_eq!(pause_after(first, 2), Duration::from_secs(60));
        assert_eq!(pause_after(first, 5), Duration::from_secs(480));
        assert_eq!(pause_after(first, 30), LONGEST_PAUSE);
    }
}
