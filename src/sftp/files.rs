//! The SFTP subsystem of one session: our own request loop over
//! russh-sftp's packet codec, and the file operations inside the jail.
//!
//! Why not `russh_sftp::server::run`: its loop answers one request at a
//! time and flushes after each reply, keeps reading after an oversized
//! packet (the stream is then out of step), and says nothing when the
//! stream ends with files still open. Here a reader task decodes and
//! answers requests while a writer task sends the replies in batches, an
//! oversized or undecodable packet ends the session, and an upload still
//! open when the session ends is discarded.
//!
//! Invariants:
//! 1. An upload is written to a hidden temporary file and renamed to its
//!    name only on a successful CLOSE, after fsync: a file under its final
//!    name in `upload/` is always whole.
//! 2. Uploads go only to `upload/`; `errors/` and `archive/` are read-only.
//! 3. A file counts as arrived (and is handed to the worker) when its CLOSE
//!    succeeds under a pickable name, or when it is renamed to one.
//! 4. As in OpenSSH's sftp-server, a file opened with APPEND takes every
//!    WRITE at its end, whatever offset the client sends (asyncssh's `'a'`
//!    and Go's `O_APPEND` send 0). An upload that does not truncate an
//!    existing file starts from a copy of it, so appending and resuming
//!    work on the temporary file too.
//! 5. Open handles (files and folders) are capped per session
//!    ([`MAX_HANDLES_PER_SESSION`]) and per account over all its sessions
//!    ([`MAX_HANDLES_PER_ACCOUNT`]): one client cannot take the process's
//!    file descriptors from the web page and the other feeds.

use std::collections::HashMap;
use std::fs::File as FsFile;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, FileMode, Handle, Name, OpenFlags, Packet, StatusCode,
    Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::jail::{self, Area, Jail, Place};
use crate::layout::{
    claim_upload, is_pickable, sync_dir, FeedFolders, MAX_FILE_NAME, MAX_UPLOAD_NAME,
    UPLOAD_TEMP_PREFIX as TEMP_PREFIX,
};

/// Requests larger than this end the session. OpenSSH writes 32 KiB (up
/// to 255 KiB with `-B`); the header adds a few bytes.
const MAX_PACKET: u32 = 256 * 1024 + 1024;
/// A READ returns at most this much.
const MAX_READ: u32 = 256 * 1024;
/// Replies waiting for the writer task.
const REPLY_QUEUE: usize = 1024;
const READDIR_BATCH: usize = 100;
/// Open handles per session. Clients keep one or two open (OpenSSH's
/// `put -R` a few dozen at most); 64 leaves room for parallel transfers.
pub const MAX_HANDLES_PER_SESSION: usize = 64;
/// Open handles per account over all its sessions: four sessions' worth,
/// so that an account's sessions (10 by default) cannot hold more than a
/// small share of the server's file descriptors.
pub const MAX_HANDLES_PER_ACCOUNT: usize = 256;

/// Open handles per account, shared by all sessions.
#[derive(Debug, Default)]
pub struct OpenHandleCounts(std::sync::Mutex<HashMap<String, usize>>);

impl OpenHandleCounts {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_take(&self, account: &str) -> bool {
        let mut counts = self.counts();
        let n = counts.entry(account.to_string()).or_default();
        if *n >= MAX_HANDLES_PER_ACCOUNT {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, account: &str, handles: usize) {
        let mut counts = self.counts();
        if let Some(n) = counts.get_mut(account) {
            *n = n.saturating_sub(handles);
            if *n == 0 {
                counts.remove(account);
            }
        }
    }
}

/// The account a session belongs to, for the per-account handle cap.
struct AccountHandles {
    account: String,
    counts: Arc<OpenHandleCounts>,
}

/// A file that has arrived in an account's `upload/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub feed: String,
    pub name: String,
    /// Its claim in `processing/` (see `layout::claim_upload`), made the
    /// moment it arrived: a second upload of the same name cannot take its
    /// place before the worker gets to it.
    pub claim: String,
}

/// Tells the worker about an arrival.
pub type ArrivalSink = Arc<dyn Fn(Arrival) + Send + Sync>;

struct Upload {
    file: FsFile,
    temp: PathBuf,
    name: String,
    /// Opened with APPEND: writes go to the end (invariant 4).
    append: bool,
    /// Why the upload can no longer succeed (too big, a write failed).
    failed: Option<String>,
}

