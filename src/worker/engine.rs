//! The server's shared state: the configuration, the one open store, the
//! gate every writer in the process passes, and what the page reads of the
//! intake and the indexer. Its own module so that the intake and the
//! indexer both use it without using each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Config;
use crate::store::Store;

/// What the intake, the indexer, the page and the control socket share:
/// the open store and the gate every writer passes (one run at a time in
/// this process).
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub gate: Mutex<()>,
    /// Set while the intake thread runs (for `/healthz`).
    pub intake_alive: AtomicBool,
    /// The recipient search index's progress (`worker::indexer`).
    pub search: super::indexer::SearchIndex,
    /// The addresses the server bound: sFTP, then the web page (set once
    /// both listen; `flagsync doctor` connects to them).
    pub listening: std::sync::OnceLock<(std::net::SocketAddr, std::net::SocketAddr)>,
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Engine {
        Engine {
            config,
            store,
            gate: Mutex::new(()),
            intake_alive: AtomicBool::new(false),
            search: Default::default(),
            listening: Default::default(),
        }
    }

    pub fn intake_running(&self) -> bool {
        self.intake_alive.load(Ordering::SeqCst)
    }

    pub fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
