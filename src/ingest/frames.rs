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
        lines: std::io::Lines<BufReader<File>>,
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
                lines: reader.lines(),
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
            ManifestKind::Jsonl { lines, line } => loop {
                *line += 1;
                let n = *line;
                match lines.next()? {
                    Err(e) => return Some(Err(self.error(n, e.to_string()))),
                    Ok(text) if text.trim().is_empty() => continue,
                    Ok(text) => match serde_json::from_str::<ManifestRow>(&text) {
                        Ok(row) => break (row, n),
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

/// Checks frames and makes their paths canonical, remembering the last
/// folder so a million frames in one folder cost one `realpath`.
#[derive(Default)]
pub struct FrameChecker {
    last_dir: Option<(PathBuf, PathBuf)>,
}

impl FrameChecker {
    /// A frame for the database, or why not. (A path given twice is caught
    /// by the database's UNIQUE (film_id, path).)
    pub fn check(&mut self, frame: FrameRef) -> Result<NewFrame, Rejection> {
        let reject = |reason: String| Rejection {
            path: frame.path.display().to_string(),
            reason,
        };
        let meta = match std::fs::symlink_metadata(&frame.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(reject("does not exist".into()));
            }
            Err(e) => return Err(reject(format!("cannot read: {e}"))),
        };
        let canonical = if meta.file_type().is_symlink() {
            match std::fs::canonicalize(&frame.path) {
                Ok(p) => p,
                Err(e) => return Err(reject(format!("broken link: {e}"))),
            }
        } else {
            self.canonical_in_dir(&frame.path)
                .map_err(|e| reject(format!("cannot resolve path: {e}")))?
        };
        let meta = if meta.file_type().is_symlink() {
            std::fs::metadata(&canonical).map_err(|e| reject(format!("cannot read: {e}")))?
        } else {
            meta
        };
        if meta.is_dir() {
            return Err(reject("is a folder, not an image file".into()));
        }
        if !meta.is_file() {
            return Err(reject("is not a regular file".into()));
        }
        if nix::unistd::access(&canonical, nix::unistd::AccessFlags::R_OK).is_err() {
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
        })
    }

    fn canonical_in_dir(&mut self, path: &Path) -> std::io::Result<PathBuf> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return std::fs::canonicalize(path);
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Some((raw, canon)) = &self.last_dir
            && raw == dir
        {
            return Ok(canon.join(name));
        }
        let canon = std::fs::canonicalize(dir)?;
        let out = canon.join(name);
        self.last_dir = Some((dir.to_path_buf(), canon));
        Ok(out)
    }
}
