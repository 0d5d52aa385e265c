//! A data set of one or more files read in row chunks: the input side of every
//! streamed fit, transform and statistic.
//!
//! [`Dataset::open`] takes `.npy` files (read in row ranges by
//! [`crate::npy::NpyReader`], never whole) and CSV files (read record by
//! record by [`crate::csvfile::CsvFile`]), all with the same number of columns; their
//! rows are one data set, in order. [`Dataset::for_each_chunk`] hands the rows
//! to a closure a chunk at a time while a reader thread fills the next chunk,
//! so reading overlaps the work, and memory holds two chunks whatever the
//! file's size.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ndarray::{s, Array2, ArrayView2};

use crate::csvfile::CsvFile;
use crate::error::{Error, Result};
use crate::io::{Format, NonFinite, ReadOptions};
use crate::npy::{Dtype, NpyFloat, NpyReader};

/// Bytes of one chunk by default (two are in flight): 32 MiB.
pub const DEFAULT_CHUNK_BYTES: usize = 32 << 20;

enum Part {
    Npy(NpyReader),
    Csv(Box<CsvFile>),
    Memory { path: PathBuf, data: Array2<f64> },
}

impl Part {
    fn rows(&self) -> usize {
        match self {
            Part::Npy(r) => r.rows(),
            Part::Csv(r) => r.rows(),
            Part::Memory { data, .. } => data.nrows(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Part::Npy(r) => r.cols(),
            Part::Csv(r) => r.cols(),
            Part::Memory { data, .. } => data.ncols(),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Part::Npy(r) => r.path(),
            Part::Csv(r) => r.path(),
            Part::Memory { path, .. } => path,
        }
    }

    fn read<T: NpyFloat>(&mut self, start: usize, mut out: ndarray::ArrayViewMut2<T>) -> Result<()> {
        match self {
            Part::Npy(r) => r.read_rows(start, out),
            Part::Csv(r) => r.read_rows(start, out),
            Part::Memory { path, data } => {
                let src = data.slice(s![start..start + out.nrows(), ..]);
                for ((i, j), v) in src.indexed_iter() {
                    let t = T::from_f64(*v);
                    if v.is_finite() && !t.to_f64().is_finite() {
                        return Err(Error::Parse {
                            path: path.clone(),
                            line: None,
                            reason: format!(
                                "value {v:e} at row {}, column {j} is beyond the range of f32",
                                start + i
                            ),
                        });
                    }
                    out[[i, j]] = t;
                }
                Ok(())
            }
        }
    }
}

/// Refuses a data set gpuprep cannot compute on: no columns (numpy would
/// hold 10^18 rows of nothing; scikit-learn refuses 0 features), or so many
/// columns that the per-column state (about ten f64 per column) does not fit
/// in memory, whatever a header claims.
fn check_shape(op: &'static str, parts: &[Part], rows: usize, cols: usize) -> Result<()> {
    let first = parts[0].path().display();
    if cols == 0 {
        return Err(Error::invalid(
            op,
            format!("{first} has {rows} rows of 0 columns: there is nothing to compute on"),
        ));
    }
    crate::alloc::check_bytes(op, 80 * cols as u128).map_err(|_| {
        Error::invalid(
            op,
            format!(
                "{first} claims {cols} columns: the per-column statistics alone ({} bytes) do not fit in memory",
                80 * cols as u128
            ),
        )
    })
}

/// The rows of one or more files, read in chunks.
pub struct Dataset {
    parts: Vec<Part>,
    cols: usize,
    rows: usize,
    dtype: Dtype,
    non_finite: NonFinite,
    op: &'static str,
    names: Option<Vec<String>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field(
                "files",
                &self
                    .parts
                    .iter()
                    .map(|p| p.path().to_path_buf())
                    .collect::<Vec<_>>(),
            )
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Dataset {
    /// Opens `paths` as one data set (their rows in order). `.npy` files are
    /// read in chunks; CSV files (by extension, or `options.format`) whole.
    /// The data set's dtype is f64 when any file is f64 (CSV numbers are
    /// f64), else f32. `options.non_finite` decides whether NaN and infinities
    /// are data or an error, reported with the file and row as chunks are read.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no files or files of different widths;
    /// the readers' errors.
    pub fn open(paths: &[PathBuf], options: &ReadOptions) -> Result<Dataset> {
        if paths.is_empty() {
            return Err(Error::invalid(options.op, "no input files"));
        }
        let mut parts = Vec::with_capacity(paths.len());
        let mut f64_any = false;
        let spec = options.csv_spec();
        for p in paths {
            let format = options.format.unwrap_or_else(|| Format::from_path(p));
            if format == Format::Npy && options.columns.selects() {
                return Err(Error::invalid(
                    options.op,
                    format!(
                        "--usecols, --drop and --label choose CSV columns, and {} is read as .npy \
                         (select its columns in numpy: x[:, cols])",
                        p.display()
                    ),
                ));
            }
            let part = match format {
                Format::Npy => {
                    let r = NpyReader::open(p)?;
                    f64_any |= r.dtype() == Dtype::F64;
                    Part::Npy(r)
                }
                Format::Csv => {
                    f64_any = true;
                    Part::Csv(Box::new(CsvFile::open(p, &spec)?))
                }
            };
            parts.push(part);
        }
        let cols = parts[0].cols();
        if let Some(p) = parts.iter().find(|p| p.cols() != cols) {
            return Err(Error::shape(
                options.op,
                format!("{cols} columns in every file (as {})", parts[0].path().display()),
                format!("{} columns in {}", p.cols(), p.path().display()),
            ));
        }
        // The names of the data set: those of the first file with a header;
        // every other file with one must name the same columns.
        let mut names: Option<(&Path, &[String])> = None;
        for p in &parts {
            let Part::Csv(f) = p else { continue };
            let Some(n) = f.feature_names() else { continue };
            match names {
                None => names = Some((f.path(), n)),
                Some((first, m)) if m != n => {
                    let j = m.iter().zip(n).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(Error::invalid(
                        options.op,
                        format!(
                            "{} and {} name their columns differently (column {}: {:?} and {:?}): \
                             one data set has one set of columns",
                            first.display(),
                            f.path().display(),
                            j + 1,
                            m[j],
                            n[j]
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let names = names.map(|(_, n)| n.to_vec());
        let rows: usize = parts.iter().map(Part::rows).sum();
        check_shape(options.op, &parts, rows, cols)?;
        Ok(Dataset {
            parts,
            cols,
            rows,
            dtype: if f64_any { Dtype::F64 } else { Dtype::F32 },
            non_finite: options.non_finite,
            op: options.op,
            names,
        })
    }

    /// An in-memory data set (for the library's own use and tests).
    pub fn from_array(name: &Path, data: Array2<f64>, dtype: Dtype) -> Dataset {
        let (rows, cols) = data.dim();
        Dataset {
            parts: vec![Part::Memory {
                path: name.to_path_buf(),
                data,
            }],
            cols,
            rows,
            dtype,
            non_finite: NonFinite::Allow,
            op: "dataset",
            names: None,
        }
    }

    /// The columns' names, from a CSV header (`None` for `.npy` input and
    /// CSV without a header).
    pub fn feature_names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// Rows of all files.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// f64 when any file is f64, else f32.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.path().to_path_buf()).collect()
    }

    /// The first row, in f64 (`None` for an empty data set): the host-side
    /// shift of f64 data bound for the GPU.
    ///
    /// # Errors
    /// The readers' errors.
    pub fn first_row(&mut self) -> Result<Option<ndarray::Array1<f64>>> {
        let cols = self.cols;
        match self.parts.iter_mut().find(|p| p.rows() > 0) {
            None => Ok(None),
            Some(p) => {
                let mut row = Array2::<f64>::zeros((1, cols));
                p.read(0, row.view_mut())?;
                Ok(Some(row.row(0).to_owned()))
            }
        }
    }

    /// Rows per chunk for chunks of about `bytes` of `T` (at least one row).
    pub fn chunk_rows_for<T: NpyFloat>(&self, bytes: usize) -> usize {
        (bytes / (self.cols.max(1) * T::DTYPE.size())).max(1)
    }

    /// Calls `f(first_row, chunk)` for consecutive chunks of at most
    /// `chunk_rows` rows (a chunk never spans two files), as `T`, while a
    /// reader thread reads the next chunk. Stops at the first error.
    ///
    /// # Errors
    /// The readers' errors, a refused non-finite value (with its file and
    /// row), or `f`'s.
    pub fn for_each_chunk<T: NpyFloat>(
        &mut self,
        chunk_rows: usize,
        mut f: impl FnMut(usize, ArrayView2<T>) -> Result<()>,
    ) -> Result<()> {
        let chunk_rows = chunk_rows.max(1);
        let cols = self.cols;
        // Two chunks are in memory at once: refuse a chunk size the machine
        // cannot hold before allocating it.
        let longest = self.parts.iter().map(Part::rows).max().unwrap_or(0);
        let bytes = 2 * chunk_rows.min(longest) as u128 * cols as u128 * T::DTYPE.size() as u128;
        crate::alloc::check_bytes(self.op, bytes).map_err(|_| {
            Error::invalid(
                self.op,
                format!(
                    "chunks of {} rows x {cols} columns ({bytes} bytes, two in memory) do not fit in memory: \
                     choose fewer rows per chunk",
                    chunk_rows.min(longest)
                ),
            )
        })?;
        let reject = self.non_finite == NonFinite::Reject;
        let op = self.op;
        let parts = &mut self.parts;
        std::thread::scope(|scope| {
            // Two buffers: one being filled, one being worked on. The channels
            // live in this closure, so an early return drops them and the
            // reader's next send fails instead of blocking the scope's join.
            let (full_tx, full_rx) = mpsc::sync_channel::<Result<(usize, Array2<T>)>>(1);
            let (empty_tx, empty_rx) = mpsc::channel::<Array2<T>>();
            for _ in 0..2 {
                let _ = empty_tx.send(Array2::from_elem((0, cols), T::default()));
            }
            scope.spawn(move || {
                let mut first = 0usize;
                for part in parts.iter_mut() {
                    let n = part.rows();
                    let mut at = 0;
                    while at < n {
                        let take = chunk_rows.min(n - at);
                        let Ok(mut buf) = empty_rx.recv() else { return };
                        if buf.dim() != (take, cols) {
                            buf = crate::host::new_output(take, cols);
                        }
                        let r = part.read(at, buf.view_mut()).and_then(|()| match reject {
                            true => check_finite(op, part.path(), at, buf.view()),
                            false => Ok(()),
                        });
                        let failed = r.is_err();
                        if full_tx.send(r.map(|()| (first + at, buf))).is_err() || failed {
                            return;
                        }
                        at += take;
                    }
                    first += n;
                }
            });
            for msg in full_rx.iter() {
                let (start, buf) = msg?;
                let r = f(start, buf.view());
                let _ = empty_tx.send(buf);
                r?;
            }
            Ok(())
        })
    }
}

/// Refuses a chunk with a non-finite value, naming the file and the element
/// (its row counted from `at`, the chunk's first row in the file).
fn check_finite<T: NpyFloat>(op: &'static str, path: &Path, at: usize, buf: ArrayView2<T>) -> Result<()> {
    let cols = buf.ncols().max(1);
    let found = buf.as_slice().map_or_else(
        || buf.iter().position(|v| !v.to_f64().is_finite()),
        crate::host::first_non_finite,
    );
    match found {
        None => Ok(()),
        Some(k) => {
            let (i, j) = (k / cols, k % cols);
            Err(Error::NonFinite {
                op,
                location: format!(
                    "{} element [{}, {j}] ({})",
                    path.display(),
                    at + i,
                    buf[[i, j]].to_f64()
                ),
            })
        }
    }
}
