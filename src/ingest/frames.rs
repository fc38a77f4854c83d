//! Frames from the file system: image files, folders (natural order), globs
//! and manifests (JSON Lines or CSV). Each input becomes a [`Source`] of one
//! film; each frame is checked (exists, regular file, readable) and its path
//! made canonical before it reaches the database.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::db::queue::NewFrame;
use crate::error::{Error, Result};

/// File extensions taken as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// An input that could not be enqueued, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub path: String,
    pub reason: String,
}

/// The frames of one film, not yet checked.
#[derive(Debug, Clone)]
pub enum Source {
    /// Image paths in frame order.
    Paths { title: String, paths: Vec<PathBuf> },
    /// A manifest file, read lazily (it can hold millions of rows).
    Manifest { title: String, path: PathBuf },
}

impl Source {
    pub fn title(&self) -> &str {
        match self {
            Source::Paths { title, .. } | Source::Manifest { title, .. } => title,
        }
    }
}

/// One manifest row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestRow {
    path: PathBuf,
    #[serde(default)]
    frame_index: Option<i64>,
    #[serde(default)]
    pts_ms: Option<i64>,
}

/// One JSON Lines row, read without copying the path twice.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow<'a> {
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(default)]
    frame_index: Option<i64>,
    #[serde(default)]
    pts_ms: Option<i64>,
}

/// A frame as an input names it.
#[derive(Debug, Clone)]
pub struct FrameRef {
    pub path: PathBuf,
    pub frame_index: Option<i64>,
    pub pts_ms: Option<i64>,
}

pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn folder_name(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "frames".to_string())
}

fn natural_sort(paths: &mut [PathBuf]) {
    paths.sort_by(|a, b| natord::compare(&a.to_string_lossy(), &b.to_string_lossy()));
}

/// Turns command-line inputs into sources, one per film. With `film`, every
/// input goes to that film; otherwise a folder's frames go to a film named
/// after the folder, and files and globs to one named after their folder.
/// One match over the kinds of input (folder, glob, file), kept whole so
/// that the kinds read side by side.
pub fn plan_sources(
    inputs: &[String],
    manifest: Option<&Path>,
    film: Option<&str>,
) -> (Vec<Source>, Vec<Rejection>) {
    let mut sources: Vec<Source> = Vec::new();
    let mut rejected = Vec::new();
    let add_paths = |title: String, mut paths: Vec<PathBuf>, sources: &mut Vec<Source>| {
        natural_sort(&mut paths);
        match sources.iter_mut().find(|s| s.title() == title) {
            Some(Source::Paths { paths: have, .. }) => have.extend(paths),
            _ => sources.push(Source::Paths { title, paths }),
        }
    };
    for input in inputs {
        let path = PathBuf::from(input);
        if path.is_dir() {
            match image_files_in(&path) {
                Ok(files) if files.is_empty() => rejected.push(Rejection {
                    path: input.clone(),
                    reason: format!(
                        "folder has no image files ({})",
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                }),
                Ok(files) => {
                    let title = film.map_or_else(|| folder_name(&path), str::to_string);
                    add_paths(title, files, &mut sources);
                }
                Err(e) => rejected.push(Rejection {
                    path: input.clone(),
                    reason: format!("cannot list folder: {e}"),
                }),
            }
        } else if !path.exists() && has_glob_chars(input) {
            match glob::glob(input) {
                Ok(matches) => {
                    let files: Vec<PathBuf> = matches
                        .filter_map(|m| m.ok())
                        .filter(|p| p.is_file())
                        .collect();
                    if files.is_empty() {
                        rejected.push(Rejection {
                            path: input.clone(),
                            reason: "glob matched no files".to_string(),
                        });
                        continue;
                    }
                    let title = film.map_or_else(
                        || folder_name(files[0].parent().unwrap_or(Path::new("."))),
                        str::to_string,
                    );
                    add_paths(title, files, &mut sources);
                }
                Err(e) => rejected.push(Rejection {
                    path: input.clone(),
                    reason: format!("bad glob pattern: {e}"),
                }),
            }
        } else {
            // A missing file is checked (and reported) with the others.
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let title = film.map_or_else(|| folder_name(parent), str::to_string);
            add_paths(title, vec![path], &mut sources);
        }
    }
    if let Some(m) = manifest {
        let title = film.map_or_else(
            || {
                m.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "manifest".into())
            },
            str::to_string,
        );
        sources.push(Source::Manifest {
            title,
            path: m.to_path_buf(),
        });
    }
    (sources, rejected)
}

