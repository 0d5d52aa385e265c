//! CSV input read record by record (the `csv` crate: quoted fields, quoted
//! headers with delimiters inside, `\r\n`), in row ranges like a `.npy`, so
//! a file of any size passes through bounded memory.
//!
//! [`CsvFile::open`] makes one pass over the file to find the header, the
//! width and the number of rows (every record's width is checked there, so
//! a short row is named before any work starts), and resolves the column
//! selection (`usecols`, `drop`, `label`) against the header.
//! [`CsvFile::read_rows`] then parses the numbers of consecutive rows into a
//! buffer. A single line longer than [`CsvColumns::max_line_bytes`] is an
//! error (it would otherwise be held whole in memory).
//!
//! The rules (the README's "Input"):
//! - fields are split by the delimiter (one byte, or runs of spaces and
//!   tabs), `"` quotes a field (`""` inside it is a quote), fields are
//!   trimmed of spaces; an empty field is an error;
//! - blank lines and lines starting with `#` are skipped; a UTF-8 byte-order
//!   mark is ignored;
//! - the first record is a header when none of its fields is a number; a
//!   first record that is partly numbers is an error;
//! - numbers are Rust's (and Python's `float()`) syntax, quoted or not;
//!   `nan`, `inf`, `-Infinity` (any case) are read or refused as the options
//!   say; a number beyond the type's range is an error, never infinity;
//! - a header field that is empty (or pandas' `Unnamed: N`) names no column:
//!   such a column (a pandas index written by `DataFrame.to_csv()`) is
//!   refused unless it is dropped or not selected.
//!
//! Lines and columns in errors are counted from 1; `usecols` / `drop`
//! positions from 0, as numpy's and pandas' `usecols`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ndarray::ArrayViewMut2;

use crate::error::{Error, Result};
use crate::npy::NpyFloat;

/// What a reader does with NaN and +/-infinity in the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Refuse them: [`Error::NonFinite`] naming the first one's place.
    #[default]
    Reject,
    /// Read them as values (numpy's behaviour: statistics propagate them).
    Allow,
}

/// How the fields of a CSV line are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delimiter {
    /// One character (`,` by default; `;`, `\t`, `|`, ...).
    Char(char),
    /// Runs of spaces and tabs, leading and trailing ones ignored (numpy.loadtxt's default).
    Whitespace,
}

impl Default for Delimiter {
    fn default() -> Self {
        Delimiter::Char(',')
    }
}

/// The longest line read by default: 64 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// A column named by its header name or its position (from 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnRef {
    /// The header's name for it.
    Name(String),
    /// Its position in the file, counted from 0.
    Index(usize),
}

impl ColumnRef {
    /// A non-negative integer is a position, anything else a name.
    pub fn parse(s: &str) -> ColumnRef {
        match s.trim().parse::<usize>() {
            Ok(i) => ColumnRef::Index(i),
            Err(_) => ColumnRef::Name(s.trim().to_string()),
        }
    }

    /// A list as one CSV record: `a,"b,c",3` is the name `a`, the name
    /// `b,c` and the position 3.
    ///
    /// # Errors
    /// A message for an unterminated quote or an empty entry.
    pub fn parse_list(s: &str) -> std::result::Result<Vec<ColumnRef>, String> {
        let mut r = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(::csv::Trim::All)
            .from_reader(s.as_bytes());
        let mut rec = ::csv::StringRecord::new();
        let mut out = Vec::new();
        while r.read_record(&mut rec).map_err(|e| format!("{s:?}: {e}"))? {
            for f in rec.iter() {
                if f.is_empty() {
                    return Err(format!("{s:?}: an empty column name"));
                }
                out.push(ColumnRef::parse(f));
            }
        }
        if out.is_empty() {
            return Err("no columns given".into());
        }
        Ok(out)
    }
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Name(n) => write!(f, "{n:?}"),
            ColumnRef::Index(i) => write!(f, "{i}"),
        }
    }
}

