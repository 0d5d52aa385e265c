//! File I/O shared by the library and the command line: .npy matrices in,
//! .npy out written atomically (temporary file, then rename) in sets that
//! appear together or not at all, checks that no output replaces an input, and
//! the CSV data set embedded in the binary.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ndarray::{Array2, ArrayView2};
use ndarray_npy::WriteNpyExt;

use crate::csvfile::{CsvColumns, CsvFile, CsvSpec};
use crate::error::{Error, Result};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file formats a matrix is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// numpy's .npy: a 2-D f32 or f64 array, C or Fortran order.
    Npy,
    /// Text: one row per line, fields split by a [`Delimiter`] (see [`crate::csvfile`]).
    Csv,
}

impl Format {
    /// CSV for a name ending in `.csv` (any case), .npy for anything else.
    pub fn from_path(path: &Path) -> Format {
        match path.extension() {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Npy,
        }
    }
}

pub use crate::csvfile::{Delimiter, NonFinite};

/// How [`read_matrix`] reads a file.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The format; `None`: by the file's extension ([`Format::from_path`]).
    pub format: Option<Format>,
    /// The CSV delimiter (CSV only).
    pub delimiter: Delimiter,
    /// NaN and +/-infinity: refused or read.
    pub non_finite: NonFinite,
    /// The op named in a [`Error::NonFinite`].
    pub op: &'static str,
    /// CSV only: the columns read (`usecols`, `drop`, `label`) and the
    /// longest line.
    pub columns: CsvColumns,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            delimiter: Delimiter::default(),
            non_finite: NonFinite::Reject,
            op: "read",
            columns: CsvColumns::default(),
        }
    }
}

impl ReadOptions {
    /// The CSV reader's options.
    pub fn csv_spec(&self) -> CsvSpec {
        CsvSpec {
            delimiter: self.delimiter,
            non_finite: self.non_finite,
            op: self.op,
            columns: self.columns.clone(),
        }
    }
}

/// Reads a matrix as f32 from a 2-D .npy file (f32 or f64, C or Fortran order)
/// or a CSV file ([`parse_csv`]'s rules). The same rules hold for both formats:
/// NaN and +/-infinity are read or refused as `options.non_finite` says, and a
/// value beyond f32's range (an f64 .npy element or a CSV number such as 1e39
/// or 1e400) is always an error, never silently infinity.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Parse`] for a malformed
/// file or an out-of-range value (with the line and column in a CSV, the
/// element's index in a .npy); [`Error::NonFinite`] for a refused NaN or
/// infinity; [`Error::ExceedsLimit`] when the matrix does not fit in the
/// memory available.
pub fn read_matrix(path: &Path, options: &ReadOptions) -> Result<Array2<f32>> {
    match options.format.unwrap_or_else(|| Format::from_path(path)) {
        Format::Npy => read_npy(path, options),
        Format::Csv => {
            let mut f = CsvFile::open(path, &options.csv_spec())?;
            crate::alloc::check2::<f32>("read_matrix", f.rows(), f.cols())?;
            let mut a = crate::host::new_output(f.rows(), f.cols());
            f.read_rows::<f32>(0, a.view_mut())?;
            Ok(a)
        }
    }
}

/// Reads a 2-D .npy file of f32 or f64 (C or Fortran order) as f32. NaN and
/// +/-infinity are read as values; an f64 element beyond f32's range is an
/// error ([`read_matrix`] with [`NonFinite::Allow`]).
///
/// # Errors
/// As [`read_matrix`] for a .npy file: [`Error::Io`] when the file cannot be
/// read; [`Error::Parse`] for a file that is not a 2-D f32/f64 .npy, or an f64
/// element beyond f32's range; [`Error::ExceedsLimit`] when the array does not
/// fit in the memory available.
pub fn read_npy_matrix(path: &Path) -> Result<Array2<f32>> {
    read_npy(
        path,
        &ReadOptions {
            format: Some(Format::Npy),
            non_finite: NonFinite::Allow,
            ..Default::default()
        },
    )
}

