//! Any string as a path an sFTP client sends: the jail answers with a place
//! inside the feed's three folders (or "nowhere"), or refuses the path;
//! nothing it returns can climb out of the feed's folder.

#![no_main]

use std::path::{Component, Path};

use flagsync::sftp::jail::{components, resolve, virtual_path, Area, Jail, JailError, Place};
use libfuzzer_sys::fuzz_target;

const FEED_DIR: &str = "/srv/flagsync/hr";

fuzz_target!(|bytes: &[u8]| {
    // russh-sftp hands the loop paths as Rust strings, decoded lossily.
    let raw = String::from_utf8_lossy(bytes);
    let parts = match components(&raw) {
        Ok(parts) => parts,
        Err(e) => {
            let refused = match e {
                JailError::Nul => raw.contains('\0'),
                JailError::TooLong => raw.split(['/', '\\']).any(|p| p.len() > 255),
            };
            assert!(refused, "{e} for {raw:?}");
            assert_eq!(virtual_path(&raw), Err(e.clone()));
            assert_eq!(resolve(&raw), Err(e));
            return;
        }
    };
    for part in &parts {
        assert!(
            !matches!(part.as_str(), "" | "." | ".." | "~"),
            "component {part:?} of {raw:?}"
        );
        assert!(!part.contains(['/', '\\', '\0']), "component {part:?}");
        assert!(part.len() <= 255, "a component of {} bytes", part.len());
    }
    // REALPATH's answer is absolute, and normalising it again changes
    // nothing.
    let shown = virtual_path(&raw).expect("components were fine");
    assert!(shown.starts_with('/'));
    assert_eq!(components(&shown).as_deref(), Ok(parts.as_slice()));
    assert_eq!(virtual_path(&shown).as_deref(), Ok(shown.as_str()));
    let place = resolve(&raw).expect("components were fine");
    assert_eq!(resolve(&shown).as_ref(), Ok(&place), "{raw:?} vs {shown:?}");
    let jail = Jail::new(FEED_DIR.into());
    match place {
        Place::Root => assert!(parts.is_empty()),
        Place::Area(area) => assert_eq!(parts, [area.name()]),
        Place::File(area, name) => {
            assert_eq!(parts, [area.name(), name.as_str()]);
            let path = jail.file_path(area, &name);
            // Lexically one file directly in one of the three folders.
            assert_eq!(path.parent(), Some(jail.area_dir(area).as_path()));
            assert!(path.starts_with(FEED_DIR));
            assert!(path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
            assert!(Area::ALL.contains(&area));
        }
        Place::Nowhere => {
            let known = |p: &str| Area::ALL.iter().any(|a| a.name() == p);
            assert!(parts.len() > 2 || !parts.first().is_some_and(|p| known(p)));
        }
    }
    assert_eq!(jail.feed_dir(), Path::new(FEED_DIR));
});