enum OpenHandle {
    Read(FsFile),
    Write(Upload),
    Dir(Option<Vec<File>>),
}

/// Everything one SFTP session knows.
pub struct SftpSession {
    jail: Jail,
    feed: String,
    max_upload: u64,
    /// Names with these endings wait for a rename (`[sftp]
    /// temporary_suffixes`).
    temporary_suffixes: Vec<String>,
    arrivals: ArrivalSink,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    initialised: bool,
    account_handles: Option<AccountHandles>,
}

/// A failed request: the status code and a message for the client.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(code: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal(code, message.into())
    }
    fn no_such_file() -> Refusal {
        Refusal::new(StatusCode::NoSuchFile, "no such file")
    }
    fn io(what: &str, e: std::io::Error) -> Refusal {
        match e.kind() {
            std::io::ErrorKind::NotFound => Refusal::no_such_file(),
            _ => {
                tracing::warn!(error = %e, "{what} failed");
                Refusal::new(StatusCode::Failure, format!("{what} failed"))
            }
        }
    }
}

impl From<jail::JailError> for Refusal {
    fn from(e: jail::JailError) -> Self {
        Refusal::new(StatusCode::BadMessage, e.to_string())
    }
}

type Reply = Result<Packet, Refusal>;

fn ok(id: u32) -> Packet {
    Packet::status(id, StatusCode::Ok, "OK", "en-US")
}

fn read_only(area: Area) -> Refusal {
    Refusal::new(
        StatusCode::PermissionDenied,
        format!("/{} is read-only; upload into /upload", area.name()),
    )
}

fn dir_attrs(writable: bool) -> FileAttributes {
    let mut a = FileAttributes::empty();
    a.size = Some(4096);
    a.permissions = Some(if writable { 0o755 } else { 0o555 } | FileMode::DIR.bits());
    a.uid = Some(0);
    a.gid = Some(0);
    a
}

fn file_attrs(meta: &std::fs::Metadata, writable: bool) -> FileAttributes {
    let mut a = FileAttributes::from(meta);
    a.uid = Some(0);
    a.gid = Some(0);
    a.permissions = Some(if writable { 0o644 } else { 0o444 } | FileMode::REG.bits());
    a
}

/// A name to be imported must leave room for the stamps the worker adds
/// (`layout::MAX_UPLOAD_NAME`): refused here rather than accepted and
/// never processed. Temporary names (`.part`, ...) are never stamped, so
/// only the file system's limit applies to them.
fn importable_length(name: String, temporary_suffixes: &[String]) -> Result<String, Refusal> {
    let limit = if is_pickable(&name, temporary_suffixes) {
        MAX_UPLOAD_NAME
    } else {
        MAX_FILE_NAME
    };
    if name.len() > limit {
        return Err(Refusal::new(
            StatusCode::Failure,
            format!(
                "file name too long: at most {limit} bytes (this one has {}); use a shorter name",
                name.len()
            ),
        ));
    }
    Ok(name)
}

/// The name a client may use: our temporary files are not theirs.
fn visible(name: &str) -> bool {
    !name.starts_with(TEMP_PREFIX)
}

impl SftpSession {
    pub fn new(
        jail: Jail,
        feed: String,
        max_upload: u64,
        temporary_suffixes: Vec<String>,
        arrivals: ArrivalSink,
    ) -> SftpSession {
        SftpSession {
            jail,
            feed,
            max_upload,
            temporary_suffixes,
            arrivals,
            handles: HashMap::new(),
            next_handle: 1,
            initialised: false,
            account_handles: None,
        }
    }

    /// Counts this session's open handles against `account`'s cap.
    pub fn count_handles_for(mut self, account: &str, counts: Arc<OpenHandleCounts>) -> Self {
        self.account_handles = Some(AccountHandles {
            account: account.to_string(),
            counts,
        });
        self
    }

    /// Runs an OPEN or OPENDIR if there is room for one more handle
    /// (invariant 4); a refused one takes no room.
    fn with_handle_room(&mut self, open: impl FnOnce(&mut Self) -> Reply) -> Reply {
        if self.handles.len() >= MAX_HANDLES_PER_SESSION {
            return Err(Refusal::new(
                StatusCode::Failure,
                format!("too many open files in this session (at most {MAX_HANDLES_PER_SESSION}): close some first"),
            ));
        }
        if let Some(a) = &self.account_handles {
            if !a.counts.try_take(&a.account) {
                return Err(Refusal::new(
                    StatusCode::Failure,
                    format!("too many open files in this account's sessions (at most {MAX_HANDLES_PER_ACCOUNT}): close some first"),
                ));
            }
        }
        let reply = open(self);
        if reply.is_err() {
            self.give_back_handles(1);
        }
        reply
    }