fn read_npy(path: &Path, options: &ReadOptions) -> Result<Array2<f32>> {
    // The streaming reader: the header's shape is checked against the
    // file's size, and the memory, before the array is allocated.
    let mut r = crate::npy::NpyReader::open(path)?;
    let (rows, cols) = (r.rows(), r.cols());
    crate::alloc::check_bytes("read", 4 * rows as u128 * cols as u128)?;
    let mut a = crate::host::new_output(rows, cols);
    r.read_rows::<f32>(0, a.view_mut())?;
    if options.non_finite == NonFinite::Reject {
        if let Some(((r, c), v)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                op: options.op,
                location: format!("{} element [{r}, {c}] ({v})", path.display()),
            });
        }
    }
    Ok(a)
}

/// How [`parse_csv`] reads text.
#[derive(Clone, Copy, Debug)]
pub struct CsvOptions {
    /// The field delimiter.
    pub delimiter: Delimiter,
    /// NaN and +/-infinity (`nan`, `inf`, `-Infinity`, ...): refused or read.
    pub non_finite: NonFinite,
    /// The op named in a [`Error::NonFinite`].
    pub op: &'static str,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: Delimiter::default(),
            non_finite: NonFinite::Reject,
            op: "read",
        }
    }
}

/// Parses comma-separated numbers ([`CsvOptions::default`]: finite values only);
/// see [`parse_csv`]. `name` is used in error messages (a path or a label).
///
/// # Errors
/// As [`parse_csv`].
pub fn parse_csv_matrix(name: &Path, text: &str) -> Result<Array2<f64>> {
    parse_csv(name, text, &CsvOptions::default())
}

/// Parses numbers in text, one row per line, all rows the same length
/// (the rules of [`crate::csvfile`]).
///
/// - Fields are split by `options.delimiter` and trimmed of spaces; an empty
///   field is an error. `"` quotes a field (a delimiter inside it is text).
/// - Blank lines and lines starting with `#` are skipped; a UTF-8 byte-order mark
///   is ignored; line ends may be `\n` or `\r\n`.
/// - Header: the first line is a header (and skipped) when none of its fields is
///   a number; it must have as many fields as the rows. A first line where some
///   fields are numbers and others are not is an error, not a header (a typo in
///   the first row must not silently drop it).
/// - Values: Rust's (and Python's `float()`) number syntax. `nan`, `inf`,
///   `-infinity` (any case) are NaN and infinities, refused or read as
///   `options.non_finite` says; a number beyond the type's range (`1e400` for
///   f64) is an error, never silently infinity.
///
/// `name` is used in error messages (a path or a label); lines and columns are
/// counted from 1.
///
/// # Errors
/// [`Error::Parse`] with the line (and the column in its reason) for a field
/// that is not a number, a row of another length, an out-of-range value, or no
/// rows at all; [`Error::NonFinite`] for a refused NaN or infinity.
pub fn parse_csv(name: &Path, text: &str, options: &CsvOptions) -> Result<Array2<f64>> {
    let spec = CsvSpec {
        delimiter: options.delimiter,
        non_finite: options.non_finite,
        op: options.op,
        columns: CsvColumns::default(),
    };
    let mut f = CsvFile::from_text(name, text.as_bytes(), &spec)?;
    let mut a = Array2::zeros((f.rows(), f.cols()));
    f.read_rows::<f64>(0, a.view_mut())?;
    Ok(a)
}

/// Writes `path` so that it is either absent (on error) or complete: the data
/// goes to a temporary file beside it, which is renamed over `path` at the end.
/// An [`OutputSet`] of one output: errors name `path`, never the temporary.
///
/// # Errors
/// As [`OutputSet::write`] and [`OutputSet::commit`]; [`Error::InvalidArgument`]
/// for a `path` without a file name.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let mut set = OutputSet::new();
    set.write(path, write)?;
    set.commit()
}

