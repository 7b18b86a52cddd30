//! `flagsync serve`: the sFTP server, the intake and the control socket,
//! until SIGTERM or Ctrl-C.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{control, Failure};
use crate::auth::{generate_password, hash_password};
use crate::config::{Config, Source};
use crate::layout::FeedFolders;
use crate::sftp::credentials::fingerprint;
use crate::sftp::{self, host_keys, ArrivalSink, Shared};
use crate::store::{Account, DataLock, Store, StoreError};
use crate::worker::engine::Engine;
use crate::worker::intake;

/// The embedded default's account, for its demo feed.
const DEMO_ACCOUNT: &str = "demo";

fn runtime_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

pub fn serve(config: Config) -> Result<u8, Failure> {
    match &config.source {
        Source::File(path) => tracing::info!(path = %path.display(), "configuration loaded"),
        Source::Embedded => tracing::info!("configuration: the embedded default"),
    }
    raise_open_file_limit();
    let _lock = DataLock::acquire(&config.data_dir).map_err(|e| match e {
        StoreError::InUse { .. } => Failure::Runtime(anyhow::anyhow!(
            "another flagsync is using the data folder {} (a server or an import); stop it first",
            config.data_dir.display()
        )),
        other => other.into(),
    })?;
    // A damaged store is found here, with what to do, rather than in the
    // middle of a run.
    let store_path = config.store_path();
    let store = Arc::new(crate::store::guard_damage(&store_path, || {
        let store = Store::open(&store_path)?;
        store.verify()?;
        Ok(store)
    })?);
    let keys = host_keys::load_or_generate(&config.data_dir).map_err(runtime_error)?;
    for key in &keys {
        println!(
            "sftp: host key {} {}",
            key.algorithm().as_str(),
            fingerprint(key.public_key())
        );
    }
    for feed in &config.feeds {
        let folders = FeedFolders::new(config.feed_dir(&feed.name));
        folders.create_visible().map_err(|e| {
            runtime_error(anyhow::anyhow!(
                "cannot create the folders of feed '{}' in {}: {e}",
                feed.name,
                folders.root.display()
            ))
        })?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    let listener = runtime
        .block_on(TcpListener::bind(&config.sftp.listen))
        .map_err(|e| {
            Failure::Usage(anyhow::anyhow!(
                "cannot listen on {} for sFTP: {e}; set [sftp] listen to a free address",
                config.sftp.listen
            ))
        })?;
    let web_listener = runtime
        .block_on(TcpListener::bind(&config.web_listen))
        .map_err(|e| {
            Failure::Usage(anyhow::anyhow!(
                "cannot listen on {} for the web page: {e}; set [web] listen to a free address",
                config.web_listen
            ))
        })?;
    let ssh = Arc::new(sftp::ssh_config(&config, keys));
    let config = Arc::new(config);
    crate::scim::prepare_targets(&store, &config);
    let engine = Arc::new(Engine::new(config.clone(), store.clone()));
    let (intake, intake_thread) = intake::start(engine.clone());
    let indexer = crate::worker::indexer::start(engine.clone())
        .map_err(|e| runtime_error(anyhow::anyhow!("the search indexer cannot start: {e}")))?;
    let outbox = config
        .smtp
        .clone()
        .map(|smtp| crate::mail::start_sender(store.clone(), smtp));
    control::listen(engine.clone()).map_err(|e| {
        runtime_error(anyhow::anyhow!(
            "cannot open the control socket {}: {e}",
            control::socket_path(&config).display()
        ))
    })?;
    let web_address = web_listener.local_addr().map_err(runtime_error)?;
    let web_tls = match &config.web_tls {
        Some((cert, key)) => Some(crate::web::tls_acceptor(cert, key).map_err(|e| {
            Failure::Usage(anyhow::anyhow!(
                "{e}; fix [web] tls_cert/tls_key in {}",
                config.source
            ))
        })?),
        None => None,
    };
    let web_secure = web_tls.is_some()
        || config
            .web_public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
    let web_state =
        Arc::new(crate::web::WebState::new(engine.clone(), web_secure).map_err(runtime_error)?);
    let address = listener.local_addr().map_err(runtime_error)?;
    // Only now that every port is ours: a first start that fails (a port
    // taken) must not keep accounts whose passwords were shown and lost.
    if config.source == Source::Embedded {
        create_demo_account(&config, &engine.store)?;
        create_first_admin(&engine.store)?;
    }
    let _ = engine.listening.set((address, web_address));
    let signals = stop_signals(&runtime)?;
    let scheme = if web_tls.is_some() { "https" } else { "http" };
    println!("web: listening on {scheme}://{web_address}");
    println!("sftp: listening on {address}");
    tracing::info!(%address, %web_address, "listening");
    let arrivals: ArrivalSink = {
        let intake = intake.clone();
        Arc::new(move |a: sftp::Arrival| intake.arrived(&a.feed, &a.name, &a.claim))
    };
    let shared = Arc::new(Shared::new(config.clone(), store, arrivals));
    let shutdown = CancellationToken::new();
    runtime.spawn(stop_on_signal(signals, shutdown.clone()));
    // Webhook deliveries: their own task, stopped with the listeners (a
    // message being sent then is sent again after the restart).
    let webhooks = runtime.spawn(crate::webhook::run_sender(
        engine.store.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    // SCIM pushes: a thread with its own runtime (its store calls may wait
    // for a run's writer without holding up the server's tasks).
    let scim = crate::scim::spawn_sender(engine.store.clone(), config.clone(), shutdown.clone());
    let web = match web_tls {
        Some(acceptor) => runtime.spawn(crate::web::run_tls(
            web_listener,
            web_state,
            acceptor,
            shutdown.clone(),
        )),
        None => runtime.spawn(crate::web::run(web_listener, web_state, shutdown.clone())),
    };
    runtime.block_on(sftp::run(listener, shared, ssh, shutdown));
    let _ = runtime
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), web).await });
    let _ = runtime.block_on(webhooks);
    if let Some(scim) = scim {
        let _ = scim.join();
    }
    tracing::info!("stopping: waiting for a running import to finish");
    intake.stop();
    engine.search.stop();
    let _ = intake_thread.join();
    let _ = indexer.join();
    if let Some((handle, thread)) = outbox {
        handle.stop();
        let _ = thread.join();
    }
    control::remove_socket(&config);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(0)
}

