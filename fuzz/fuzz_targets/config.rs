//! Any UTF-8 text as the configuration file: `Config::parse` answers with a
//! configuration or with problems to print, never a panic. What it accepts
//! must hold what the rest of the program takes for granted (indexes in
//! range, feed names that are folder names, one ID field).

#![no_main]

use std::path::{Component, PathBuf};

use flagsync::config::{Config, FieldKind, Source, MAX_FIELDS, MAX_GROUP_FIELDS};
use flagsync::search::SearchLayout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // `Config::load` reads the file as UTF-8 first; other bytes never get here.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let source = Source::File(PathBuf::from("/etc/flagsync/flagsync.toml"));
    let config = match Config::parse(text, source.clone()) {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            return;
        }
    };
    check(&config);
    // Parsing is a function of the text: the same text, the same feeds.
    let again = Config::parse(text, source).expect("the same text parses again");
    let fingerprints =
        |c: &Config| -> Vec<u64> { c.feeds.iter().map(|f| f.mapping_fingerprint()).collect() };
    assert_eq!(fingerprints(&config), fingerprints(&again));
});

fn check(config: &Config) {
    let _ = format!("{config:?}");
    let _ = config.feed_names();
    let _ = config.store_path();
    for feed in &config.feeds {
        assert!(config.feed(&feed.name).is_some());
        // A feed's name is one folder directly in the data folder.
        let dir = config.feed_dir(&feed.name);
        let tail: Vec<Component> = dir
            .strip_prefix(&config.data_dir)
            .expect("under the data folder")
            .components()
            .collect();
        assert!(
            matches!(tail.as_slice(), [Component::Normal(n)] if *n == feed.name.as_str()),
            "feed name {:?} is not a plain folder name",
            feed.name
        );
        assert!(!feed.fields.is_empty() && feed.fields.len() <= MAX_FIELDS);
        assert_eq!(feed.id().kind, FieldKind::Id);
        assert_eq!(
            feed.fields
                .iter()
                .filter(|f| f.kind == FieldKind::Id)
                .count(),
            1,
            "one ID field"
        );
        assert!(feed.group_fields.len() <= MAX_GROUP_FIELDS);
        assert!(feed.group_fields.iter().all(|&g| g < feed.fields.len()));
        assert!(feed.filters.iter().all(|f| f.field < feed.fields.len()));
        for field in &feed.fields {
            assert_eq!(
                field.separator.is_some(),
                field.kind == FieldKind::Multi,
                "field {:?}: a separator exactly for multi fields",
                field.name
            );
        }
        let _ = feed.delete_threshold.to_string();
        let _ = feed.mapping_fingerprint();
        let layout = SearchLayout::of(feed);
        let _ = layout.fingerprint();
        let _ = layout.search_ranges("Ann +1 555 0100");
    }
}