fn image_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if is_image_path(&path) && path.is_file() {
            files.push(path);
        }
    }
    natural_sort(&mut files);
    Ok(files)
}

/// Reads a manifest row by row. JSON Lines (`.jsonl`, `.ndjson`, `.json`, or
/// a first byte of `{`) or CSV with a header naming `path` and optionally
/// `frame_index`, `pts_ms`. Relative paths are relative to the manifest.
pub struct ManifestReader {
    path: PathBuf,
    base: PathBuf,
    kind: ManifestKind,
    /// Whether rows carry frame_index; fixed by the first row, required of all.
    indexed: Option<bool>,
}

enum ManifestKind {
    Jsonl {
        reader: BufReader<File>,
        /// The current line, its buffer reused for every line.
        text: String,
        line: u64,
    },
    Csv {
        rows: csv::DeserializeRecordsIntoIter<File, ManifestRow>,
    },
}

impl ManifestReader {
    pub fn open(path: &Path) -> Result<ManifestReader> {
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let first = reader
            .fill_buf()
            .map_err(io_err)?
            .iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace());
        let ext = path
            .extension()
            .and_then(OsStr::to_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let jsonl = matches!(ext.as_str(), "jsonl" | "ndjson" | "json") || first == Some(b'{');
        let kind = if jsonl {
            ManifestKind::Jsonl {
                reader,
                text: String::new(),
                line: 0,
            }
        } else {
            let csv = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(File::open(path).map_err(io_err)?);
            ManifestKind::Csv {
                rows: csv.into_deserialize(),
            }
        };
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(ManifestReader {
            path: path.to_path_buf(),
            base,
            kind,
            indexed: None,
        })
    }

    fn error(&self, line: u64, reason: impl Into<String>) -> Error {
        Error::Manifest {
            path: self.path.clone(),
            line,
            reason: reason.into(),
        }
    }
}

impl Iterator for ManifestReader {
    type Item = Result<FrameRef>;

    fn next(&mut self) -> Option<Self::Item> {
        let (row, line) = match &mut self.kind {
            ManifestKind::Jsonl { reader, text, line } => loop {
                *line += 1;
                let n = *line;
                text.clear();
                match reader.read_line(text) {
                    Ok(0) => return None,
                    Err(e) => return Some(Err(self.error(n, e.to_string()))),
                    Ok(_) if text.trim().is_empty() => continue,
                    Ok(_) => match serde_json::from_str::<JsonRow>(text) {
                        Ok(row) => {
                            let row = ManifestRow {
                                path: PathBuf::from(row.path.into_owned()),
                                frame_index: row.frame_index,
                                pts_ms: row.pts_ms,
                            };
                            break (row, n);
                        }
                        Err(e) => return Some(Err(self.error(n, format!("not a valid row: {e}")))),
                    },
                }
            },
            ManifestKind::Csv { rows } => {
                let item = rows.next()?;
                match item {
                    Ok(row) => {
                        let line = rows.reader().position().line();
                        (row, line)
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        return Some(Err(self.error(line, format!("not a valid row: {e}"))));
                    }
                }
            }
        };
        if row.path.as_os_str().is_empty() {
            return Some(Err(self.error(line, "empty path")));
        }
        if row.frame_index.is_some_and(|i| i < 0) || row.pts_ms.is_some_and(|t| t < 0) {
            return Some(Err(
                self.error(line, "frame_index and pts_ms must not be negative")
            ));
        }
        let has_index = row.frame_index.is_some();
        match self.indexed {
            None => self.indexed = Some(has_index),
            Some(want) if want != has_index => {
                return Some(Err(self.error(
                    line,
                    "give frame_index on every row or on none (frames without it are numbered in order)",
                )));
            }
            Some(_) => {}
        }
        let path = if row.path.is_absolute() {
            row.path
        } else {
            self.base.join(row.path)
        };
        Some(Ok(FrameRef {
            path,
            frame_index: row.frame_index,
            pts_ms: row.pts_ms,
        }))
    }
}

