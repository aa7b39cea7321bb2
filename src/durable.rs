//! Files that survive a crash, one way everywhere:
//!
//! - [`write_atomic`] and [`Staged`]: a file appears complete or not at
//!   all. Bytes go to a temporary file in the target's directory, which is
//!   synced, renamed over the target, and the directory synced, so the
//!   rename itself is durable.
//! - [`append_line`] and [`read_lines`]: append-only JSON lines, each synced.
//!   A crash can tear the last line; readers skip a line that does not
//!   parse, and the next append starts on a fresh line instead of gluing
//!   itself to the torn one. [`LineTail`] reads only what was appended
//!   since its last read, and agrees with [`read_lines`].
//!
//! Crash tests need a kill -9 at an exact point, which no timing can hit
//! reliably. `WAFER_CRASH_AT=STAGE:NAME` makes the process kill itself
//! with SIGKILL when it replaces a file whose name starts with `NAME` (not
//! empty), at `STAGE`: `write` (half the bytes written, in
//! [`write_atomic`] only), `rename` (written and synced, not yet renamed)
//! or `sync_dir` (renamed, directory not yet synced), both in
//! [`Staged::publish`].
//! `WAFER_CRASH_AT=point:NAME` kills at the named [`crash_point`] in other
//! code (for example `edge.before_commit`). The variable is read once per
//! process and costs a comparison per point otherwise.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tempfile::NamedTempFile;

/// Syncs a directory, making renames and new entries in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing ancestors, syncing the parent of each
/// directory created, so the new directories survive a crash with what is
/// then written in them.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(current) = next {
        if current.as_os_str().is_empty() || current.is_dir() {
            break;
        }
        missing.push(current);
        next = current.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_dir(parent(created))?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A file being written beside its target, invisible until
/// [`Staged::publish`]; dropped unpublished, it is removed.
#[derive(Debug)]
pub struct Staged {
    file: NamedTempFile,
    target: PathBuf,
}

impl Staged {
    /// Starts a file that will replace `target`, in its directory (which
    /// must exist).
    pub fn new(target: &Path) -> io::Result<Self> {
        Self::with_mode(target, 0o666)
    }

    /// As [`Staged::new`], readable and writable by the owner only from
    /// the moment it exists (for secrets).
    pub fn private(target: &Path) -> io::Result<Self> {
        Self::with_mode(target, 0o600)
    }

    fn with_mode(target: &Path, #[allow(unused_variables)] mode: u32) -> io::Result<Self> {
        let dir = parent(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // By default readable like a file `File::create` makes (0666 less
        // the umask), not tempfile's private 0600: the published file keeps
        // the mode.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
        let file = builder.tempfile_in(dir)?;
        Ok(Staged {
            file,
            target: target.to_path_buf(),
        })
    }

    /// The open temporary file, to write through.
    pub fn file(&self) -> &File {
        self.file.as_file()
    }

    /// Another handle on the temporary file, for writers that take one by
    /// value.
    pub fn reopen(&self) -> io::Result<File> {
        self.file.reopen()
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the file, renames it over the target and syncs the directory.
    pub fn publish(self) -> io::Result<PathBuf> {
        self.file.as_file().sync_all()?;
        crash_in_file(CrashStage::Rename, &self.target);
        self.file.persist(&self.target).map_err(|e| e.error)?;
        crash_in_file(CrashStage::SyncDir, &self.target);
        sync_dir(parent(&self.target))?;
        Ok(self.target)
    }

    /// Publishes the file only if `target` does not exist yet: `false` (and
    /// the staged file removed) when it does. Synced like [`Staged::publish`].
    pub fn publish_new(self) -> io::Result<bool> {
        self.file.as_file().sync_all()?;
        match self.file.persist_noclobber(&self.target) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e.error),
        }
        sync_dir(parent(&self.target))?;
        Ok(true)
    }

    /// Removes the unpublished file.
    pub fn discard(self) {
        drop(self);
    }
}

/// Replaces `path` with `bytes` atomically and durably, creating its
/// directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_dir_all(parent(path))?;
    let staged = Staged::new(path)?;
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    staged.file().write_all(first)?;
    crash_in_file(CrashStage::Write, path);
    staged.file().write_all(rest)?;
    staged.publish().map(|_| ())
}

/// Where [`crash_in_file`] may kill the process (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CrashStage {
    Write,
    Rename,
    SyncDir,
}