/// The outputs of one command, written so that they all appear together or none
/// does: each is written in full to a temporary file beside its path (flushed
/// and synced), and [`commit`](OutputSet::commit) renames them into place only
/// once every one has been written. Dropping the set without committing removes
/// the temporaries.
///
/// - An output that is a symbolic link is written at the link's target (as
///   `numpy.save` writes through it), the link kept.
/// - An output that is not a regular file (a FIFO, a device such as
///   `/dev/stdout` or `/dev/null`, a socket) is written straight through when
///   [`write`](OutputSet::write) is called: no atomicity is possible there,
///   and it is never replaced.
/// - A commit holds an exclusive lock (`flock`) on each output directory
///   while it renames, so two processes committing the same outputs leave
///   all of one's, never a mix.
///
/// Temporaries are named `.NAME.gpuprep-HOST-PID-SEQ.tmp`, where HOST
/// identifies the machine's boot and PID namespace. While they exist they are
/// listed in a process-wide registry, so that [`remove_temporaries`] (called by
/// the command line on SIGINT and SIGTERM) can remove them. A process killed
/// outright (SIGKILL, power loss) cannot; the next set that writes into the same
/// directory removes the temporaries that are provably dead: written in the
/// same boot and PID namespace (the same HOST) by a PID that no longer exists
/// (Linux; a temporary of another machine or container sharing the folder is
/// never touched, nor is anything elsewhere).
///
/// ```
/// # fn main() -> gpuprep::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("gpuprep-doc-outputset-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let y = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
/// let mean = ndarray::arr1(&[2.0f64, 3.0]);
/// let mut outputs = gpuprep::io::OutputSet::new();
/// outputs.write_npy(&dir.join("y.npy"), &y)?;
/// outputs.write_npy(&dir.join("mean.npy"), &mean)?;
/// assert!(!dir.join("y.npy").exists()); // nothing is in place yet
/// outputs.commit()?; // now both are
/// assert!(dir.join("y.npy").exists() && dir.join("mean.npy").exists());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct OutputSet {
    /// The outputs written to temporaries, in the order written.
    staged: Vec<Staged>,
    /// Directories already swept for stale temporaries.
    swept: Vec<PathBuf>,
}

/// One output written to a temporary.
#[derive(Debug)]
struct Staged {
    tmp: PathBuf,
    /// Where it is renamed to: the output, or its symbolic link's target.
    target: PathBuf,
    /// The path as the user gave it (for messages).
    user: PathBuf,
}

/// Where an output's bytes go.
enum Destination {
    /// A temporary beside `target`, renamed over it at the commit.
    Rename { target: PathBuf },
    /// Straight into the file (not a regular file: a FIFO, a device).
    Through,
}

