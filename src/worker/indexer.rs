//! The search indexer: one thread of `flagsync serve` that keeps each
//! feed's search index (`store::search`) in step with its recipients.
//!
//! It looks at the feeds' generations every second and indexes again what
//! a run changed. Outside the runs on purpose: a run's transaction and its
//! speed stay as they were, and the page says while the index catches up
//! (seconds for a daily change, 5–15 s for a first million). A pass
//! holds the store's writer only for short transactions and waits while a
//! run holds the engine's gate, so an upload right after a big one is not
//! slowed by the index of the first.
//!
//! Invariant: a feed's [`IndexStatus::current`] is true only while the
//! generation the index caught up with is the store's generation now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::engine::Engine;
use crate::search::SearchLayout;
use crate::store::{PassHooks, PassOutcome};

/// How often the generations are looked at.
const POLL: Duration = Duration::from_secs(1);

/// Where a feed's index is, for the page and the API.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct IndexStatus {
    /// The index holds exactly the stored recipients.
    pub current: bool,
    /// Recipients indexed again in the pass under way, and how many it has.
    pub done: u64,
    pub todo: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// The feed generation the index last caught up with.
    indexed: Option<u64>,
    done: u64,
    todo: u64,
}

/// The indexer's state, shared with the page.
#[derive(Default)]
pub struct SearchIndex {
    progress: Mutex<HashMap<String, Progress>>,
    stopping: AtomicBool,
    /// Set while the indexer thread runs (for `/healthz`).
    alive: AtomicBool,
}

