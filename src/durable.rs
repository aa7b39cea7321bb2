//! Files that survive a crash, one way everywhere:
//!
//! - [`write_atomic`] and [`Staged`]: a file appears complete or not at
//!   all. Bytes go to a temporary file in the target's directory, which is
//!   synced, renamed over the target, and the directory synced, so the
//!   rename itself is durable.
//! - [`append_line`] and [`read_lines`]: append-only JSON lines, each synced.
//!   A crash can tear the last line; readers skip a line that does not
//!   parse, and the next append starts on a fresh line instead of gluing
//!   itself to the torn one.

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
        let dir = parent(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // Readable like a file `File::create` makes (0666 less the umask),
        // not tempfile's private 0600: the published file keeps the mode.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
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
        self.file.persist(&self.target).map_err(|e| e.error)?;
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
    fs::create_dir_all(parent(path))?;
    let staged = Staged::new(path)?;
    staged.file().write_all(bytes)?;
    staged.publish().map(|_| ())
}

/// Appends `value` as one JSON line and syncs it. With `lock`, the append
/// holds an exclusive lock on the file (for writers in other processes).
pub fn append_line<T: Serialize>(path: &Path, value: &T, lock: bool) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    let dir = parent(path);
    fs::create_dir_all(dir)?;
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
