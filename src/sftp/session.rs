//! One SSH connection: who the client is (password or key, allow-list,
//! lockout, session slots) and the one thing it may do: the `sftp`
//! subsystem. Shell, exec, port and agent forwarding are refused.
//!
//! A refused request gets SSH_MSG_CHANNEL_FAILURE (when the client wants a
//! reply) and nothing else: the channel and the connection stay open, as
//! RFC 4254 and OpenSSH have it. Clients probe (rclone runs `md5sum` and
//! `df`) and go on with sftp; phpseclib drops the whole connection when a
//! refused channel is also closed.
//!
//! A connection holds at most [`MAX_CHANNELS`] session channels at once
//! (a further open is refused; a closed channel gives its place back) and
//! runs one `sftp` subsystem at a time: its caps (64 open handles) are
//! the connection's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use super::credentials::{address_allowed, parse_public_key};
use super::files::{self, SftpSession};
use super::jail::Jail;
use super::refusals::shown_name;
use super::{LoginSlot, Shared};
use crate::auth::Refused;
use crate::store::Account;

/// Session channels open at once on one connection. Clients use one (the
/// sftp subsystem) and sometimes a probe beside it (rclone's `md5sum`);
/// phpseclib keeps a refused `exec` channel open.
pub(crate) const MAX_CHANNELS: usize = 4;
/// How long a new sftp subsystem waits for the connection's previous one,
/// which the client closed, to end (its loop ends at once).
const SFTP_END_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why there is no account to try: either the client's failure, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoCandidate {
    /// No such account, an address it does not allow: a failed login.
    Refused,
    /// Refused before anything was checked (the address is locked out),
    /// or the server could not check (the store cannot be read, the
    /// account's feed is not configured): not the client's failure.
    NotCounted,
}

/// The per-connection handler russh drives.
pub struct Connection {
    shared: Arc<Shared>,
    ip: IpAddr,
    /// The logged-in account; `None` until authentication succeeds.
    account: Option<Account>,
    /// Set once logged in; the login deadline reads it.
    pub authenticated: Arc<AtomicBool>,
    /// Counts the connection among those not logged in; gone at login.
    login_slot: Option<LoginSlot>,
    /// A password check waiting for its turn gives up at this time.
    login_deadline: Instant,
    /// Session channels open and not running the sftp subsystem.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// The channel running the sftp subsystem, until the client closes it.
    sftp_channel: Option<ChannelId>,
    /// Set while the connection's sftp loop runs (one at a time); the
    /// loop clears it when it ends, however it ends.
    sftp_running: Arc<AtomicBool>,
    /// Set at the first refused request: a client that probes with many
    /// commands gets one line in the log, not one per probe.
    refusal_logged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(
            &[MethodKind::PublicKey, MethodKind::Password][..],
        )),
        partial_success: false,
    }
}

impl Connection {
    /// `login_deadline`: when the login timeout closes the connection.
    pub fn new(
        shared: Arc<Shared>,
        ip: IpAddr,
        login_slot: LoginSlot,
        login_deadline: Instant,
    ) -> Connection {
        Connection {
            shared,
            ip,
            account: None,
            authenticated: Arc::new(AtomicBool::new(false)),
            login_slot: Some(login_slot),
            login_deadline,
            channels: HashMap::new(),
            sftp_channel: None,
            sftp_running: Arc::new(AtomicBool::new(false)),
            refusal_logged: false,
        }
    }