/// Where the output `path` is written (see [`OutputSet`]).
fn destination(path: &Path) -> Result<Destination> {
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory, not a file"),
            });
        }
        if !m.is_file() {
            return Ok(Destination::Through);
        }
    }
    // Follow symbolic links (a dangling one too: its target is created).
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&target).map_err(io_err(path))?;
                target = parent_dir(&target).join(link);
            }
            _ => return Ok(Destination::Rename { target }),
        }
    }
    Err(Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

impl OutputSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the output `path` to its temporary with `write` (a buffered writer
    /// on the temporary file), then flushes and syncs it. `path` itself is not
    /// touched until [`commit`](OutputSet::commit) (unless it is a FIFO or a
    /// device, written straight through).
    ///
    /// # Errors
    /// [`Error::Io`] naming `path` when the temporary cannot be created, written
    /// or synced (a missing directory, a full disk, ...), or after
    /// [`remove_temporaries`]; whatever `write` returns.
    pub fn write(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
    ) -> Result<()> {
        let Some(tmp) = self.stage(path)? else {
            let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
            let mut w = BufWriter::new(file);
            write(&mut w)?;
            return w.flush().map_err(io_err(path));
        };
        let file = {
            // Created under the registry's lock, so a signal's clean-up either
            // runs first (and this fails) or sees the file.
            let mut live = live_temporaries();
            if live.abandoned {
                return Err(interrupted(path));
            }
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp.tmp)
                .map_err(io_err(path))?;
            live.paths.push(tmp.tmp.clone());
            file
        };
        let t = tmp.tmp.clone();
        self.staged.push(tmp);
        let mut w = BufWriter::new(file);
        write(&mut w).map_err(|e| name_user_path(e, &t, path))?;
        w.flush().map_err(io_err(path))?;
        w.get_ref().sync_all().map_err(io_err(path))?;
        Ok(())
    }

    /// Writes the output `path` through a function that takes a path (such as
    /// [`PcaModel::save`](crate::PcaModel::save)): `write` is given the
    /// temporary's path, and errors that name the temporary are reported with
    /// `path` instead. A FIFO or a device is given its own path.
    ///
    /// # Errors
    /// As [`write`](OutputSet::write).
    pub fn write_with(&mut self, path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let Some(tmp) = self.stage(path)? else {
            return write(path);
        };
        {
            let mut live = live_temporaries();
            if live.abandoned {
                return Err(interrupted(path));
            }
            live.paths.push(tmp.tmp.clone());
        }
        let t = tmp.tmp.clone();
        self.staged.push(tmp);
        write(&t).map_err(|e| name_user_path(e, &t, path))
    }

    /// Writes an array (any [`WriteNpyExt`]: f32 or f64, any rank) as .npy to
    /// the output `path`, as [`write`](OutputSet::write).
    ///
    /// # Errors
    /// As [`write`](OutputSet::write).
    pub fn write_npy<T: WriteNpyExt + ?Sized>(&mut self, path: &Path, a: &T) -> Result<()> {
        self.write(path, |w| {
            a.write_npy(w).map_err(|e| Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })
        })
    }

    /// Renames every temporary over its output path. If one rename fails, those
    /// already done are undone (an output that existed before gets its old file
    /// back, through a hard link made before the renames; a new one is removed),
    /// so that still none of the set appears. The output directories are
    /// locked meanwhile (see [`OutputSet`]).
    ///
    /// # Errors
    /// [`Error::Io`] naming the output whose rename failed, or every output after
    /// [`remove_temporaries`].
    pub fn commit(mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        // Other processes committing into the same directories wait.
        let _locks = lock_dirs(staged.iter().map(|s| parent_dir(&s.target)));
        // Under the lock: a signal's clean-up waits until the set is wholly in
        // place (or wholly not).
        let mut live = live_temporaries();
        let forget = |live: &mut Live, p: &Path| live.paths.retain(|q| q != p);
        let result = if live.abandoned {
            Err(interrupted(
                staged.first().map_or(Path::new(""), |s| s.user.as_path()),
            ))
        } else {
            // Hard links to the files about to be replaced, to restore them if a
            // later rename fails.
            let mut backups: Vec<Option<PathBuf>> = Vec::new();
            for s in &staged {
                let backup = match (std::fs::symlink_metadata(&s.target), temp_path(&s.target)) {
                    (Ok(_), Ok(b)) if std::fs::hard_link(&s.target, &b).is_ok() => {
                        live.paths.push(b.clone());
                        Some(b)
                    }
                    _ => None,
                };
                backups.push(backup);
            }
            let mut done = 0;
            let mut failed = None;
            for s in &staged {
                match std::fs::rename(&s.tmp, &s.target) {
                    Ok(()) => {
                        forget(&mut live, &s.tmp);
                        done += 1;
                    }
                    Err(source) => {
                        failed = Some(Error::Io {
                            path: s.user.clone(),
                            source,
                        });
                        break;
                    }
                }
            }
            if failed.is_some() {
                for (s, backup) in staged.iter().zip(&backups).take(done) {
                    let _ = match backup {
                        Some(b) => std::fs::rename(b, &s.target),
                        None => std::fs::remove_file(&s.target),
                    };
                }
            }
            for b in backups.iter().flatten() {
                let _ = std::fs::remove_file(b);
                forget(&mut live, b);
            }
            failed.map_or(Ok(()), Err)
        };
        // Whatever was not renamed (an error, or an interrupt) is removed.
        for s in &staged {
            if live.paths.contains(&s.tmp) {
                let _ = std::fs::remove_file(&s.tmp);
                forget(&mut live, &s.tmp);
            }
        }
        result
    }

    /// The temporary for `path` (after sweeping its directory once for stale
    /// ones), or `None` for an output written straight through.
    fn stage(&mut self, path: &Path) -> Result<Option<Staged>> {
        let target = match destination(path)? {
            Destination::Through => return Ok(None),
            Destination::Rename { target } => target,
        };
        let tmp = temp_path(&target)?;
        let dir = parent_dir(&target).to_path_buf();
        if !self.swept.contains(&dir) {
            remove_stale_temporaries(&dir);
            self.swept.push(dir);
        }
        Ok(Some(Staged {
            tmp,
            target,
            user: path.to_path_buf(),
        }))
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let mut live = live_temporaries();
        for s in self.staged.drain(..) {
            let _ = std::fs::remove_file(&s.tmp);
            live.paths.retain(|q| *q != s.tmp);
        }
    }
}