    fn give_back_handles(&self, handles: usize) {
        if let Some(a) = &self.account_handles {
            a.counts.give_back(&a.account, handles);
        }
    }

    fn new_handle(&mut self, h: OpenHandle) -> String {
        let id = self.next_handle.to_string();
        self.next_handle += 1;
        self.handles.insert(id.clone(), h);
        id
    }

    /// The regular file a path names, with its metadata; symlinks and
    /// anything else count as missing (invariant 3 of the jail).
    fn existing_file(
        &self,
        raw: &str,
    ) -> Result<(Area, String, PathBuf, std::fs::Metadata), Refusal> {
        match jail::resolve(raw)? {
            Place::File(area, name) if visible(&name) => {
                let path = self.jail.file_path(area, &name);
                let meta = std::fs::symlink_metadata(&path).map_err(|e| Refusal::io("stat", e))?;
                if !meta.file_type().is_file() {
                    return Err(Refusal::no_such_file());
                }
                Ok((area, name, path, meta))
            }
            _ => Err(Refusal::no_such_file()),
        }
    }

    fn upload_target(&self, raw: &str) -> Result<String, Refusal> {
        match jail::resolve(raw)? {
            Place::File(Area::Upload, name) if visible(&name) => {
                importable_length(name, &self.temporary_suffixes)
            }
            Place::File(area, _) | Place::Area(area) => Err(read_only(area)),
            _ => Err(Refusal::new(
                StatusCode::PermissionDenied,
                "files can only be written in /upload",
            )),
        }
    }

    async fn handle(&mut self, packet: Packet) -> Packet {
        let id = packet.get_request_id();
        let reply = match packet {
            Packet::Init(init) => {
                self.initialised = true;
                tracing::debug!(version = init.version, "sftp init");
                return Packet::Version(Version::new());
            }
            _ if !self.initialised => Err(Refusal::new(StatusCode::BadMessage, "INIT first")),
            Packet::RealPath(p) => self.realpath(id, &p.path),
            Packet::Stat(p) => self.stat(id, &p.path),
            Packet::Lstat(p) => self.stat(id, &p.path),
            Packet::Fstat(p) => self.fstat(id, &p.handle),
            Packet::SetStat(p) => self.stat(id, &p.path).map(|_| ok(id)),
            Packet::FSetStat(p) => self.fstat(id, &p.handle).map(|_| ok(id)),
            Packet::OpenDir(p) => self.with_handle_room(|s| s.opendir(id, &p.path)),
            Packet::ReadDir(p) => self.readdir(id, &p.handle),
            Packet::Open(p) => self.with_handle_room(|s| s.open(id, &p.filename, p.pflags)),
            Packet::Read(p) => self.read(id, &p.handle, p.offset, p.len),
            Packet::Write(p) => self.write(id, &p.handle, p.offset, &p.data),
            Packet::Close(p) => self.close(id, &p.handle).await,
            Packet::Remove(p) => self.remove(id, &p.filename),
            Packet::Rename(p) => self.rename(id, &p.oldpath, &p.newpath),
            Packet::MkDir(_) => Err(Refusal::new(
                StatusCode::PermissionDenied,
                "folders cannot be created; upload into /upload",
            )),
            Packet::RmDir(_) => Err(Refusal::new(
                StatusCode::PermissionDenied,
                "folders cannot be removed",
            )),
            Packet::Symlink(_) | Packet::ReadLink(_) => Err(Refusal::new(
                StatusCode::OpUnsupported,
                "links are not supported",
            )),
            Packet::Extended(_) => Err(Refusal::new(
                StatusCode::OpUnsupported,
                "no extensions are supported",
            )),
            _ => Err(Refusal::new(StatusCode::BadMessage, "not a request")),
        };
        reply.unwrap_or_else(|Refusal(code, message)| Packet::status(id, code, &message, "en-US"))
    }

    fn realpath(&self, id: u32, raw: &str) -> Reply {
        let path = jail::virtual_path(raw)?;
        Ok(Packet::Name(Name {
            id,
            files: vec![File::dummy(path)],
        }))
    }