impl CrashStage {
    fn name(self) -> &'static str {
        match self {
            CrashStage::Write => "write",
            CrashStage::Rename => "rename",
            CrashStage::SyncDir => "sync_dir",
        }
    }
}

/// `WAFER_CRASH_AT` split at its colon, read once.
fn crash_at() -> Option<&'static (String, String)> {
    static CRASH_AT: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    CRASH_AT
        .get_or_init(|| {
            let value = std::env::var("WAFER_CRASH_AT").ok()?;
            let (stage, name) = value.split_once(':')?;
            // An empty name would match every file: refused.
            (!name.is_empty()).then(|| (stage.to_string(), name.to_string()))
        })
        .as_ref()
}

/// Kills the process with SIGKILL when `WAFER_CRASH_AT` is
/// `point:NAME`: a test's kill -9 at an exact point of a durable change.
pub fn crash_point(name: &str) {
    if crash_at().is_some_and(|(stage, at)| stage == "point" && at == name) {
        die();
    }
}

/// Kills the process when `WAFER_CRASH_AT` names `stage` and a prefix of
/// `target`'s file name.
fn crash_in_file(stage: CrashStage, target: &Path) {
    let Some((at, prefix)) = crash_at() else {
        return;
    };
    let named = target
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(prefix.as_str()));
    if at == stage.name() && named {
        die();
    }
}

fn die() -> ! {
    tracing::error!("WAFER_CRASH_AT reached: killing this process (a crash test)");
    #[cfg(unix)]
    // SAFETY: raising a signal in this process; SIGKILL does not return.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    std::process::abort()
}

/// Appends `value` as one JSON line and syncs it. With `lock`, the append
/// holds an exclusive lock on the file (for writers in other processes).
pub fn append_line<T: Serialize>(path: &Path, value: &T, lock: bool) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    let dir = parent(path);
    create_dir_all(dir)?;
    let existed = path.exists();
    let mut file = File::options()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    if !existed {
        // The new file's directory entry must survive a crash too.
        sync_dir(dir)?;
    }
    if lock {
        file.lock()?;
    }
    // A torn last line (a crash mid-append) has no newline: end it, so this
    // line stays readable.
    let length = file.metadata()?.len();
    if length > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(length - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    file.write_all(&line)?;
    file.sync_all()
}

/// Every line of `path` that parses, in order; none when it does not exist.
/// Lines are read as bytes, so a line torn inside a multi-byte character is
/// skipped like any other torn line.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect())
}

/// Reads a JSON-lines file written by [`append_line`] incrementally: each
/// [`LineTail::read`] parses only the bytes appended since the previous one,
/// so a growing log costs its new lines, not its whole length, per read.
/// The values read so far always equal what [`read_lines`] returns, provided
/// each line holds a JSON object (a strict prefix of an object never
/// parses, so a line still being written is never taken for a whole one).
#[derive(Debug, Default)]
pub struct LineTail {
    /// Bytes consumed: up to the end of the last line taken.
    offset: u64,
    /// The last byte consumed, to notice a file rewritten in place (only
    /// if that byte changed or the file shrank: the log is append-only).
    last_byte: Option<u8>,
    /// The file read (device and inode), to notice a replaced file.
    identity: Option<(u64, u64)>,
}

/// What [`LineTail::read`] found.
#[derive(Debug)]
pub struct Appended<T> {
    /// The values are the whole file's, from its start: what was read
    /// before no longer applies (the file is new, replaced or truncated).
    pub from_start: bool,
    pub values: Vec<T>,
}

impl LineTail {
    pub fn new() -> Self {
        Self::default()
    }

    /// The values of the lines appended since the last read (or all of
    /// them, with `from_start`). A last line without a newline is taken if
    /// it parses (a crash lost only its newline; the next append starts a
    /// fresh line) and otherwise left for a later read (torn, or being
    /// written now).
    pub fn read<T: DeserializeOwned>(&mut self, path: &Path) -> io::Result<Appended<T>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *self = LineTail::default();
                return Ok(Appended {
                    from_start: true,
                    values: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let metadata = file.metadata()?;
        let identity = identity(&metadata);
        let mut from_start = self.offset == 0
            || identity != self.identity
            || metadata.len() < self.offset
            || self.last_byte != Some(byte_at(&mut file, self.offset - 1)?);
        if from_start {
            *self = LineTail {
                identity,
                ..LineTail::default()
            };
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut values = Vec::new();
        let mut consumed = 0;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let complete = line.last() == Some(&b'\n');
            let value = serde_json::from_slice::<T>(line).ok();
            if !complete && (value.is_none() || !is_object(line)) {
                break;
            }
            values.extend(value);
            consumed += line.len();
        }
        if consumed > 0 {
            self.offset += consumed as u64;
            self.last_byte = bytes.get(consumed - 1).copied();
        } else if self.offset == 0 {
            // Nothing whole yet: stay at the start.
            from_start = true;
        }
        Ok(Appended { from_start, values })
    }
}

fn is_object(line: &[u8]) -> bool {
    line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn byte_at(file: &mut File, position: u64) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(position))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0])
}