/// Exclusive locks on directories, released when dropped (the files close).
struct DirLocks(#[allow(dead_code)] Vec<File>);

/// Locks each distinct directory (in one order, so two sets never wait on
/// each other). A directory that cannot be opened or locked (a filesystem
/// without `flock`) is passed over: the renames are still atomic one by one.
fn lock_dirs<'a>(dirs: impl Iterator<Item = &'a Path>) -> DirLocks {
    let mut all: Vec<PathBuf> = dirs
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()))
        .collect();
    all.sort();
    all.dedup();
    let mut held = Vec::new();
    #[cfg(unix)]
    for d in all {
        use std::os::fd::AsRawFd;
        let Ok(f) = File::open(&d) else { continue };
        loop {
            // SAFETY: flock on a descriptor this function owns.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                held.push(f);
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
    }
    DirLocks(held)
}

/// The temporaries this process has created and not yet renamed or removed.
struct Live {
    paths: Vec<PathBuf>,
    /// Set by [`remove_temporaries`]: no temporary may be created or committed after it.
    abandoned: bool,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    paths: Vec::new(),
    abandoned: false,
});

fn live_temporaries() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes every temporary file this process's [`OutputSet`]s have open, and
/// makes every later write or commit in this process fail: for a signal
/// handler (a thread that received SIGINT or SIGTERM), just before it exits.
/// Returns how many files were removed. A commit in progress finishes first,
/// so a set's outputs are still all in place or none.
pub fn remove_temporaries() -> usize {
    let mut live = live_temporaries();
    live.abandoned = true;
    let mut removed = 0;
    for p in live.paths.drain(..) {
        if std::fs::remove_file(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

const TMP_TAG: &str = ".gpuprep-";
const TMP_END: &str = ".tmp";

/// This process's PID space: a hash of the boot's id and the PID namespace
/// (Linux), as 16 hex digits; `None` where that cannot be told.
fn pid_space() -> Option<&'static str> {
    static SPACE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SPACE
        .get_or_init(|| {
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
            // FNV-1a: the same in every process.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in boot.trim().bytes().chain([0]).chain(ns.to_string_lossy().bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            Some(format!("{h:016x}"))
        })
        .as_deref()
}

/// `.NAME.gpuprep-HOST-PID-SEQ.tmp` beside `path`, NAME shortened where the
/// whole would pass the usual 255-byte limit of a file name.
fn temp_path(path: &Path) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid("write", format!("{} has no file name", path.display())))?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "{TMP_TAG}{}-{}-{seq}{TMP_END}",
        pid_space().unwrap_or("unknown"),
        std::process::id()
    );
    let mut name = file_name.to_string_lossy().into_owned();
    let room = 255 - 1 - suffix.len();
    if name.len() > room {
        let mut cut = room;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    Ok(path.with_file_name(format!(".{name}{suffix}")))
}

/// The PID space and PID in a temporary's name, if `name` is one of ours.
fn temp_owner(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('.')?.strip_suffix(TMP_END)?;
    let (_, id) = rest.rsplit_once(TMP_TAG)?;
    let mut parts = id.split('-');
    let (space, pid, seq) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    seq.parse::<u64>().ok()?;
    Some((space, pid.parse().ok()?))
}

