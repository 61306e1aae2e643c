//! Reading the files an operator points gatewarden at: credentials, TLS certificates and
//! keys, the config file.
//!
//! Those paths come from configuration, and a path can name anything: a FIFO (a read
//! blocks until someone writes), a device (`/dev/zero` never ends), a huge file, a file of
//! another user's. Each is refused with a reason instead of wedging the thread or exhausting
//! memory: the file is opened non-blocking, must be a regular file once symlinks are
//! followed, and is read up to a limit.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The default cap on one file (`credentials.max_file_bytes`).
pub(crate) const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// Why a file could not be read. Its `Display` completes "`<kind>` file `<path>` …".
#[derive(Debug)]
pub enum FileError {
    Missing,
    /// The open was refused; says who gatewarden runs as and what is in the way.
    PermissionDenied {
        uid: u32,
        /// The file, or the directory that cannot be entered, when it can be looked at.
        blocker: Option<Blocker>,
    },
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    TooLarge {
        max: u64,
    },
    Io(io::Error),
}

/// What refused gatewarden: the file itself (`dir: None`) or a directory on its path that
/// gatewarden may not enter (OpenClaw keeps its state directory 0700).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub dir: Option<std::path::PathBuf>,
    pub owner: u32,
    pub mode: u32,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Missing => f.write_str("does not exist"),
            FileError::PermissionDenied { uid, blocker } => {
                write!(
                    f,
                    "cannot be read: permission denied (gatewarden runs as uid {uid}"
                )?;
                match blocker {
                    Some(Blocker {
                        dir: None,
                        owner,
                        mode,
                    }) => write!(
                        f,
                        ", the file is owned by uid {owner} mode {:04o}",
                        mode & 0o7777
                    )?,
                    Some(Blocker {
                        dir: Some(d),
                        owner,
                        mode,
                    }) => write!(
                        f,
                        ", its directory {} is owned by uid {owner} mode {:04o} and may not be entered",
                        d.display(),
                        mode & 0o7777
                    )?,
                    None => {}
                }
                f.write_str(")")?;
                match blocker {
                    Some(b) if b.owner != *uid => write!(
                        f,
                        "; run gatewarden as uid {} (the owner), or give it a copy readable by a group it is in",
                        b.owner
                    ),
                    _ => f.write_str("; give gatewarden read access, or a copy readable by a group it is in"),
                }
            }
            FileError::NotRegular(what) => {
                write!(f, "is {what}, not a regular file; refusing to read it")
            }
            FileError::TooLarge { max } => write!(
                f,
                "is larger than {max} bytes (credentials.max_file_bytes); refusing to read it"
            ),
            FileError::Io(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

impl std::error::Error for FileError {}

/// The whole file, if it is a regular file of at most `max` bytes. Never blocks on a FIFO
/// or a device: they are refused before any read.
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > max {
        return Err(FileError::TooLarge { max });
    }
    // The file may grow between the stat and the read (it is being written): read one
    // byte past the cap to know.
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(FileError::Io)?;
    if out.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(out)
}

/// Opens `path` for reading without blocking (a FIFO with no writer would block a plain
/// open) and checks that what it opened is a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), FileError> {
    let file = open_nonblocking(path).map_err(|e| classify(path, e))?;
    let meta = file.metadata().map_err(FileError::Io)?;
    let kind = kind_of(&meta.file_type());
    if let Some(what) = kind {
        return Err(FileError::NotRegular(what));
    }
    Ok((file, meta))
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// `None` for a regular file; otherwise what it is, in words.
fn kind_of(t: &std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

fn classify(path: &Path, e: io::Error) -> FileError {
    match e.kind() {
        io::ErrorKind::NotFound => FileError::Missing,
        io::ErrorKind::PermissionDenied => FileError::PermissionDenied {
            uid: current_uid(),
            blocker: blocker_of(path),
        },
        _ => FileError::Io(e),
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

/// The file's owner and mode if it can be looked at; else the deepest directory on its
/// path that can be, which is the one gatewarden may not search.
#[cfg(unix)]
fn blocker_of(path: &Path) -> Option<Blocker> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path) {
        return Some(Blocker {
            dir: None,
            owner: m.uid(),
            mode: m.mode(),
        });
    }
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors().skip(1).find_map(|d| {
        std::fs::metadata(d).ok().map(|m| Blocker {
            dir: Some(d.to_path_buf()),
            owner: m.uid(),
            mode: m.mode(),
        })
    })
}

#[cfg(not(unix))]
fn blocker_of(_: &Path) -> Option<Blocker> {
    None
}

/// Why `path` cannot even be looked at (`stat`), in the same words as a failed read, so a
/// check that stats first does not call an unreadable file missing.
pub(crate) fn stat_error(path: &Path, e: io::Error) -> FileError {
    classify(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_limited(&p, 10).unwrap(), b"0123456789");
        let e = read_limited(&p, 9).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { max: 9 }), "{e}");
        assert!(matches!(
            read_limited(&dir.path().join("nope"), 10),
            Err(FileError::Missing)
        ));
        let e = read_limited(dir.path(), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "is a directory, not a regular file; refusing to read it"
        );
    }

    /// A FIFO with no writer: a blocking open would hang here forever.
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read_limited(&p, 10).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }

    /// `/dev/zero` never ends: it is refused as a device, before a byte is read.
    #[cfg(unix)]
    #[test]
    fn a_device_is_refused() {
        let e = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
    }
}