#[cfg(unix)]
fn identity(metadata: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn identity(_: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_after_a_torn_line_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        append_line(&path, &1u32, false).unwrap();
        // A crash mid-append: part of a line, no newline, cut inside a
        // two-byte character.
        let mut file = File::options().append(true).open(&path).unwrap();
        file.write_all(&"\"Jos\u{e9}\"".as_bytes()[..5]).unwrap();
        append_line(&path, &2u32, true).unwrap();
        assert_eq!(read_lines::<u32>(&path).unwrap(), vec![1, 2]);
    }

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Line {
        n: u64,
        text: String,
    }

    /// What `append_line` writes after the file's current bytes.
    fn append_bytes(existing: &[u8], value: &Line) -> Vec<u8> {
        let mut bytes = Vec::new();
        if existing.last().is_some_and(|&b| b != b'\n') {
            bytes.push(b'\n');
        }
        bytes.extend(serde_json::to_vec(value).unwrap());
        bytes.push(b'\n');
        bytes
    }

    /// Random appends, appends torn anywhere (a crash: a strict prefix of
    /// what `append_line` writes, cut inside characters too, or missing
    /// only the newline), lines read while half written, and the file
    /// replaced by a shorter or equal one, with reads in between: the
    /// values read incrementally always equal a full re-read.
    #[test]
    fn reading_the_tail_equals_reading_everything() {
        use rand::{Rng, SeedableRng};
        for seed in 0..40 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log.jsonl");
            let mut tail = LineTail::new();
            let mut seen: Vec<Line> = Vec::new();
            // Bytes of a line being written, not yet all in the file.
            let mut pending: Vec<u8> = Vec::new();
            for step in 0..60u64 {
                let value = Line {
                    n: step,
                    text: "é€".repeat(rng.random_range(0..4)),
                };
                let existing = fs::read(&path).unwrap_or_default();
                let file = || {
                    File::options()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .unwrap()
                };
                match rng.random_range(0..10) {
                    _ if !pending.is_empty() => {
                        // The writer finishes its line.
                        file().write_all(&pending).unwrap();
                        pending.clear();
                    }
                    0..=4 => append_line(&path, &value, false).unwrap(),
                    5 | 6 => {
                        let bytes = append_bytes(&existing, &value);
                        let cut = rng.random_range(1..bytes.len());
                        file().write_all(&bytes[..cut]).unwrap();
                    }
                    7 => {
                        let bytes = append_bytes(&existing, &value);
                        let cut = rng.random_range(1..bytes.len());
                        file().write_all(&bytes[..cut]).unwrap();
                        pending = bytes[cut..].to_vec();
                    }
                    8 => {
                        let keep = rng.random_range(0..=existing.len());
                        write_atomic(&path, &existing[..keep]).unwrap();
                    }
                    _ => {}
                }
                if rng.random_bool(0.5) {
                    let appended = tail.read::<Line>(&path).unwrap();
                    if appended.from_start {
                        seen.clear();
                    }
                    seen.extend(appended.values);
                    let all: Vec<Line> = read_lines(&path).unwrap();
                    assert_eq!(seen, all, "seed {seed}, step {step}");
                }
            }
        }
    }

    #[test]
    fn a_staged_file_appears_only_when_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.bin");
        assert!(Staged::new(&path).is_err(), "the directory must exist");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let staged = Staged::new(&path).unwrap();
        staged.file().write_all(b"abc").unwrap();
        assert!(!path.exists());
        staged.discard();
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);
        write_atomic(&path, b"xyz").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"xyz");
        // The mode a plain `File::create` gives under this umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            File::create(&plain).unwrap();
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&plain));
        }
    }
}