    fn attrs_of(&self, raw: &str) -> Result<FileAttributes, Refusal> {
        match jail::resolve(raw)? {
            Place::Root => Ok(dir_attrs(false)),
            Place::Area(area) => Ok(dir_attrs(area == Area::Upload)),
            Place::File(..) => {
                let (area, _, _, meta) = self.existing_file(raw)?;
                Ok(file_attrs(&meta, area == Area::Upload))
            }
            Place::Nowhere => Err(Refusal::no_such_file()),
        }
    }

    fn stat(&self, id: u32, raw: &str) -> Reply {
        let attrs = self.attrs_of(raw)?;
        Ok(Packet::Attrs(Attrs { id, attrs }))
    }

    fn fstat(&self, id: u32, handle: &str) -> Reply {
        let attrs = match self.handles.get(handle) {
            Some(OpenHandle::Read(f)) => {
                file_attrs(&f.metadata().map_err(|e| Refusal::io("fstat", e))?, false)
            }
            Some(OpenHandle::Write(u)) => file_attrs(
                &u.file.metadata().map_err(|e| Refusal::io("fstat", e))?,
                true,
            ),
            Some(OpenHandle::Dir(_)) => dir_attrs(false),
            None => return Err(Refusal::new(StatusCode::Failure, "unknown handle")),
        };
        Ok(Packet::Attrs(Attrs { id, attrs }))
    }