    /// The account `user` may log in to from this address, if any. Reasons
    /// for a refusal go to the log (rate-limited per address, the name
    /// cut: clients offer keys for any name they like), never to the
    /// client.
    fn candidate(&self, user: &str) -> Result<Account, NoCandidate> {
        if self.shared.lockout.is_locked(self.ip) {
            self.shared
                .log_refusal(self.ip, Some(user), Refused::AddressLocked.reason());
            return Err(NoCandidate::NotCounted);
        }
        let account = match self.shared.store.account(user) {
            Ok(Some(a)) => a,
            Ok(None) => {
                self.shared
                    .log_refusal(self.ip, Some(user), "no such account");
                return Err(NoCandidate::Refused);
            }
            Err(e) => {
                let user = shown_name(user);
                tracing::error!(user, peer = %self.ip, error = %e, "login refused: the store cannot be read (not counted as a failed login)");
                return Err(NoCandidate::NotCounted);
            }
        };
        if !address_allowed(&account.allow, self.ip) {
            self.shared.log_refusal(
                self.ip,
                Some(user),
                "the address is not in the account's allow-list",
            );
            return Err(NoCandidate::Refused);
        }
        if self.shared.config.feed(&account.feed).is_none() {
            self.shared.log_refusal(
                self.ip,
                Some(user),
                &format!(
                    "the account's feed '{}' is not configured (not counted as a failed login)",
                    crate::import::printable(&account.feed)
                ),
            );
            return Err(NoCandidate::NotCounted);
        }
        Ok(account)
    }

    /// Counts a login without a candidate as failed when it was the
    /// client's failure.
    fn no_candidate(&self, user: &str, why: NoCandidate) -> Auth {
        if why == NoCandidate::Refused {
            self.failed(user);
        }
        reject()
    }

    /// A failed login that never reached a password check.
    fn failed(&self, user: &str) {
        self.shared
            .lockout
            .record_failure(self.ip, shown_name(user));
    }

    fn succeed(&mut self, account: Account, method: &str) -> Auth {
        if !self.shared.take_session_slot(&account.name) {
            tracing::warn!(user = %account.name, peer = %self.ip, "login refused: the account has its maximum of sessions");
            return Auth::reject();
        }
        tracing::info!(user = %account.name, peer = %self.ip, method, "logged in");
        self.shared.note_login(&account.name, self.ip);
        self.account = Some(account);
        self.authenticated.store(true, Ordering::SeqCst);
        self.login_slot = None;
        Auth::Accept
    }

    /// Answers a channel request with a failure and leaves the channel
    /// open (see the module doc).
    fn refuse(
        &mut self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), ConnectionError> {
        self.note_refusal(what);
        session.channel_failure(channel)?;
        Ok(())
    }

    fn note_refusal(&mut self, what: &str) {
        if self.refusal_logged {
            tracing::debug!(peer = %self.ip, request = what, "refused");
            return;
        }
        self.refusal_logged = true;
        tracing::warn!(
            peer = %self.ip,
            request = what,
            "refused: this server offers sftp only (further refusals in this session are not logged)"
        );
    }

    /// SHA-1 signatures (`ssh-rsa`) only with `legacy_algorithms`; the
    /// client may offer the same key again as `rsa-sha2-*`.
    fn signature_allowed(&self, algorithm: &russh::keys::Algorithm) -> bool {
        if self.shared.config.sftp.legacy_algorithms || !super::is_sha1_signature(algorithm) {
            return true;
        }
        self.shared.log_refusal(self.ip, None, "refused an ssh-rsa (SHA-1) signature; set [sftp] legacy_algorithms = true for clients that know nothing newer");
        false
    }

    /// A channel the client ended gives its place back.
    fn forget_channel(&mut self, channel: ChannelId) {
        self.channels.remove(&channel);
        if self.sftp_channel == Some(channel) {
            self.sftp_channel = None;
        }
    }

    fn has_key(account: &Account, key: &russh::keys::PublicKey) -> bool {
        account
            .keys
            .iter()
            .filter_map(|k| parse_public_key(k).ok())
            .any(|k| k.key_data() == key.key_data())
    }
}

/// Clears [`Connection::sftp_running`] when the sftp loop's task ends,
/// even by a panic.
struct SftpRunning(Arc<AtomicBool>);