impl SearchIndex {
    /// Current only when the index caught up with the generation the store
    /// holds now (a run that just committed makes it not current at once).
    pub fn status(&self, feed: &str, store: &crate::store::Store) -> IndexStatus {
        let progress = self.lock().get(feed).copied().unwrap_or_default();
        let now = store.feed_generation(feed).ok();
        IndexStatus {
            current: progress.indexed.is_some() && progress.indexed == now,
            done: progress.done,
            todo: progress.todo,
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn running(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Progress>> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, feed: &str, change: impl FnOnce(&mut Progress)) {
        change(self.lock().entry(feed.to_string()).or_default());
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Starts the indexer thread; [`SearchIndex::stop`] ends it after the pass
/// under way (a build of a million recipients takes seconds).
pub fn start(engine: Arc<Engine>) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Alive from here: `/healthz` may be asked before the thread runs.
    engine.search.alive.store(true, Ordering::SeqCst);
    std::thread::Builder::new()
        .name("indexer".into())
        .spawn(move || {
            let layouts: Vec<(String, SearchLayout)> = engine
                .config
                .feeds
                .iter()
                .map(|f| (f.name.clone(), SearchLayout::of(f)))
                .collect();
            let mut seen: HashMap<String, u64> = HashMap::new();
            while !engine.search.stopping() {
                for (feed, layout) in &layouts {
                    if engine.search.stopping() {
                        break;
                    }
                    index_feed(&engine, feed, layout, &mut seen);
                }
                std::thread::sleep(POLL);
            }
            engine.search.alive.store(false, Ordering::SeqCst);
        })
}

/// How long the indexer sleeps while a run is under way.
const RUN_WAIT: Duration = Duration::from_millis(20);

/// Returns once no run holds the engine's gate, true when one did: a
/// build of a big index takes both cores for seconds, and a run that
/// shares them with it takes that much longer. The run is what a client
/// waits for; the page says meanwhile that search is behind.
fn wait_for_runs(engine: &Engine) -> bool {
    let mut waited = false;
    loop {
        match engine.gate.try_lock() {
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => return waited,
            Err(std::sync::TryLockError::WouldBlock) => {
                waited = true;
                std::thread::sleep(RUN_WAIT);
            }
        }
    }
}

fn index_feed(engine: &Engine, feed: &str, layout: &SearchLayout, seen: &mut HashMap<String, u64>) {
    let index = &engine.search;
    let generation = match engine.store.feed_generation(feed) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(feed, error = %e, "the search index cannot read the store");
            return;
        }
    };
    if seen.get(feed) == Some(&generation) {
        return;
    }
    // Until a pass finds nothing to do: a run may commit during a pass.
    loop {
        let started = std::time::Instant::now();
        let hooks = PassHooks {
            progress: &mut |done, todo| {
                index.update(feed, |p| {
                    p.done = done;
                    p.todo = todo;
                })
            },
            yield_to_runs: &mut || wait_for_runs(engine),
        };
        let outcome = engine.store.update_search_index(feed, layout, hooks);
        match outcome {
            Ok(PassOutcome::Current { generation }) => {
                index.update(feed, |p| p.indexed = Some(generation));
                seen.insert(feed.to_string(), generation);
                return;
            }
            Ok(PassOutcome::Overtaken) => {
                tracing::debug!(
                    feed,
                    "a run went by: the search index is built again from it"
                );
            }
            Ok(PassOutcome::Updated(n)) => {
                tracing::info!(
                    feed,
                    recipients = n,
                    seconds = started.elapsed().as_secs_f64(),
                    "search index updated"
                );
            }
            Err(e) => {
                tracing::error!(feed, error = %e, "the search index cannot be updated; searches may miss recent changes");
                if e.is_transient() {
                    // A full disk, say: redb then refuses its handle until
                    // the store is opened again.
                    if let Err(e) = engine.store.recover_if_failed() {
                        tracing::warn!(error = %e, "the store is not writable yet");
                    }
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{SearchQuery, Store, Strategy};
    use crate::worker::{import_file, import_file_in, ImportOptions};

    const HEADER: &str = "Employee ID,First Name,Last Name,Email,Mobile Phone,Office Phone,Department,Location,Status\n";

    fn row(i: usize, last: &str, department: &str) -> String {
        format!(
            "E{i:03},Ann {i},{last},ann{i}@example.com,+1212555{i:04},,{department},Oslo,Active\n"
        )
    }

    fn import(config: &Config, dir: &std::path::Path, name: &str, rows: &[String]) {
        let path = dir.join(name);
        std::fs::write(&path, format!("{HEADER}{}", rows.concat())).unwrap();
        let run = import_file(config, &config.feeds[0], &path, ImportOptions::default()).unwrap();
        assert_eq!(run.state, crate::store::RunState::Applied, "{run:?}");
    }

    /// Hooks that report nothing and never wait. Leaked: a test makes a
    /// few.
    fn quiet_hooks() -> PassHooks<'static> {
        PassHooks {
            progress: Box::leak(Box::new(|_, _| {})),
            yield_to_runs: Box::leak(Box::new(|| false)),
        }
    }

    fn ids(store: &Store, query: SearchQuery) -> Vec<String> {
        let page = store.search_recipients("demo", &query).unwrap();
        page.recipients.into_iter().map(|(id, _)| id).collect()
    }

    fn search(store: &Store, layout: &SearchLayout, q: &str) -> Vec<String> {
        let query = SearchQuery {
            ranges: layout.search_ranges(q),
            limit: 100,
            cap: 1000,
            ..Default::default()
        };
        ids(store, query)
    }

    #[test]
    fn the_index_follows_runs_and_a_patch_equals_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded().unwrap();
        config.data_dir = dir.path().join("data");
        let feed = config.feeds[0].clone();
        let layout = SearchLayout::of(&feed);
        let mut rows: Vec<String> = (0..40)
            .map(|i| row(i, if i % 2 == 0 { "García" } else { "Smith" }, "Sales"))
            .collect();
        import(&config, dir.path(), "a.csv", &rows);
        let store = Store::open(&config.store_path()).unwrap();
        let pass = |strategy| {
            store
                .index_pass("demo", &layout, quiet_hooks(), strategy)
                .unwrap()
        };
        assert_eq!(pass(Strategy::Cheapest), PassOutcome::Updated(40));
        assert!(matches!(
            pass(Strategy::Cheapest),
            PassOutcome::Current { .. }
        ));
        assert_eq!(search(&store, &layout, "garc").len(), 20);
        assert_eq!(search(&store, &layout, "E007"), ["E007"]);
        assert_eq!(
            search(&store, &layout, "ann 7"),
            ["E007"],
            "a whole value's start"
        );
        assert_eq!(search(&store, &layout, "212 555 0007"), ["E007"]);
        assert_eq!(search(&store, &layout, "ANN7@"), ["E007"]);
        drop(store);

        // One changed, one removed, one added: the next pass patches.
        rows[3] = row(3, "Okafor", "Support");
        rows.remove(5);
        rows.push(row(77, "Okafor", "Sales"));
        import(&config, dir.path(), "b.csv", &rows);
        let store = Store::open(&config.store_path()).unwrap();
        let pass = |strategy| {
            store
                .index_pass("demo", &layout, quiet_hooks(), strategy)
                .unwrap()
        };
        assert_eq!(pass(Strategy::Patch), PassOutcome::Updated(3));
        let patched = store.search_dump("demo");
        assert_eq!(search(&store, &layout, "okafor"), ["E003", "E077"]);
        assert!(search(&store, &layout, "E005").is_empty());
        let department = feed
            .fields
            .iter()
            .position(|f| f.name == "department")
            .unwrap();
        let support = SearchQuery {
            filter: layout.filter(department, "SUPPORT"),
            limit: 10,
            cap: usize::MAX,
            ..Default::default()
        };
        assert_eq!(ids(&store, support), ["E003"]);
        let sales_okafor = SearchQuery {
            ranges: layout.search_ranges("okafor"),
            filter: layout.filter(department, "sales"),
            limit: 10,
            cap: 100,
            ..Default::default()
        };
        assert_eq!(ids(&store, sales_okafor), ["E077"]);

        // Built anew from the same records, the index is the same.
        store.bump_generation_for_tests("demo");
        assert!(matches!(pass(Strategy::Rebuild), PassOutcome::Updated(_)));
        assert_eq!(store.search_dump("demo"), patched);
        assert!(!patched.0.is_empty());
    }

    /// Builds the index anew while, at its first pause, a run commits a
    /// change: the build ends with the snapshot's index, the next pass
    /// patches the difference, and the index then equals one built from
    /// the stored recipients.
    #[test]
    fn a_run_committed_during_a_build_is_caught_up_by_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded().unwrap();
        config.data_dir = dir.path().join("data");
        let feed = config.feeds[0].clone();
        let layout = SearchLayout::of(&feed);
        let mut rows: Vec<String> = (0..50).map(|i| row(i, "Smith", "Sales")).collect();
        import(&config, dir.path(), "a.csv", &rows);
        let store = Store::open(&config.store_path()).unwrap();
        let before = store.feed_generation("demo").unwrap();

        rows[4] = row(4, "Okafor", "Support");
        rows.remove(9);
        rows.push(row(88, "Okafor", "Sales"));
        let changed = dir.path().join("b.csv");
        std::fs::write(&changed, format!("{HEADER}{}", rows.concat())).unwrap();
        let mut committed = false;
        // A run that started and ended between two of the build's looks
        // at the gate: the build does not know it went by.
        let mut run_once = || {
            if !committed {
                committed = true;
                let run =
                    import_file_in(&config, &store, &feed, &changed, ImportOptions::default())
                        .unwrap();
                assert_eq!(run.state, crate::store::RunState::Applied, "{run:?}");
            }
            false
        };
        let hooks = PassHooks {
            progress: &mut |_, _| {},
            yield_to_runs: &mut run_once,
        };
        let outcome = store
            .index_pass("demo", &layout, hooks, Strategy::Rebuild)
            .unwrap();
        assert_eq!(outcome, PassOutcome::Updated(50));
        assert!(committed, "the build never paused");
        assert_ne!(store.feed_generation("demo").unwrap(), before);
        // The index is the snapshot's: the run's changes are not in it yet
        // (E004 is still found by its old name; E009's record is gone).
        assert_eq!(search(&store, &layout, "smith").len(), 49);
        assert!(search(&store, &layout, "smith").contains(&"E004".to_string()));
        assert!(search(&store, &layout, "okafor").is_empty());

        let pass = |strategy| {
            store
                .index_pass("demo", &layout, quiet_hooks(), strategy)
                .unwrap()
        };
        assert_eq!(pass(Strategy::Patch), PassOutcome::Updated(3));
        assert!(matches!(
            pass(Strategy::Cheapest),
            PassOutcome::Current { .. }
        ));
        assert_eq!(search(&store, &layout, "okafor"), ["E004", "E088"]);
        assert!(search(&store, &layout, "E009").is_empty());
        let caught_up = store.search_dump("demo");

        store.bump_generation_for_tests("demo");
        assert!(matches!(pass(Strategy::Rebuild), PassOutcome::Updated(50)));
        assert_eq!(store.search_dump("demo"), caught_up);
        assert!(matches!(
            pass(Strategy::Cheapest),
            PassOutcome::Current { .. }
        ));
    }

    /// As the server's indexer runs it: a first build that waited for a
    /// run drops its snapshot; the next pass builds from the run's
    /// records, and the index equals a rebuild.
    #[test]
    fn a_build_overtaken_by_a_run_starts_again_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded().unwrap();
        config.data_dir = dir.path().join("data");
        let feed = config.feeds[0].clone();
        let layout = SearchLayout::of(&feed);
        let mut rows: Vec<String> = (0..30).map(|i| row(i, "Lee", "Sales")).collect();
        import(&config, dir.path(), "a.csv", &rows);
        let store = Store::open(&config.store_path()).unwrap();
        rows.truncate(28);
        let changed = dir.path().join("b.csv");
        std::fs::write(&changed, format!("{HEADER}{}", rows.concat())).unwrap();
        let mut committed = false;
        // A run the build waited for: it drops its outdated snapshot.
        let mut run_once = || {
            if committed {
                return false;
            }
            committed = true;
            let run =
                import_file_in(&config, &store, &feed, &changed, ImportOptions::default()).unwrap();
            assert_eq!(run.state, crate::store::RunState::Applied, "{run:?}");
            true
        };
        let hooks = PassHooks {
            progress: &mut |_, _| {},
            yield_to_runs: &mut run_once,
        };
        assert_eq!(
            store.update_search_index("demo", &layout, hooks).unwrap(),
            PassOutcome::Overtaken
        );
        assert!(search(&store, &layout, "lee").is_empty(), "no index yet");
        assert_eq!(
            store
                .update_search_index("demo", &layout, quiet_hooks())
                .unwrap(),
            PassOutcome::Updated(28),
            "built once, from the run's records"
        );
        let mut passes = 0;
        while let PassOutcome::Updated(_) = store
            .update_search_index("demo", &layout, quiet_hooks())
            .unwrap()
        {
            passes += 1;
            assert!(passes < 3, "the index does not catch up");
        }
        assert_eq!(search(&store, &layout, "lee").len(), 28);
        let caught_up = store.search_dump("demo");
        store.bump_generation_for_tests("demo");
        store
            .index_pass("demo", &layout, quiet_hooks(), Strategy::Rebuild)
            .unwrap();
        assert_eq!(store.search_dump("demo"), caught_up);
    }
}
