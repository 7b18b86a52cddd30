//! The jail: every path a client sends is resolved here, and only here,
//! into a place inside its feed's folder.
//!
//! A session starts in `/upload` (as a login starts in its home folder):
//! REALPATH of `.` answers `/upload` and relative paths resolve from there,
//! so `put file.csv` works in every client.
//!
//! Invariants:
//! 1. Resolution is lexical: a relative path starts at `/upload`, `..` is
//!    clamped at `/`, `.` and empty components vanish, a leading `~` is
//!    `/`, `\` separates like `/`. Inside `/upload` the names `upload`,
//!    `errors` and `archive` lead to those folders, so scripts written when
//!    sessions started at `/` (`cd upload`, `get errors/x`) keep working.
//!    The result never has more than two components, so it can name
//!    nothing but the three areas and the files directly in them.
//! 2. A path holding a NUL byte is refused.
//! 3. No symlink is ever followed or created (files are opened with
//!    `O_NOFOLLOW`; `symlink` is refused).

use std::path::{Path, PathBuf};

/// The three folders an account sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Upload,
    Errors,
    Archive,
}

impl Area {
    pub const ALL: [Area; 3] = [Area::Upload, Area::Errors, Area::Archive];

    pub fn name(self) -> &'static str {
        match self {
            Area::Upload => "upload",
            Area::Errors => "errors",
            Area::Archive => "archive",
        }
    }

    fn from_name(name: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Where a resolved path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Root,
    Area(Area),
    File(Area, String),
    /// Somewhere that cannot exist in the jail (`/etc`, `/upload/a/b`).
    Nowhere,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailError {
    #[error("the path holds a NUL byte")]
    Nul,
    #[error("a file name is longer than 255 bytes")]
    TooLong,
}

/// The folder a session starts in: relative paths resolve from here.
pub const START: Area = Area::Upload;

/// The normalised components of a client's path (invariant 1), from `/`.
pub fn components(raw: &str) -> Result<Vec<String>, JailError> {
    if raw.contains('\0') {
        return Err(JailError::Nul);
    }
    let mut out: Vec<String> = Vec::new();
    if starts_in_the_start_folder(raw) {
        out.push(START.name().to_string());
    }
    for part in raw.split(['/', '\\']) {
        match part {
            "" | "." | "~" => {}
            ".." => {
                out.pop();
            }
            name if name.len() > 255 => return Err(JailError::TooLong),
            name => out.push(name.to_string()),
        }
    }
    Ok(follow_area_names_in_start(out))
}

/// Relative paths start in [`START`]; `/…`, `\…` and `~`, `~/…` start at
/// the jail's root (`~` has always meant `/` here).
fn starts_in_the_start_folder(raw: &str) -> bool {
    let first = raw.split(['/', '\\']).next().unwrap_or_default();
    !(first.is_empty() && !raw.is_empty() || first == "~")
}

/// `/upload/errors/x` is `/errors/x`: nothing but files can live in
/// `/upload`, so an area's name there can only mean the area, as it did
/// for a session that started at `/`.
fn follow_area_names_in_start(mut parts: Vec<String>) -> Vec<String> {
    while parts.len() >= 2 && parts[0] == START.name() && Area::from_name(&parts[1]).is_some() {
        parts.remove(0);
    }
    parts
}

/// The absolute virtual path, as REALPATH answers it: always starts with
/// `/`; `.` and the empty path are the start folder, `/upload`.
pub fn virtual_path(raw: &str) -> Result<String, JailError> {
    Ok(format!("/{}", components(raw)?.join("/")))
}

pub fn resolve(raw: &str) -> Result<Place, JailError> {
    let parts = components(raw)?;
    Ok(match parts.as_slice() {
        [] => Place::Root,
        [area] => Area::from_name(area).map_or(Place::Nowhere, Place::Area),
        [area, name] => {
            Area::from_name(area).map_or(Place::Nowhere, |a| Place::File(a, name.clone()))
        }
        _ => Place::Nowhere,
    })
}

/// One feed's folders on disk.
#[derive(Debug, Clone)]
pub struct Jail {
    feed_dir: PathBuf,
}

impl Jail {
    pub fn new(feed_dir: PathBuf) -> Jail {
        Jail { feed_dir }
    }

    pub fn area_dir(&self, area: Area) -> PathBuf {
        self.feed_dir.join(area.name())
    }

    /// `name` comes from [`resolve`]: one component, never `.` or `..`.
    pub fn file_path(&self, area: Area, name: &str) -> PathBuf {
        self.area_dir(area).join(name)
    }

    pub fn feed_dir(&self) -> &Path {
        &self.feed_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(raw: &str) -> Place {
        resolve(raw).unwrap()
    }

    #[test]
    fn a_session_starts_in_upload() {
        assert_eq!(virtual_path(".").unwrap(), "/upload");
        assert_eq!(virtual_path("").unwrap(), "/upload");
        assert_eq!(virtual_path("./").unwrap(), "/upload");
        assert_eq!(virtual_path("/").unwrap(), "/");
        assert_eq!(virtual_path("\\").unwrap(), "/");
        assert_eq!(virtual_path("~").unwrap(), "/");
        assert_eq!(virtual_path("..").unwrap(), "/");
        assert_eq!(
            place("file.csv"),
            Place::File(Area::Upload, "file.csv".into())
        );
        assert_eq!(
            place("./file.csv"),
            Place::File(Area::Upload, "file.csv".into())
        );
        assert_eq!(place("~root/x"), Place::Nowhere);
    }

    #[test]
    fn the_other_folders_stay_reachable_from_upload() {
        assert_eq!(place("../errors"), Place::Area(Area::Errors));
        assert_eq!(
            place("/archive/a.csv"),
            Place::File(Area::Archive, "a.csv".into())
        );
        assert_eq!(virtual_path("../archive/").unwrap(), "/archive");
    }

    /// Scripts written when a session started at `/`.
    #[test]
    fn area_names_inside_upload_lead_to_the_areas() {
        assert_eq!(virtual_path("upload").unwrap(), "/upload");
        assert_eq!(virtual_path("/upload/upload").unwrap(), "/upload");
        assert_eq!(virtual_path("upload/./x.csv").unwrap(), "/upload/x.csv");
        assert_eq!(
            place("errors/r.csv"),
            Place::File(Area::Errors, "r.csv".into())
        );
        assert_eq!(place("/upload/archive"), Place::Area(Area::Archive));
        assert_eq!(
            place("/upload/upload/upload/x"),
            Place::File(Area::Upload, "x".into())
        );
        // Only as the first name in /upload: deeper, it is no folder.
        assert_eq!(
            place("/errors/upload"),
            Place::File(Area::Errors, "upload".into())
        );
        assert_eq!(place("/upload/x/upload"), Place::Nowhere);
    }

    /// Clients send REALPATH's answer back: it must name the same place.
    #[test]
    fn the_realpath_answer_resolves_to_the_same_place() {
        for raw in [
            "",
            ".",
            "..",
            "~",
            "~/",
            "~root",
            "x.csv",
            "upload",
            "upload/upload/x",
            "errors/../x",
            "/upload/errors/..",
            "../upload/archive/a",
            "\\upload\\x",
            "a/../../errors/r",
            "./upload/./",
            "/upload/x/..",
        ] {
            let shown = virtual_path(raw).unwrap();
            assert_eq!(virtual_path(&shown).unwrap(), shown, "{raw:?}");
            assert_eq!(resolve(&shown), resolve(raw), "{raw:?} → {shown:?}");
        }
    }

    #[test]
    fn traversal_is_clamped_at_the_root() {
        for raw in [
            "../../etc/passwd",
            "/../../etc/passwd",
            "upload/../../etc/passwd",
            "//upload//..//..//etc/passwd",
            "..\\..\\etc\\passwd",
            "~/../etc/passwd",
        ] {
            assert_eq!(place(raw), Place::Nowhere, "{raw}");
        }
        assert_eq!(
            place("../upload/x.csv"),
            Place::File(Area::Upload, "x.csv".into())
        );
        assert_eq!(
            place("/upload/../../upload/x"),
            Place::File(Area::Upload, "x".into())
        );
        assert_eq!(place("/upload/../errors"), Place::Area(Area::Errors));
        assert_eq!(place("~/archive/"), Place::Area(Area::Archive));
    }

    #[test]
    fn deeper_paths_and_other_folders_are_nowhere() {
        assert_eq!(place("/upload/a/b"), Place::Nowhere);
        assert_eq!(place("/etc"), Place::Nowhere);
        assert_eq!(place("/home/user/upload/x"), Place::Nowhere);
        assert_eq!(place("/held/1-x.csv"), Place::Nowhere);
    }

    #[test]
    fn nul_bytes_and_long_names_are_refused() {
        assert_eq!(resolve("/upload/a\0b"), Err(JailError::Nul));
        assert_eq!(
            resolve(&format!("/upload/{}", "a".repeat(256))),
            Err(JailError::TooLong)
        );
    }

    #[test]
    fn a_resolved_file_stays_in_its_area() {
        let jail = Jail::new(PathBuf::from("/data/hr"));
        for raw in ["../../x", "/upload/../../../x", "upload/x", "\\upload\\x"] {
            if let Place::File(area, name) = place(raw) {
                let p = jail.file_path(area, &name);
                assert!(p.starts_with("/data/hr/upload"), "{raw} → {}", p.display());
                assert_eq!(p.parent(), Some(Path::new("/data/hr/upload")));
            }
        }
    }
}