/// Which columns of a CSV file are the data, and the line limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvColumns {
    /// Only these columns, in this order (all when `None`).
    pub usecols: Option<Vec<ColumnRef>>,
    /// Not these columns.
    pub drop: Vec<ColumnRef>,
    /// The label (target) column: kept out of the data, as `drop`, but it
    /// must exist.
    pub label: Option<ColumnRef>,
    /// The longest line (record) read, in bytes.
    pub max_line_bytes: usize,
}

impl Default for CsvColumns {
    fn default() -> Self {
        CsvColumns {
            usecols: None,
            drop: Vec::new(),
            label: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

impl CsvColumns {
    /// Whether any selection is asked for.
    pub fn selects(&self) -> bool {
        self.usecols.is_some() || !self.drop.is_empty() || self.label.is_some()
    }
}

/// How a [`CsvFile`] reads its text.
#[derive(Clone, Debug)]
pub struct CsvSpec {
    /// The field delimiter.
    pub delimiter: Delimiter,
    /// NaN and infinities: refused or read.
    pub non_finite: NonFinite,
    /// The op named in errors.
    pub op: &'static str,
    /// The columns read.
    pub columns: CsvColumns,
}

/// The bytes of a file as the CSV parser sees them: a leading UTF-8 BOM
/// removed, runs of spaces and tabs collapsed to one space (whitespace
/// delimiter), and a refusal of a line longer than the limit, counted from
/// the start of the record being read.
struct Input<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// Transformed bytes not yet handed on, from `at`.
    out: Vec<u8>,
    at: usize,
    /// Bytes handed on so far.
    served: u64,
    /// Where the current record started (set by the reader after each one).
    record_start: Arc<AtomicU64>,
    limit: u64,
    first: bool,
    collapse: bool,
    pending_space: bool,
    line_start: bool,
}

impl<R: Read> Input<R> {
    fn new(inner: R, collapse: bool, limit: usize, record_start: Arc<AtomicU64>) -> Self {
        Input {
            inner,
            buf: vec![0; 64 << 10],
            out: Vec::new(),
            at: 0,
            served: 0,
            record_start,
            limit: limit as u64,
            first: true,
            collapse,
            pending_space: false,
            line_start: true,
        }
    }
}

/// The marker of an over-long line in the io error the parser passes on.
const TOO_LONG: &str = "gpuprep: line too long";

impl<R: Read> Input<R> {
    /// Reads more of the file into `out` (emptied first), transformed.
    fn refill(&mut self) -> std::io::Result<bool> {
        self.out.clear();
        self.at = 0;
        while self.out.is_empty() {
            let n = self.inner.read(&mut self.buf)?;
            if n == 0 {
                return Ok(false);
            }
            let mut src = &self.buf[..n];
            if self.first {
                self.first = false;
                if let Some(rest) = src.strip_prefix(b"\xef\xbb\xbf") {
                    src = rest;
                }
            }
            if !self.collapse {
                self.out.extend_from_slice(src);
                continue;
            }
            for &b in src {
                match b {
                    b' ' | b'\t' => self.pending_space = !self.line_start,
                    b'\n' | b'\r' => {
                        self.pending_space = false;
                        self.line_start = true;
                        self.out.push(b);
                    }
                    _ => {
                        if self.pending_space {
                            self.out.push(b' ');
                            self.pending_space = false;
                        }
                        self.line_start = false;
                        self.out.push(b);
                    }
                }
            }
        }
        Ok(true)
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let start = self.record_start.load(Ordering::Relaxed);
        let used = self.served.saturating_sub(start);
        if used > self.limit {
            return Err(std::io::Error::other(TOO_LONG));
        }
        if self.at == self.out.len() && !self.refill()? {
            return Ok(0);
        }
        // Never more than one byte past the limit ahead of the record's start.
        let room = (self.limit.saturating_add(1) - used).min(out.len() as u64) as usize;
        let n = room.min(self.out.len() - self.at);
        out[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        self.served += n as u64;
        Ok(n)
    }
}

type Records = ::csv::Reader<Input<Box<dyn Read + Send>>>;

/// A CSV file open for reading row ranges (see the [module docs](self)).
pub struct CsvFile {
    path: PathBuf,
    spec: CsvSpec,
    /// The file's own width (fields per record).
    width: usize,
    rows: usize,
    /// The file's columns that are the data, in order.
    keep: Vec<usize>,
    /// The header's names of the kept columns.
    names: Option<Vec<String>>,
    /// Whether the file has a header record.
    has_header: bool,
    /// An open reader at data row `next` (after the header).
    cursor: Option<(Records, Arc<AtomicU64>, usize)>,
    record: ::csv::ByteRecord,
    /// The text, when the data is in memory rather than in a file.
    text: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for CsvFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvFile")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("width", &self.width)
            .field("keep", &self.keep)
            .finish()
    }
}

fn parse_at(path: &Path, line: u64, reason: String) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line: Some(line as usize),
        reason,
    }
}