    fn opendir(&mut self, id: u32, raw: &str) -> Reply {
        let entries = match jail::resolve(raw)? {
            Place::Root => Area::ALL
                .iter()
                .map(|a| File::new(a.name(), dir_attrs(*a == Area::Upload)))
                .collect(),
            Place::Area(area) => self.list_area(area)?,
            Place::File(..) => {
                return Err(Refusal::new(StatusCode::Failure, "not a folder"));
            }
            Place::Nowhere => return Err(Refusal::no_such_file()),
        };
        let handle = self.new_handle(OpenHandle::Dir(Some(entries)));
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn list_area(&self, area: Area) -> Result<Vec<File>, Refusal> {
        let dir = self.jail.area_dir(area);
        let read = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Refusal::io("listing", e)),
        };
        let mut files = Vec::new();
        for entry in read.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if visible(&name) && meta.file_type().is_file() {
                files.push(File::new(name, file_attrs(&meta, area == Area::Upload)));
            }
        }
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok(files)
    }

    fn readdir(&mut self, id: u32, handle: &str) -> Reply {
        match self.handles.get_mut(handle) {
            Some(OpenHandle::Dir(entries)) => match entries.take() {
                Some(mut all) if !all.is_empty() => {
                    let rest = all.split_off(all.len().min(READDIR_BATCH));
                    if !rest.is_empty() {
                        *entries = Some(rest);
                    }
                    Ok(Packet::Name(Name { id, files: all }))
                }
                _ => Err(Refusal::new(StatusCode::Eof, "end of folder")),
            },
            _ => Err(Refusal::new(StatusCode::Failure, "unknown handle")),
        }
    }

    fn open(&mut self, id: u32, raw: &str, flags: OpenFlags) -> Reply {
        let writing = flags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        let handle = if writing {
            let name = self.upload_target(raw)?;
            OpenHandle::Write(self.start_upload(name, flags)?)
        } else {
            let (_, _, path, _) = self.existing_file(raw)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Refusal::io("open", e))?;
            OpenHandle::Read(file)
        };
        let handle = self.new_handle(handle);
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn start_upload(&mut self, name: String, flags: OpenFlags) -> Result<Upload, Refusal> {
        let target = self.jail.file_path(Area::Upload, &name);
        let exists = match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_file() => true,
            Ok(_) => return Err(not_a_file(&name)),
            Err(_) => false,
        };
        if exists && flags.contains(OpenFlags::EXCLUDE) {
            return Err(Refusal::new(StatusCode::Failure, "the file already exists"));
        }
        if !exists && !flags.contains(OpenFlags::CREATE) {
            return Err(Refusal::no_such_file());
        }
        let dir = self.jail.area_dir(Area::Upload);
        std::fs::create_dir_all(&dir).map_err(|e| Refusal::io("creating /upload", e))?;
        let temp = dir.join(format!("{TEMP_PREFIX}{}-{}", std::process::id(), unique()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .map_err(|e| Refusal::io("creating the upload", e))?;
        // Resuming or appending (no TRUNCATE on an existing file): start
        // from its bytes (invariant 4).
        if exists && !flags.contains(OpenFlags::TRUNCATE) {
            if let Err(e) = copy_without_following(&target, &file) {
                let _ = std::fs::remove_file(&temp);
                return Err(Refusal::io("resuming the upload", e));
            }
        }
        Ok(Upload {
            file,
            temp,
            name,
            append: flags.contains(OpenFlags::APPEND),
            failed: None,
        })
    }

    fn read(&mut self, id: u32, handle: &str, offset: u64, len: u32) -> Reply {
        let file = match self.handles.get(handle) {
            Some(OpenHandle::Read(f)) => f,
            Some(OpenHandle::Write(u)) => &u.file,
            _ => return Err(Refusal::new(StatusCode::Failure, "unknown handle")),
        };
        let mut buf = vec![0u8; len.min(MAX_READ) as usize];
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|e| Refusal::io("read", e))?;
        if n == 0 && !buf.is_empty() {
            return Err(Refusal::new(StatusCode::Eof, "end of file"));
        }
        buf.truncate(n);
        Ok(Packet::Data(Data { id, data: buf }))
    }

    fn write(&mut self, id: u32, handle: &str, offset: u64, data: &[u8]) -> Reply {
        let max = self.max_upload;
        let upload = match self.handles.get_mut(handle) {
            Some(OpenHandle::Write(u)) => u,
            Some(_) => {
                return Err(Refusal::new(
                    StatusCode::PermissionDenied,
                    "the file is not open for writing",
                ))
            }
            None => return Err(Refusal::new(StatusCode::Failure, "unknown handle")),
        };
        if let Some(why) = &upload.failed {
            return Err(Refusal::new(StatusCode::Failure, why.clone()));
        }
        let offset = if upload.append {
            upload
                .file
                .metadata()
                .map_err(|e| Refusal::io("appending", e))?
                .len()
        } else {
            offset
        };
        let end = offset.saturating_add(data.len() as u64);
        if end > max {
            let why = format!("the upload is larger than the maximum of {max} bytes");
            tracing::warn!(file = %upload.name, max, "upload refused: too large");
            upload.failed = Some(why.clone());
            // Give the space back now rather than at CLOSE.
            let _ = upload.file.set_len(0);
            return Err(Refusal::new(StatusCode::Failure, why));
        }
        if let Err(e) = upload.file.write_all_at(data, offset) {
            let why = format!("writing the upload failed: {e}");
            tracing::warn!(file = %upload.name, error = %e, "upload write failed");
            upload.failed = Some(why.clone());
            return Err(Refusal::new(StatusCode::Failure, why));
        }
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: &str) -> Reply {
        let closed = self.handles.remove(handle);
        if closed.is_some() {
            self.give_back_handles(1);
        }
        match closed {
            Some(OpenHandle::Write(upload)) => self.finish_upload(id, upload).await,
            Some(_) => Ok(ok(id)),
            None => Err(Refusal::new(StatusCode::Failure, "unknown handle")),
        }
    }

    async fn finish_upload(&mut self, id: u32, upload: Upload) -> Reply {
        let target = self.jail.file_path(Area::Upload, &upload.name);
        let name = upload.name.clone();
        let done = tokio::task::spawn_blocking(move || commit_upload(upload, &target))
            .await
            .map_err(|e| Refusal::new(StatusCode::Failure, format!("upload failed: {e}")))?;
        done.map_err(|why| Refusal::new(StatusCode::Failure, why))?;
        tracing::info!(file = %name, "upload complete");
        self.arrived(&name);
        Ok(ok(id))
    }

    fn arrived(&self, name: &str) {
        if !is_pickable(name, &self.temporary_suffixes) {
            return;
        }
        let folders = FeedFolders::new(self.jail.feed_dir().to_path_buf());
        match claim_upload(&folders, name) {
            Ok(Some(claim)) => (self.arrivals)(Arrival {
                feed: self.feed.clone(),
                name: name.to_string(),
                claim,
            }),
            Ok(None) => {}
            // It stays in upload/ and is taken at the next start.
            Err(e) => tracing::error!(file = name, error = %e, "the upload cannot be claimed"),
        }
    }

    fn remove(&mut self, id: u32, raw: &str) -> Reply {
        let (area, _, path, _) = self.existing_file(raw)?;
        if area != Area::Upload {
            return Err(read_only(area));
        }
        std::fs::remove_file(&path).map_err(|e| Refusal::io("remove", e))?;
        Ok(ok(id))
    }

    /// Overwrites an existing target: WinSCP and FileZilla upload to a
    /// temporary name, then rename over the old file, and SFTP v3 has no
    /// flag to ask for it.
    fn rename(&mut self, id: u32, from: &str, to: &str) -> Reply {
        let (area, _, from_path, _) = self.existing_file(from)?;
        if area != Area::Upload {
            return Err(read_only(area));
        }
        let name = self.upload_target(to)?;
        let to_path = self.jail.file_path(Area::Upload, &name);
        if std::fs::symlink_metadata(&to_path).is_ok_and(|m| !m.file_type().is_file()) {
            return Err(not_a_file(&name));
        }
        std::fs::rename(&from_path, &to_path).map_err(|e| Refusal::io("rename", e))?;
        sync_dir(&self.jail.area_dir(Area::Upload));
        self.arrived(&name);
        Ok(ok(id))
    }

    /// The session has ended: uploads still open were never finished.
    fn discard_open_uploads(&mut self) {
        self.give_back_handles(self.handles.len());
        for (_, h) in self.handles.drain() {
            if let OpenHandle::Write(u) = h {
                tracing::warn!(file = %u.name, "upload discarded: the connection ended before the file was closed");
                let _ = std::fs::remove_file(&u.temp);
            }
        }
    }
}