/// Highest soft limit asked for: Linux refuses more than `nr_open`
/// (1,048,576 by default), and an unlimited hard limit cannot be the soft
/// one.
const MOST_OPEN_FILES: u64 = 1 << 20;

/// Every sFTP connection, handle and web request holds a file descriptor,
/// and the usual soft limit (1,024) is reached long before the caps on
/// them are: raises the soft limit to the hard one, which the
/// administrator sets (the systemd unit's `LimitNOFILE`).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let soft = limit.current.unwrap_or(u64::MAX);
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(MOST_OPEN_FILES);
    if soft >= wanted {
        return;
    }
    let raised = Rlimit {
        current: Some(wanted),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(from = soft, to = wanted, "raised the open-file limit"),
        Err(e) => tracing::warn!(
            soft,
            hard = limit.maximum,
            error = %e,
            "cannot raise the open-file limit; raise LimitNOFILE (systemd) or `ulimit -n` for many sessions"
        ),
    }
}

/// SIGTERM and SIGINT, taken over before the server says it listens: a
/// stop sent right after that line still stops it cleanly.
fn stop_signals(runtime: &tokio::runtime::Runtime) -> Result<StopSignals, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let _context = runtime.enter();
    let listen = |kind| {
        signal(kind)
            .map_err(|e| runtime_error(anyhow::anyhow!("cannot listen for SIGTERM/SIGINT: {e}")))
    };
    Ok(StopSignals {
        term: listen(SignalKind::terminate())?,
        int: listen(SignalKind::interrupt())?,
    })
}

struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

async fn stop_on_signal(signals: StopSignals, shutdown: CancellationToken) {
    let StopSignals { mut term, mut int } = signals;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("interrupted: stopping"),
    }
    shutdown.cancel();
}

/// At the embedded default's first start: an administrator for the status
/// page, whose generated password is printed this once.
fn create_first_admin(store: &Store) -> Result<(), Failure> {
    if !store.admins()?.is_empty() {
        return Ok(());
    }
    let password = generate_password().map_err(runtime_error)?;
    store.put_admin(&crate::store::Admin {
        name: "admin".into(),
        password_hash: hash_password(&password).map_err(runtime_error)?,
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        last_login: None,
    })?;
    println!("web: administrator admin password: {password}");
    println!("web: this password is shown once; change it with `flagsync admins password admin`");
    Ok(())
}

/// At the embedded default's first start: an account for the demo feed,
/// whose generated password is printed this once (only its hash is kept).
fn create_demo_account(config: &Config, store: &Store) -> Result<(), Failure> {
    let Some(feed) = config.feeds.first() else {
        return Ok(());
    };
    if !store.accounts()?.is_empty() {
        return Ok(());
    }
    let password = generate_password().map_err(runtime_error)?;
    let account = Account {
        name: DEMO_ACCOUNT.into(),
        feed: feed.name.clone(),
        password_hash: Some(hash_password(&password).map_err(runtime_error)?),
        keys: Vec::new(),
        allow: Vec::new(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        last_login: None,
        last_login_from: None,
    };
    store.put_account(&account)?;
    println!(
        "sftp: account {DEMO_ACCOUNT} (feed {}) password: {password}",
        feed.name
    );
    println!("sftp: this password is shown once; change it with `flagsync accounts password {DEMO_ACCOUNT}`");
    Ok(())
}