impl Drop for SftpRunning {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(a) = &self.account {
            self.shared.give_back_session_slot(&a.name);
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = ConnectionError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let account = match self.candidate(user) {
            Ok(account) => account,
            Err(why) => return Ok(self.no_candidate(user, why)),
        };
        let Some(hash) = account.password_hash.clone() else {
            self.shared.log_refusal(
                self.ip,
                Some(user),
                "the account has no password (keys only)",
            );
            self.failed(user);
            return Ok(reject());
        };
        // Admitted and counted in one step, before the slow check: a burst
        // of guesses at once cannot pass the limit. A check that cannot
        // have its turn before the deadline is refused.
        let check = match self
            .shared
            .begin_password_check(self.ip, &account.name, self.login_deadline)
            .await
        {
            Ok(check) => check,
            Err(refused) => {
                self.shared
                    .log_refusal(self.ip, Some(user), refused.reason());
                return Ok(reject());
            }
        };
        let Some(matches) = self.shared.check_password(password.to_string(), hash).await else {
            // The server could not check: not the client's failure.
            check.withdraw();
            return Ok(reject());
        };
        check.settle(matches);
        if !matches {
            let user = shown_name(user);
            tracing::warn!(user, peer = %self.ip, "login refused: wrong password");
            return Ok(reject());
        }
        Ok(self.succeed(account, "password"))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Clients offer every key they have: an unknown one is not a
        // failed login.
        if !self.signature_allowed(offer.algorithm) {
            return Ok(reject());
        }
        let known = self
            .candidate(user)
            .is_ok_and(|a| Self::has_key(&a, offer.public_key));
        Ok(if known { Auth::Accept } else { reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !self.signature_allowed(key.algorithm) {
            return Ok(reject());
        }
        match self.candidate(user) {
            Ok(account) if Self::has_key(&account, key.public_key) => {
                Ok(self.succeed(account, "publickey"))
            }
            Ok(_) => {
                self.shared
                    .log_refusal(self.ip, Some(user), "the key is not the account's");
                self.failed(user);
                Ok(reject())
            }
            Err(why) => Ok(self.no_candidate(user, why)),
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.account.is_none() {
            return Ok(());
        }
        let open = self.channels.len() + usize::from(self.sftp_running.load(Ordering::SeqCst));
        if open >= MAX_CHANNELS {
            // Dropping the reply refuses the channel; the others go on.
            self.note_refusal(&format!("a channel beyond {MAX_CHANNELS} open at once"));
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(account), true) = (&self.account, name == "sftp") else {
            let name = shown_name(name);
            return self.refuse(channel_id, &format!("subsystem {name}"), session);
        };
        if self.sftp_channel.is_some() && self.sftp_running.load(Ordering::SeqCst) {
            return self.refuse(channel_id, "a second sftp subsystem at once", session);
        }
        // The client closed the previous one: its loop is ending.
        let until = Instant::now() + SFTP_END_WAIT;
        while self.sftp_running.load(Ordering::SeqCst) && Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if self.sftp_running.load(Ordering::SeqCst) {
            return self.refuse(channel_id, "a second sftp subsystem at once", session);
        }
        let Some(channel) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        self.sftp_channel = Some(channel_id);
        session.channel_success(channel_id)?;
        let jail = Jail::new(self.shared.config.feed_dir(&account.feed));
        let sftp = SftpSession::new(
            jail,
            account.feed.clone(),
            self.shared.config.sftp.max_upload_size,
            self.shared.config.sftp.temporary_suffixes.clone(),
            self.shared.arrivals.clone(),
        )
        .count_handles_for(&account.name, self.shared.open_handles.clone());
        let span = tracing::Span::current();
        self.sftp_running.store(true, Ordering::SeqCst);
        let running = SftpRunning(self.sftp_running.clone());
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                files::serve(channel.into_stream(), sftp).await;
                drop(running);
            },
            span,
        ));
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "shell", session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data);
        let first_word = shown_name(command.split_whitespace().next().unwrap_or_default());
        self.refuse(channel, &format!("exec {first_word}"), session)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "pty", session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "env", session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "x11", session)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // russh answers the failure itself.
        self.note_refusal("agent forwarding");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.note_refusal("remote port forwarding");
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the reply refuses the channel.
        self.note_refusal("local port forwarding");
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget_channel(channel);
        session.close(channel)?;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forget_channel(channel);
        Ok(())
    }
}
