//! Results on standard output and notes on standard error, without panics:
//! `println!` panics when stdout is full (`> /dev/full`), and a closed
//! stdout (`>&-`) swallows every write, so a command would "succeed" with
//! nothing written. Results go through [`print`], which reports either as an
//! error (exit 1); notes go through [`note`], whose failure is ignored.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether descriptor 1 was closed when the process started, as seen before
/// Rust's runtime replaced it (Linux: from `.init_array`, which the loader
/// runs before `main` and so before the runtime's own set-up).
#[cfg(target_os = "linux")]
static STDOUT_CLOSED_AT_LOAD: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
extern "C" fn detect_closed_stdout() {
    // SAFETY: fcntl(F_GETFD) only queries descriptor 1; it fails with EBADF
    // exactly when the descriptor is closed.
    let closed = unsafe { libc::fcntl(1, libc::F_GETFD) } == -1;
    STDOUT_CLOSED_AT_LOAD.store(closed, Ordering::Relaxed);
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static DETECT_CLOSED_STDOUT: extern "C" fn() = detect_closed_stdout;

/// Run first in `main`: tells whether standard output was closed when the
/// program started. Rust's runtime opens /dev/null read-write on a closed
/// standard descriptor before `main` (so no file opened later takes
/// descriptor 1), which would swallow the results silently. On Linux the
/// descriptor is looked at before that, from `.init_array`: only a closed
/// one counts, so a /dev/null opened read-write on purpose (Python's
/// `subprocess.DEVNULL`, `1<>/dev/null`) takes the results as `> /dev/null`
/// does. Elsewhere a stdout that is /dev/null opened read-write is taken for
/// a closed one (a shell's `> /dev/null` opens it write-only).
pub fn init() {
    #[cfg(target_os = "linux")]
    STDOUT_CLOSED.store(STDOUT_CLOSED_AT_LOAD.load(Ordering::Relaxed), Ordering::Relaxed);
    #[cfg(all(unix, not(target_os = "linux")))]
    STDOUT_CLOSED.store(null_opened_read_write(), Ordering::Relaxed);
}

/// Whether descriptor 1 is /dev/null opened read-write (or not open).
// dev_t is u64 on Linux, i32 elsewhere: the cast is needed there.
#[allow(clippy::unnecessary_cast, dead_code)]
#[cfg(unix)]
fn null_opened_read_write() -> bool {
    // SAFETY: fcntl(F_GETFL) and fstat only query descriptor 1, into a
    // zeroed struct this function owns.
    let (mode, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let mode = libc::fcntl(1, libc::F_GETFL);
        let ok = libc::fstat(1, &mut st) == 0;
        (mode, ok.then_some(st))
    };
    let null = std::fs::metadata("/dev/null").ok();
    match (st, null) {
        (Some(st), Some(null)) if mode >= 0 => {
            use std::os::unix::fs::MetadataExt;
            (mode & libc::O_ACCMODE) == libc::O_RDWR
                && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR
                && st.st_rdev as u64 == null.rdev()
        }
        _ => mode < 0,
    }
}

fn stdout_error(source: std::io::Error) -> gpuprep::Error {
    gpuprep::Error::Io {
        path: PathBuf::from("standard output"),
        source,
    }
}

/// Writes results to standard output and flushes them.
///
/// # Errors
/// [`gpuprep::Error::Io`] naming standard output when it is closed or the
/// write fails (a full disk).
pub fn print(text: &str) -> gpuprep::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Err(stdout_error(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "closed: the results have nowhere to go",
        )));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

/// Writes a note (a line) to standard error; a failure to write it is ignored.
pub fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// The first failure of a write through [`write`], reported by [`finish`].
static FAILED: std::sync::Mutex<Option<std::io::Error>> = std::sync::Mutex::new(None);

/// Writes results to standard output (the `outln!` / `out!` macros); a
/// failure is kept for [`finish`] instead of panicking as `println!` does.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut failed = FAILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if failed.is_some() {
        return;
    }
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        *failed = Some(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "closed: the results have nowhere to go",
        ));
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        *failed = Some(e);
    }
}

/// Flushes standard output and reports the first failed write of results.
///
/// # Errors
/// [`gpuprep::Error::Io`] naming standard output.
pub fn finish() -> gpuprep::Result<()> {
    let flushed = std::io::stdout().lock().flush();
    let mut failed = FAILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match failed.take() {
        Some(e) => Err(stdout_error(e)),
        None => flushed.map_err(stdout_error),
    }
}

/// `println!` for results, through [`write`].
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// `print!` for results, through [`write`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::output::write(format_args!($($t)*))
    };
}

/// `eprintln!` for notes, through [`note`].
macro_rules! noteln {
    ($($t:tt)*) => {
        $crate::output::note(&format!($($t)*))
    };
}