/// Whether `pid` is provably not a process of this PID space (`kill(pid, 0)`
/// says there is none; a process of another user answers EPERM and counts as
/// running, as does anything on a system where this cannot be asked).
fn provably_dead(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if p <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(p, 0) };
        r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Removes the temporaries in `dir` left by processes that provably no
/// longer run: of this boot and PID namespace, and whose PID no process has
/// (see [`OutputSet`]). Returns how many were removed.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Some(mine) = pid_space() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((space, pid)) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if space == mine
            && pid != me
            && is_file
            && provably_dead(pid)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn interrupted(path: &Path) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted by a signal: not written",
        ),
    }
}

/// `e` with the temporary's path replaced by the user's.
fn name_user_path(e: Error, tmp: &Path, path: &Path) -> Error {
    match e {
        Error::Io { path: p, source } if p == tmp => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        Error::Parse {
            path: p,
            line,
            reason,
        } if p == tmp => Error::Parse {
            path: path.to_path_buf(),
            line,
            reason,
        },
        e => e,
    }
}

/// What identifies a file: its canonical path and, on Unix, its device and inode
/// (so that a hard link is the same file too).
#[derive(Debug)]
struct Identity {
    canonical: PathBuf,
    inode: Option<(u64, u64)>,
}

impl Identity {
    fn same(&self, other: &Identity) -> bool {
        self.canonical == other.canonical || (self.inode.is_some() && self.inode == other.inode)
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// The identity of an existing file (symbolic links followed).
fn existing_identity(path: &Path) -> Option<Identity> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let inode = std::fs::metadata(path).ok().as_ref().and_then(inode);
    Some(Identity { canonical, inode })
}

/// The identity an output will have: the file's where it exists, else its
/// directory's canonical path joined with its name.
fn output_identity(path: &Path) -> Result<Identity> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid("output", format!("{} has no file name", path.display())))?;
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory, not a file"),
        });
    }
    if let Some(id) = existing_identity(path) {
        return Ok(id);
    }
    let dir = parent_dir(path);
    let canonical = std::fs::canonicalize(dir).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(e.kind(), format!("cannot write into {}: {e}", dir.display())),
    })?;
    Ok(Identity {
        canonical: canonical.join(name),
        inode: None,
    })
}

/// Refuses a set of outputs that would replace one of the inputs, or name one
/// file twice. Paths are compared canonically (symbolic links followed; an
/// output that does not exist yet by its directory's canonical path and its
/// name) and, on Unix, by device and inode (hard links). Also refuses an output
/// that is a directory or whose directory does not exist, before any work is done.
///
/// # Errors
/// [`Error::InvalidArgument`] (from `op`) naming both paths; [`Error::Io`] naming
/// the output whose directory is missing.
pub fn check_outputs(op: &'static str, inputs: &[&Path], outputs: &[&Path]) -> Result<()> {
    let ins: Vec<(&Path, Identity)> = inputs
        .iter()
        .filter_map(|&p| existing_identity(p).map(|id| (p, id)))
        .collect();
    let mut outs: Vec<(&Path, Identity)> = Vec::new();
    for &out in outputs {
        let id = output_identity(out)?;
        if let Some((input, _)) = ins.iter().find(|(_, i)| i.same(&id)) {
            return Err(Error::invalid(
                op,
                format!(
                    "the output {} is the same file as the input {}: refusing to replace an input (choose another output path)",
                    out.display(),
                    input.display()
                ),
            ));
        }
        if let Some((other, _)) = outs.iter().find(|(_, o)| o.same(&id)) {
            return Err(Error::invalid(
                op,
                format!(
                    "the outputs {} and {} are the same file: each output needs its own path",
                    other.display(),
                    out.display()
                ),
            ));
        }
        outs.push((out, id));
    }
    Ok(())
}

/// Writes a 2-D f32 array as .npy, atomically (an [`OutputSet`] of one).
///
/// # Errors
/// As [`write_atomic`].
pub fn write_npy_matrix(path: &Path, a: ArrayView2<f32>) -> Result<()> {
    let mut set = OutputSet::new();
    set.write_npy(path, &a)?;
    set.commit()
}
