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
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// Why a file could not be read. Its `Display` completes "<kind> file <path> …".
#[derive(Debug)]
pub enum FileError {
    Missing,
    /// The open was refused; says who gatewarden runs as and who owns the file.
    PermissionDenied {
        uid: u32,
        /// Owner and mode, when the file can be looked at without reading it.
        owner: Option<(u32, u32)>,
    },
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    TooLarge {
        max: u64,
    },
    Io(io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Missing => f.write_str("does not exist"),
            FileError::PermissionDenied { uid, owner } => {
                write!(
                    f,
                    "cannot be read: permission denied (gatewarden runs as uid {uid}"
                )?;
                if let Some((owner, mode)) = owner {
                    write!(
                        f,
                        ", the file is owned by uid {owner} mode {:04o}",
                        mode & 0o7777
                    )?;
                }
                f.write_str(")")
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
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
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
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), FileError> {
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
            owner: owner_of(path),
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

#[cfg(unix)]
fn owner_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.uid(), m.mode()))
}

#[cfg(not(unix))]
fn owner_of(_: &Path) -> Option<(u32, u32)> {
    None
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
