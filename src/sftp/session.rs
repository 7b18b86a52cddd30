//! One SSH connection: who the client is (password or key, allow-list,
//! lockout, session slots) and the one thing it may do: the `sftp`
//! subsystem. Shell, exec, port and agent forwarding are refused.
//!
//! A refused request gets SSH_MSG_CHANNEL_FAILURE (when the client wants a
//! reply) and nothing else: the channel and the connection stay open, as
//! RFC 4254 and OpenSSH have it. Clients probe (rclone runs `md5sum` and
//! `df`) and go on with sftp; phpseclib drops the whole connection when a
//! refused channel is also closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use super::credentials::{address_allowed, parse_public_key};
use super::defender::{Locked, Refused};
use super::files::{self, SftpSession};
use super::jail::Jail;
use super::{LoginSlot, Shared};
use crate::store::Account;

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
    channels: HashMap<ChannelId, Channel<Msg>>,
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
    pub fn new(shared: Arc<Shared>, ip: IpAddr, login_slot: LoginSlot) -> Connection {
        Connection {
            shared,
            ip,
            account: None,
            authenticated: Arc::new(AtomicBool::new(false)),
            login_slot: Some(login_slot),
            channels: HashMap::new(),
            refusal_logged: false,
        }
    }

    /// The account `user` may log in to from this address, if any. Reasons
    /// for a refusal go to the log, never to the client.
    fn candidate(&self, user: &str) -> Option<Account> {
        if self.shared.is_locked(self.ip) {
            self.shared
                .log_refusal(self.ip, Some(user), Refused::AddressLocked.reason());
            return None;
        }
        let account = match self.shared.store.account(user) {
            Ok(Some(a)) => a,
            Ok(None) => {
                tracing::warn!(user, peer = %self.ip, "login refused: no such account");
                return None;
            }
            Err(e) => {
                tracing::error!(user, peer = %self.ip, error = %e, "login refused: the store cannot be read");
                return None;
            }
        };
        if !address_allowed(&account.allow, self.ip) {
            tracing::warn!(user, peer = %self.ip, "login refused: the address is not in the account's allow-list");
            return None;
        }
        if self.shared.config.feed(&account.feed).is_none() {
            tracing::warn!(user, peer = %self.ip, feed = %account.feed, "login refused: the account's feed is not configured");
            return None;
        }
        Some(account)
    }

    /// A failed login that never reached a password check.
    fn failed(&self, user: &str) {
        crate::metrics::count(&crate::metrics::SFTP_FAILED_LOGINS);
        let locked = Locked {
            address: self.shared.record_failure(self.ip),
            account: false,
        };
        self.log_lockout(user, locked);
    }

    fn log_lockout(&self, user: &str, locked: Locked) {
        if locked.address {
            tracing::warn!(user, peer = %self.ip, "too many failed logins: the address is locked out");
        }
        if locked.account {
            tracing::warn!(user, peer = %self.ip, "too many failed logins: the account is locked for password logins (keys still work)");
        }
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
        tracing::info!(peer = %self.ip, "refused an ssh-rsa (SHA-1) signature; set [sftp] legacy_algorithms = true for clients that know nothing newer");
        false
    }

    fn has_key(account: &Account, key: &russh::keys::PublicKey) -> bool {
        account
            .keys
            .iter()
            .filter_map(|k| parse_public_key(k).ok())
            .any(|k| k.key_data() == key.key_data())
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
        let Some(account) = self.candidate(user) else {
            self.failed(user);
            return Ok(reject());
        };
        let Some(hash) = account.password_hash.clone() else {
            tracing::warn!(user, peer = %self.ip, "login refused: the account has no password (keys only)");
            self.failed(user);
            return Ok(reject());
        };
        // Admitted and counted in one step, before the slow check: a burst
        // of guesses at once cannot pass the limit.
        let check = match self
            .shared
            .begin_password_check(self.ip, &account.name)
            .await
        {
            Ok(check) => check,
            Err(refused) => {
                self.shared
                    .log_refusal(self.ip, Some(user), refused.reason());
                return Ok(reject());
            }
        };
        let matches = self.shared.check_password(password.to_string(), hash).await;
        let locked = check.finish(matches);
        if !matches {
            crate::metrics::count(&crate::metrics::SFTP_FAILED_LOGINS);
            tracing::warn!(user, peer = %self.ip, "login refused: wrong password");
            self.log_lockout(user, locked);
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
            .is_some_and(|a| Self::has_key(&a, offer.public_key));
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
            Some(account) if Self::has_key(&account, key.public_key) => {
                Ok(self.succeed(account, "publickey"))
            }
            _ => {
                tracing::warn!(user, peer = %self.ip, "login refused: the key is not the account's");
                self.failed(user);
                Ok(reject())
            }
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
            return self.refuse(channel_id, &format!("subsystem {name}"), session);
        };
        let Some(channel) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
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
        tokio::spawn(tracing::Instrument::instrument(
            files::serve(channel.into_stream(), sftp),
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
        let first_word = command.split_whitespace().next().unwrap_or_default();
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
        session.close(channel)?;
        Ok(())
    }
}