/// Checks frames and makes their paths canonical. The last folder is kept
/// open, so a million frames in one folder cost one `realpath` and one
/// one-component `fstatat` each (plus `faccessat` for files of other users),
/// instead of two walks of the whole path.
pub struct FrameChecker {
    folder: Option<Folder>,
    /// The real user id, the one `access` checks against.
    uid: u32,
}

impl Default for FrameChecker {
    fn default() -> Self {
        FrameChecker {
            folder: None,
            uid: nix::unistd::getuid().as_raw(),
        }
    }
}

struct Folder {
    /// The folder as the input named it.
    raw: PathBuf,
    canonical: PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl FrameChecker {
    /// A frame for the database, or why not. (A path given twice is caught
    /// by the database's UNIQUE (film_id, path).)
    pub fn check(&mut self, frame: FrameRef) -> Result<NewFrame, Rejection> {
        use nix::errno::Errno;
        use nix::fcntl::AtFlags;
        use nix::sys::stat::{FileStat, SFlag, fstatat};
        use nix::unistd::AccessFlags;

        let reject = |reason: String| Rejection {
            path: frame.path.display().to_string(),
            reason,
        };
        let Some(name) = frame.path.file_name() else {
            return Err(reject("is not a file path".into()));
        };
        let unreadable = |e: Errno| match e {
            Errno::ENOENT => reject("does not exist".into()),
            e => reject(format!("cannot read: {}", e.desc())),
        };
        let uid = self.uid;
        let folder = self.folder(&frame.path).map_err(unreadable)?;
        let stat = fstatat(&folder.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(unreadable)?;
        let kind = |stat: &FileStat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        let is_link = kind(&stat) == SFlag::S_IFLNK;
        let (canonical, stat) = if is_link {
            // A link: resolve it the slow way and check what it points to.
            let target = std::fs::canonicalize(&frame.path)
                .map_err(|e| reject(format!("broken link: {e}")))?;
            let stat = nix::sys::stat::stat(&target)
                .map_err(|e| reject(format!("cannot read: {}", e.desc())))?;
            (target, stat)
        } else {
            (folder.canonical.join(name), stat)
        };
        if kind(&stat) == SFlag::S_IFDIR {
            return Err(reject("is a folder, not an image file".into()));
        }
        if kind(&stat) != SFlag::S_IFREG {
            return Err(reject("is not a regular file".into()));
        }
        // The owner's read bit decides for the owner (ACLs included), so only
        // other users' files need the `access` call.
        let own_readable = stat.st_uid == uid && stat.st_mode & 0o400 != 0;
        let readable = own_readable
            || if is_link {
                nix::unistd::access(&canonical, AccessFlags::R_OK)
            } else {
                nix::unistd::faccessat(&folder.fd, name, AccessFlags::R_OK, AtFlags::empty())
            }
            .is_ok();
        if !readable {
            return Err(reject("is not readable (permission denied)".into()));
        }
        let path = canonical.into_os_string().into_string().map_err(|p| {
            reject(format!(
                "path is not valid UTF-8: {}",
                PathBuf::from(p).display()
            ))
        })?;
        Ok(NewFrame {
            path,
            frame_index: frame.frame_index,
            pts_ms: frame.pts_ms,
            width: None,
            height: None,
            dhash: None,
            duplicate_of: None,
            dedupe_distance: None,
            shot: None,
        })
    }

    /// The open folder of `path`, reusing the last one when it is the same.
    fn folder(&mut self, path: &Path) -> nix::Result<&Folder> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;

        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if self.folder.as_ref().is_none_or(|f| f.raw != dir) {
            let fd = nix::fcntl::open(
                dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let canonical = std::fs::canonicalize(dir).map_err(|e| {
                e.raw_os_error()
                    .map_or(nix::Error::EIO, nix::Error::from_raw)
            })?;
            self.folder = Some(Folder {
                raw: dir.to_path_buf(),
                canonical,
                fd,
            });
        }
        Ok(self.folder.as_ref().expect("folder set above"))
    }
}