fn is_number(field: &[u8]) -> bool {
    std::str::from_utf8(field).is_ok_and(|s| s.parse::<f64>().is_ok())
}

/// A header name that names nothing: empty, or pandas' `Unnamed: N`.
fn unnamed(name: &str) -> bool {
    name.is_empty()
        || name
            .strip_prefix("Unnamed: ")
            .is_some_and(|n| n.parse::<usize>().is_ok())
}

impl CsvFile {
    /// Opens `path` and makes the first pass (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Parse`] (with
    /// the line) for a record of another width, a header of another width
    /// than the rows, a first record that is partly numbers, a header that
    /// is not UTF-8, a line over the limit, no rows; [`Error::InvalidArgument`]
    /// for a column selection the header does not resolve.
    pub fn open(path: &Path, spec: &CsvSpec) -> Result<CsvFile> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                line: None,
                reason: "not a regular file (a pipe, a device, a directory): CSV is read in two passes \
                         (count the rows, then read them), so save it to a file first"
                    .into(),
            });
        }
        let mut magic = [0u8; 6];
        let is_npy = File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"\x93NUMPY";
        if is_npy {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                line: None,
                reason: "a .npy file, read as CSV: leave out --format csv".into(),
            });
        }
        Self::start(path, spec, None)
    }

    /// [`CsvFile::open`] on text in memory; `name` names it in errors.
    ///
    /// # Errors
    /// As [`CsvFile::open`].
    pub fn from_text(name: &Path, text: &[u8], spec: &CsvSpec) -> Result<CsvFile> {
        Self::start(name, spec, Some(Arc::from(text)))
    }

    fn start(path: &Path, spec: &CsvSpec, text: Option<Arc<[u8]>>) -> Result<CsvFile> {
        let mut f = CsvFile {
            path: path.to_path_buf(),
            spec: spec.clone(),
            width: 0,
            rows: 0,
            keep: Vec::new(),
            names: None,
            has_header: false,
            cursor: None,
            record: ::csv::ByteRecord::new(),
            text,
        };
        let (mut r, start) = f.reader()?;
        let mut rec = ::csv::ByteRecord::new();
        let mut header: Option<(u64, Vec<String>)> = None;
        let mut width: Option<(u64, usize)> = None;
        let mut rows = 0usize;
        while let Some(line) = f.next_record(&mut r, &start, &mut rec)? {
            if width.is_none() && header.is_none() && !rec.iter().any(is_number) {
                header = Some((line, header_names(path, line, &rec)?));
                continue;
            }
            match width {
                None => {
                    check_first_row(path, line, &rec, header.as_ref())?;
                    width = Some((line, rec.len()));
                }
                Some((_, w)) if w != rec.len() => {
                    return Err(parse_at(
                        path,
                        line,
                        format!("{} fields, expected {w}", rec.len()),
                    ));
                }
                Some(_) => {}
            }
            rows += 1;
        }
        let Some((_, width)) = width else {
            return Err(match header {
                Some((h, _)) => parse_at(path, h, "a header and no rows of numbers".into()),
                None => Error::Parse {
                    path: path.to_path_buf(),
                    line: None,
                    reason: "no rows".into(),
                },
            });
        };
        f.width = width;
        f.rows = rows;
        f.has_header = header.is_some();
        let names = header.map(|(_, n)| n);
        let (keep, kept_names) = select(path, spec, width, names.as_deref())?;
        f.keep = keep;
        f.names = kept_names;
        Ok(f)
    }

    /// A fresh reader at the start of the file, and its record-start cell.
    fn reader(&self) -> Result<(Records, Arc<AtomicU64>)> {
        let inner: Box<dyn Read + Send> = match &self.text {
            Some(t) => Box::new(std::io::Cursor::new(Arc::clone(t))),
            None => Box::new(BufReader::new(File::open(&self.path).map_err(|source| {
                Error::Io {
                    path: self.path.clone(),
                    source,
                }
            })?)),
        };
        let start = Arc::new(AtomicU64::new(0));
        let (delim, collapse) = match self.spec.delimiter {
            Delimiter::Char(c) if c.is_ascii() => (c as u8, false),
            Delimiter::Char(c) => {
                return Err(Error::invalid(
                    self.spec.op,
                    format!("the delimiter {c:?} is not one ASCII character"),
                ))
            }
            Delimiter::Whitespace => (b' ', true),
        };
        let input = Input::new(
            inner,
            collapse,
            self.spec.columns.max_line_bytes,
            Arc::clone(&start),
        );
        let r = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(::csv::Trim::All)
            .delimiter(delim)
            .comment(Some(b'#'))
            .buffer_capacity(64 << 10)
            .from_reader(input);
        Ok((r, start))
    }

    /// The next record that is not blank or a comment, with its line.
    fn next_record(
        &self,
        r: &mut Records,
        start: &AtomicU64,
        rec: &mut ::csv::ByteRecord,
    ) -> Result<Option<u64>> {
        loop {
            start.store(r.position().byte(), Ordering::Relaxed);
            let line_guess = r.position().line();
            match r.read_byte_record(rec) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) => return Err(self.csv_error(e, line_guess)),
            }
            let line = rec.position().map_or(line_guess, ::csv::Position::line);
            let blank = rec.len() == 1 && rec[0].is_empty();
            let comment = rec.get(0).is_some_and(|f| f.starts_with(b"#"));
            if !blank && !comment {
                return Ok(Some(line));
            }
        }
    }

    fn csv_error(&self, e: ::csv::Error, line: u64) -> Error {
        match e.into_kind() {
            ::csv::ErrorKind::Io(io) if io.to_string() == TOO_LONG => parse_at(
                &self.path,
                line,
                format!(
                    "a line longer than {} bytes: gpuprep holds one line in memory at a time \
                     (--max-line-bytes raises the limit)",
                    self.spec.columns.max_line_bytes
                ),
            ),
            ::csv::ErrorKind::Io(source) => Error::Io {
                path: self.path.clone(),
                source,
            },
            other => parse_at(&self.path, line, format!("{other:?}")),
        }
    }

    /// Data rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns read (after the selection).
    pub fn cols(&self) -> usize {
        self.keep.len()
    }

    /// The header's names of the columns read, when the file has a header.
    pub fn feature_names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads data rows `start .. start + out.nrows()` into `out` (row-major),
    /// parsing each kept field. Consecutive ranges continue where the last
    /// one stopped; another start reads the file again from its beginning.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range past the end or a buffer of
    /// another shape; [`Error::Parse`] with the line and column for a field
    /// that is not a number or is beyond `T`'s range (or the file changed
    /// since it was opened); [`Error::NonFinite`] for a refused NaN or infinity.
    pub fn read_rows<T: NpyFloat>(&mut self, start: usize, mut out: ArrayViewMut2<T>) -> Result<()> {
        let (count, cols) = out.dim();
        if cols != self.keep.len() || start.checked_add(count).is_none_or(|e| e > self.rows) {
            return Err(Error::invalid(
                "csv read",
                format!(
                    "rows {start}..{} x {cols} of {}'s {} x {}",
                    start.saturating_add(count),
                    self.path.display(),
                    self.rows,
                    self.keep.len()
                ),
            ));
        }
        if count == 0 {
            return Ok(());
        }
        if self.cursor.as_ref().is_none_or(|c| c.2 != start) {
            let (r, s) = self.reader()?;
            self.cursor = Some((r, s, 0));
            self.skip_to(start)?;
        }
        let mut rec = std::mem::take(&mut self.record);
        let result = self.fill(count, &mut out, &mut rec);
        self.record = rec;
        if result.is_err() {
            self.cursor = None;
        }
        result
    }

    fn skip_to(&mut self, start: usize) -> Result<()> {
        let mut rec = ::csv::ByteRecord::new();
        let Some((mut r, s, _)) = self.cursor.take() else {
            return Ok(());
        };
        let mut header = self.has_header;
        let mut at = 0;
        while at < start || header {
            match self.next_record(&mut r, &s, &mut rec)? {
                None => return Err(self.changed()),
                Some(_) if header => header = false,
                Some(_) => at += 1,
            }
        }
        self.cursor = Some((r, s, start));
        Ok(())
    }

    fn changed(&self) -> Error {
        Error::Parse {
            path: self.path.clone(),
            line: None,
            reason: "the file changed while it was read".into(),
        }
    }

    fn fill<T: NpyFloat>(
        &mut self,
        count: usize,
        out: &mut ArrayViewMut2<T>,
        rec: &mut ::csv::ByteRecord,
    ) -> Result<()> {
        let Some((mut r, s, next)) = self.cursor.take() else {
            return Err(self.changed());
        };
        for i in 0..count {
            let line = match self.next_record(&mut r, &s, rec)? {
                Some(l) => l,
                None => return Err(self.changed()),
            };
            if rec.len() != self.width {
                return Err(parse_at(
                    &self.path,
                    line,
                    format!(
                        "{} fields, expected {} (the file changed while it was read?)",
                        rec.len(),
                        self.width
                    ),
                ));
            }
            for (k, &j) in self.keep.iter().enumerate() {
                out[[i, k]] = self.number::<T>(&rec[j], line, j + 1)?;
            }
        }
        self.cursor = Some((r, s, next + count));
        Ok(())
    }

    /// A field as `T`, under the rules of the module docs.
    fn number<T: NpyFloat>(&self, field: &[u8], line: u64, col: usize) -> Result<T> {
        let at = |reason: String| parse_at(&self.path, line, format!("column {col}: {reason}"));
        if field.is_empty() {
            return Err(at("empty field".into()));
        }
        let text = std::str::from_utf8(field).map_err(|_| at(format!("not UTF-8 text: {}", show(field))))?;
        let v: f64 = text
            .parse()
            .map_err(|_| at(format!("not a number: {}", show(field))))?;
        if !v.is_finite() {
            let word = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
            if !matches!(word.as_str(), "nan" | "inf" | "infinity") {
                return Err(at(format!("{text} is beyond the range of f64")));
            }
            if self.spec.non_finite == NonFinite::Reject {
                return Err(Error::NonFinite {
                    op: self.spec.op,
                    location: format!("{} line {line}, column {col} ({text})", self.path.display()),
                });
            }
        }
        let t = T::from_f64(v);
        if v.is_finite() && !t.to_f64().is_finite() {
            return Err(at(format!(
                "{text} is beyond the range of {}",
                match T::DTYPE {
                    crate::npy::Dtype::F32 => "f32",
                    crate::npy::Dtype::F64 => "f64",
                }
            )));
        }
        Ok(t)
    }
}