impl Drop for SftpSession {
    fn drop(&mut self) {
        self.discard_open_uploads();
    }
}

/// Something other than a regular file (a symlink planted in the data
/// folder, a folder) holds the name: never written through or replaced.
fn not_a_file(name: &str) -> Refusal {
    tracing::warn!(
        file = name,
        "refused: the name in upload/ is not a regular file"
    );
    Refusal::new(
        StatusCode::PermissionDenied,
        format!("{name} in /upload is not a regular file; choose another name"),
    )
}

/// Copies an upload being resumed into its temporary file; a symlink put
/// in its place since it was checked is refused (O_NOFOLLOW), never
/// followed out of the data folder.
fn copy_without_following(from: &Path, to: &FsFile) -> std::io::Result<u64> {
    let mut source = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    std::io::copy(&mut source, &mut &*to)
}

/// fsync, then rename into place (invariant 1). On failure the temporary
/// file is removed and the reason returned.
fn commit_upload(upload: Upload, target: &Path) -> Result<(), String> {
    let Upload {
        file, temp, failed, ..
    } = upload;
    let result = match failed {
        Some(why) => Err(why),
        None => file
            .sync_all()
            .and_then(|_| std::fs::rename(&temp, target))
            .map_err(|e| format!("saving the upload failed: {e}")),
    };
    drop(file);
    match &result {
        Ok(()) => {
            if let Some(dir) = target.parent() {
                sync_dir(dir);
            }
        }
        Err(_) => {
            let _ = std::fs::remove_file(&temp);
        }
    }
    result
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 48)
}

/// Runs the SFTP protocol on `stream` until the client leaves.
pub async fn serve<S>(stream: S, mut session: SftpSession)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Bytes>(REPLY_QUEUE);
    let writer_task = tokio::spawn(write_replies(writer, rx));
    loop {
        let packet = match read_packet(&mut reader).await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(why) => {
                tracing::warn!("sftp session ended: {why}");
                break;
            }
        };
        let reply = session.handle(packet).await;
        let bytes = match Bytes::try_from(reply) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "a reply could not be encoded");
                break;
            }
        };
        if tx.send(bytes).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer_task.await;
    session.discard_open_uploads();
    tracing::debug!("sftp session closed");
}

/// The next request; `None` at a clean end of stream.
async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Packet>, String> {
    let len = match reader.read_u32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read failed: {e}")),
    };
    if len == 0 || len > MAX_PACKET {
        return Err(format!("a packet of {len} bytes is out of bounds"));
    }
    let mut buf = BytesMut::zeroed(len as usize);
    reader
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    let mut bytes = buf.freeze();
    Packet::try_from(&mut bytes)
        .map(Some)
        .map_err(|e| format!("a malformed packet: {e}"))
}

/// Sends replies, as many as are ready in one write.
async fn write_replies<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_temporary_files_are_hidden_and_never_picked_up() {
        assert!(!visible(&format!("{TEMP_PREFIX}1-2")));
        assert!(!is_pickable(&format!("{TEMP_PREFIX}1-2"), &[]));
        assert!(visible("hr.csv"));
    }
}