/// A header's fields as names (each UTF-8 text).
fn header_names(path: &Path, line: u64, rec: &::csv::ByteRecord) -> Result<Vec<String>> {
    let mut names = Vec::with_capacity(rec.len());
    for (j, field) in rec.iter().enumerate() {
        let name = std::str::from_utf8(field).map_err(|_| {
            parse_at(
                path,
                line,
                format!("the header's column {} is not UTF-8 text", j + 1),
            )
        })?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// The first row of numbers: as wide as the header, or (without a header)
/// all numbers, its first other field named.
fn check_first_row(
    path: &Path,
    line: u64,
    rec: &::csv::ByteRecord,
    header: Option<&(u64, Vec<String>)>,
) -> Result<()> {
    if let Some((h, names)) = header {
        if names.len() != rec.len() {
            let why = format!(
                "{} fields, but the header on line {h} has {}",
                rec.len(),
                names.len()
            );
            return Err(parse_at(path, line, why));
        }
    } else if let Some(j) = rec.iter().position(|v| !is_number(v)) {
        // Partly numbers: not a header; name the field.
        if rec[j].is_empty() {
            return Err(parse_at(path, line, format!("column {}: empty field", j + 1)));
        }
        return Err(parse_at(
            path,
            line,
            format!(
                "column {}: not a number: {} (not a header either: a header has no numeric field)",
                j + 1,
                show(&rec[j])
            ),
        ));
    }
    Ok(())
}

/// A field for a message: its text quoted, or its bytes where it is not UTF-8.
fn show(field: &[u8]) -> String {
    match std::str::from_utf8(field) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("{:?} (bytes)", String::from_utf8_lossy(field)),
    }
}

/// Resolves the selection: the file's columns to read, in order, and their names.
fn select(
    path: &Path,
    spec: &CsvSpec,
    width: usize,
    names: Option<&[String]>,
) -> Result<(Vec<usize>, Option<Vec<String>>)> {
    let header = Header {
        path,
        op: spec.op,
        width,
        names,
    };
    let keep = header.kept(&spec.columns)?;
    let kept_names = match names {
        None => None,
        Some(names) => Some(header.feature_names(names, &keep)?),
    };
    Ok((keep, kept_names))
}

/// What a selection is resolved against: the file's width and header.
struct Header<'a> {
    path: &'a Path,
    op: &'static str,
    width: usize,
    names: Option<&'a [String]>,
}

impl Header<'_> {
    fn invalid(&self, why: String) -> Error {
        Error::invalid(self.op, why)
    }

    /// The column a `--usecols`, `--drop` or `--label` entry refers to.
    fn resolve(&self, flag: &str, r: &ColumnRef) -> Result<usize> {
        let (path, width) = (self.path.display(), self.width);
        let n = match r {
            ColumnRef::Index(i) if *i < width => return Ok(*i),
            ColumnRef::Index(i) => {
                return Err(self.invalid(format!(
                    "{flag} {i}: {path} has {width} columns (positions count from 0)"
                )))
            }
            ColumnRef::Name(n) => n,
        };
        let Some(names) = self.names else {
            return Err(self.invalid(format!(
                "{flag} {n:?}: {path} has no header to name columns (give positions, from 0)"
            )));
        };
        let mut hits = names.iter().enumerate().filter(|(_, h)| *h == n).map(|(j, _)| j);
        match (hits.next(), hits.next()) {
            (Some(j), None) => Ok(j),
            (Some(a), Some(b)) => Err(self.invalid(format!(
                "{flag} {n:?}: {path}'s header names columns {a} and {b} so (give a position, from 0)"
            ))),
            _ => {
                let all: Vec<String> = names.iter().map(|h| format!("{h:?}")).collect();
                Err(self.invalid(format!(
                    "{flag} {n:?}: no such column in {path}'s header ({})",
                    all.join(", ")
                )))
            }
        }
    }

    /// The columns to read, in order: `--usecols` (or all), less `--drop`
    /// and `--label`.
    fn kept(&self, c: &CsvColumns) -> Result<Vec<usize>> {
        let mut keep: Vec<usize> = match &c.usecols {
            Some(list) => {
                let mut v = Vec::with_capacity(list.len());
                for r in list {
                    let j = self.resolve("--usecols", r)?;
                    if v.contains(&j) {
                        return Err(self.invalid(format!("--usecols names column {j} twice ({r})")));
                    }
                    v.push(j);
                }
                v
            }
            None => (0..self.width).collect(),
        };
        let mut out = Vec::new();
        for r in &c.drop {
            out.push(("--drop", self.resolve("--drop", r)?, r));
        }
        if let Some(r) = &c.label {
            out.push(("--label", self.resolve("--label", r)?, r));
        }
        for (flag, j, r) in out {
            if c.usecols.is_some() && keep.contains(&j) {
                return Err(self.invalid(format!(
                    "{flag} {r} is also in --usecols: a column is either data or not"
                )));
            }
            keep.retain(|&k| k != j);
        }
        if keep.is_empty() {
            return Err(self.invalid(format!("no columns of {} are left to read", self.path.display())));
        }
        Ok(keep)
    }

    /// The kept columns' names: each named (not pandas' unnamed index) and
    /// unique.
    fn feature_names(&self, names: &[String], keep: &[usize]) -> Result<Vec<String>> {
        let path = self.path.display();
        let v: Vec<String> = keep.iter().map(|&j| names[j].clone()).collect();
        if let Some((k, n)) = v.iter().enumerate().find(|(_, n)| unnamed(n)) {
            let j = keep[k];
            let what = if n.is_empty() {
                "has no name in the header".to_string()
            } else {
                format!("is named {n:?} in the header (pandas' name for a column without one)")
            };
            let index = if j == 0 {
                " It looks like a pandas index (DataFrame.to_csv writes one unless index=False):"
            } else {
                ""
            };
            return Err(self.invalid(format!(
                "column {} of {path} {what}; gpuprep will not treat it as a feature.{index} \
                 leave it out with --drop {j}, or choose the columns with --usecols",
                j + 1,
            )));
        }
        for (k, n) in v.iter().enumerate() {
            if let Some(k2) = v[k + 1..].iter().position(|m| m == n) {
                return Err(self.invalid(format!(
                    "{path}'s header names columns {} and {} {n:?}: feature names must be unique \
                     (rename one, or leave one out with --drop)",
                    keep[k] + 1,
                    keep[k + 1 + k2] + 1
                )));
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn spec(columns: CsvColumns) -> CsvSpec {
        CsvSpec {
            delimiter: Delimiter::Char(','),
            non_finite: NonFinite::Reject,
            op: "test",
            columns,
        }
    }

    fn read(text: &str, columns: CsvColumns) -> Result<(Array2<f64>, Option<Vec<String>>)> {
        let mut f = CsvFile::from_text(Path::new("t.csv"), text.as_bytes(), &spec(columns))?;
        let mut a = Array2::zeros((f.rows(), f.cols()));
        f.read_rows(0, a.view_mut())?;
        Ok((a, f.feature_names().map(<[String]>::to_vec)))
    }

    #[test]
    fn quoted_headers_and_fields() {
        let (a, names) = read(
            "\u{feff}\"a\",\"b,c\",\"d \"\"e\"\"\"\r\n1,2,3\r\n\r\n# note\r\n4,\"5\",6\r\n",
            CsvColumns::default(),
        )
        .unwrap();
        assert_eq!(a, ndarray::array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        assert_eq!(names.unwrap(), ["a", "b,c", "d \"e\""]);
    }

    #[test]
    fn selection_by_name_and_position() {
        let text = "id,x,y,label\n0,1,2,1\n1,3,4,0\n";
        let cols = CsvColumns {
            drop: vec![ColumnRef::Index(0)],
            label: Some(ColumnRef::Name("label".into())),
            ..Default::default()
        };
        let (a, names) = read(text, cols).unwrap();
        assert_eq!(a, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(names.unwrap(), ["x", "y"]);
        let cols = CsvColumns {
            usecols: Some(ColumnRef::parse_list("y,1").unwrap()),
            ..Default::default()
        };
        let (a, names) = read(text, cols).unwrap();
        assert_eq!(a, ndarray::array![[2.0, 1.0], [4.0, 3.0]]);
        assert_eq!(names.unwrap(), ["y", "x"]);
        for (cols, says) in [
            (
                CsvColumns {
                    usecols: Some(vec![ColumnRef::Name("z".into())]),
                    ..Default::default()
                },
                "no such column",
            ),
            (
                CsvColumns {
                    drop: vec![ColumnRef::Index(9)],
                    ..Default::default()
                },
                "has 4 columns",
            ),
            (
                CsvColumns {
                    usecols: Some(vec![ColumnRef::Index(1)]),
                    drop: vec![ColumnRef::Index(1)],
                    ..Default::default()
                },
                "also in --usecols",
            ),
        ] {
            let e = read(text, cols).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn an_unnamed_index_column_is_refused_unless_dropped() {
        let text = ",a,b\n0,1.5,2\n1,3,4\n";
        let e = read(text, CsvColumns::default()).unwrap_err().to_string();
        assert!(e.contains("pandas index") && e.contains("--drop 0"), "{e}");
        let e = read("Unnamed: 0,a\n0,1\n", CsvColumns::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unnamed: 0"), "{e}");
        let (a, names) = read(
            text,
            CsvColumns {
                drop: vec![ColumnRef::Index(0)],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(a, ndarray::array![[1.5, 2.0], [3.0, 4.0]]);
        assert_eq!(names.unwrap(), ["a", "b"]);
    }

    #[test]
    fn long_lines_and_bad_bytes_are_named() {
        let cols = CsvColumns {
            max_line_bytes: 100,
            ..Default::default()
        };
        let long = format!("1,2\n3,4\n{}\n", vec!["5"; 200].join(","));
        let e = read(&long, cols).unwrap_err().to_string();
        assert!(
            e.contains("t.csv:3") && e.contains("longer than 100 bytes"),
            "{e}"
        );
        let e = read("a,b\n1,2\n3,\u{1}\n", CsvColumns::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:3: column 2: not a number"), "{e}");
        let mut f =
            CsvFile::from_text(Path::new("t.csv"), b"1,2\n3,\xff\n", &spec(CsvColumns::default())).unwrap();
        let mut a = Array2::<f64>::zeros((2, 2));
        let e = f.read_rows(0, a.view_mut()).unwrap_err().to_string();
        assert!(e.contains("t.csv:2: column 2: not UTF-8"), "{e}");
        let e = CsvFile::from_text(Path::new("t.csv"), b"a,\xff\n1,2\n", &spec(CsvColumns::default()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:1") && e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn the_largest_line_limit_is_no_overflow() {
        let cols = CsvColumns {
            max_line_bytes: usize::MAX,
            ..Default::default()
        };
        let (a, _) = read("1,2\n3,4\n", cols).unwrap();
        assert_eq!(a, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
    }

    #[test]
    fn whitespace_runs_and_row_ranges() {
        let s = CsvSpec {
            delimiter: Delimiter::Whitespace,
            ..spec(CsvColumns::default())
        };
        let text = "  x \t y\n 1   2 \n\t3\t4\n5 6\n";
        let mut f = CsvFile::from_text(Path::new("w.txt"), text.as_bytes(), &s).unwrap();
        assert_eq!((f.rows(), f.cols()), (3, 2));
        let mut a = Array2::<f32>::zeros((2, 2));
        f.read_rows(1, a.view_mut()).unwrap();
        assert_eq!(a, ndarray::array![[3.0, 4.0], [5.0, 6.0]]);
        let mut b = Array2::<f32>::zeros((1, 2));
        f.read_rows(0, b.view_mut()).unwrap();
        assert_eq!(b, ndarray::array![[1.0, 2.0]]);
        assert_eq!(f.feature_names().unwrap(), ["x", "y"]);
    }
}
