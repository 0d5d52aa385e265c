//! `.npz` archives of named arrays (numpy's `savez`), read and written
//! without trusting the file: the format of fitted models.
//!
//! [`NpzWriter`] writes stored (uncompressed) `.npy` entries, as `np.savez`
//! does: f64, i64, u64 and bool arrays of any rank, and strings as numpy's
//! fixed-width unicode (`<U`), so `numpy.load(path)["whitening"]` is the
//! string `'pca'`. [`NpzReader`] reads entries written by it or by numpy
//! (stored or deflated, either byte order, C or Fortran order, any integer
//! width), and checks each entry before it inflates a byte of data: the
//! header's shape against the shape the caller expects, against the entry's
//! declared size, and against the memory the machine has, so a small file
//! whose header claims 10^15 elements, or whose entry inflates to gigabytes,
//! is refused with the entry's name instead of exhausting memory.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayBase, Data, Dimension};

use crate::error::{Error, Result};
use crate::npy::{header_for, header_len, header_text, parse_header_dict};

/// The longest header an entry may have (numpy writes about 128 bytes).
const MAX_HEADER: usize = 1 << 20;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A write's zip error: the OS's as [`Error::Io`]; any other (an entry name
/// written twice) as [`Error::InvalidArgument`] naming the file and `what`.
fn zip_write_err(path: &Path, what: &str, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        other => Error::invalid("NpzWriter", format!("{}: {what}: {other}", path.display())),
    }
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        other => Error::Parse {
            path: path.to_path_buf(),
            line: None,
            reason: format!("not a readable .npz file: {other}"),
        },
    }
}

/// Writes named arrays into an `.npz` (a zip of `.npy` files, stored).
pub struct NpzWriter<W: Write + Seek> {
    /// `None` once finished.
    zip: Option<zip::ZipWriter<Sticky<W>>>,
    path: PathBuf,
}

/// The writer under the zip writer: after its first failure it takes every
/// later write and seek without doing them, so the zip writer's attempt to
/// finish the archive when it is dropped (inside a failed `finish`) neither
/// fails again nor prints `ZipWriter drop failed: ...` to stderr. The first
/// error is the one returned.
struct Sticky<W> {
    inner: W,
    failed: bool,
    /// The position, once failed.
    pos: u64,
}

impl<W: Write + Seek> Write for Sticky<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failed {
            self.pos += buf.len() as u64;
            return Ok(buf.len());
        }
        self.inner.write(buf).inspect_err(|_| self.fail())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed {
            return Ok(());
        }
        self.inner.flush().inspect_err(|_| self.fail())
    }
}

impl<W: Write + Seek> Seek for Sticky<W> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        if self.failed {
            self.pos = match to {
                std::io::SeekFrom::Start(n) => n,
                std::io::SeekFrom::Current(d) | std::io::SeekFrom::End(d) => {
                    self.pos.saturating_add_signed(d)
                }
            };
            return Ok(self.pos);
        }
        self.inner.seek(to).inspect_err(|_| self.fail())
    }
}

impl<W: Write + Seek> Sticky<W> {
    fn fail(&mut self) {
        self.failed = true;
        self.pos = self.inner.stream_position().unwrap_or(0);
    }
}

impl<W: Write + Seek> Drop for NpzWriter<W> {
    /// An archive dropped unfinished (a write failed: a full disk) is
    /// abandoned: the zip writer's own drop would try to finish it and print
    /// `ZipWriter drop failed: ...` to stderr; the error was already
    /// returned, naming the file.
    fn drop(&mut self) {
        if let Some(z) = self.zip.take() {
            std::mem::forget(z);
        }
    }
}

impl<W: Write + Seek> NpzWriter<W> {
    /// An archive written to `w`; `path` names the file in errors.
    pub fn new(w: W, path: &Path) -> Self {
        NpzWriter {
            zip: Some(zip::ZipWriter::new(Sticky {
                inner: w,
                failed: false,
                pos: 0,
            })),
            path: path.to_path_buf(),
        }
    }

    fn entry(&mut self, name: &str, descr: &str, shape: &[usize], data: &[u8]) -> Result<()> {
        self.start_entry(name, descr, shape, data.len())?;
        self.write_data(data)
    }

    /// Starts entry `name` and writes its `.npy` header; `data_len` bytes of
    /// data follow through [`NpzWriter::write_data`].
    fn start_entry(&mut self, name: &str, descr: &str, shape: &[usize], data_len: usize) -> Result<()> {
        let header = header_for(descr, shape);
        let large = (header.len() as u64).saturating_add(data_len as u64) >= u32::MAX as u64;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(large);
        let zip = self.zip.as_mut().ok_or_else(|| Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other("the archive is already finished"),
        })?;
        zip.start_file(format!("{name}.npy"), options)
            .map_err(|e| zip_write_err(&self.path, &format!("cannot add {name}.npy"), e))?;
        zip.write_all(&header).map_err(io_err(&self.path))
    }

    /// Writes the started entry's data, or a part of it.
    fn write_data(&mut self, data: &[u8]) -> Result<()> {
        let zip = self.zip.as_mut().ok_or_else(|| Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other("the archive is already finished"),
        })?;
        zip.write_all(data).map_err(io_err(&self.path))
    }

    /// An f64 array of any rank (any layout; written in C order).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when the write fails;
    /// [`Error::InvalidArgument`] naming the file and the entry for a `name`
    /// already written.
    pub fn f64s<S: Data<Elem = f64>, D: Dimension>(&mut self, name: &str, a: &ArrayBase<S, D>) -> Result<()> {
        self.start_entry(name, "<f8", a.shape(), a.len() * 8)?;
        // A C-ordered array's own bytes on a little-endian machine; else
        // converted a slice at a time (a model's `D x D` state is 128 MB at
        // D = 4096: no second copy of it).
        if cfg!(target_endian = "little") {
            if let Some(s) = a.as_slice() {
                return self.write_data(bytemuck::cast_slice(s));
            }
        }
        const WORDS: usize = 8192;
        let mut buf = Vec::with_capacity(WORDS * 8);
        let mut values = a.iter().peekable();
        while values.peek().is_some() {
            buf.clear();
            for v in values.by_ref().take(WORDS) {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            self.write_data(&buf)?;
        }
        Ok(())
    }

    /// An f64 scalar (a 0-d array).
    ///
    /// # Errors
    /// As [`NpzWriter::f64s`].
    pub fn f64(&mut self, name: &str, v: f64) -> Result<()> {
        self.entry(name, "<f8", &[], &v.to_le_bytes())
    }

    /// An i64 scalar.
    ///
    /// # Errors
    /// As [`NpzWriter::f64s`].
    pub fn i64(&mut self, name: &str, v: i64) -> Result<()> {
        self.entry(name, "<i8", &[], &v.to_le_bytes())
    }

    /// A 1-D u64 array.
    ///
    /// # Errors
    /// As [`NpzWriter::f64s`].
    pub fn u64s(&mut self, name: &str, v: &[u64]) -> Result<()> {
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.entry(name, "<u8", &[v.len()], &data)
    }

    /// A bool scalar.
    ///
    /// # Errors
    /// As [`NpzWriter::f64s`].
    pub fn bool(&mut self, name: &str, v: bool) -> Result<()> {
        self.entry(name, "|b1", &[], &[v as u8])
    }

    /// A string scalar (numpy's `<U`).
    ///
    /// # Errors
    /// As [`NpzWriter::f64s`].
    pub fn str(&mut self, name: &str, v: &str) -> Result<()> {
        let (descr, data) = unicode(&[v]);
        self.entry(name, &descr, &[], &data)
    }

    /// A 1-D array of strings (numpy's `<U`, as wide as the longest).
    ///
    /// # Errors
    /// As [`NpzWriter::f64s`].
    pub fn strs<S: AsRef<str>>(&mut self, name: &str, v: &[S]) -> Result<()> {
        let refs: Vec<&str> = v.iter().map(AsRef::as_ref).collect();
        let (descr, data) = unicode(&refs);
        self.entry(name, &descr, &[v.len()], &data)
    }

    /// Writes the archive's directory and returns the writer.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn finish(mut self) -> Result<W> {
        let zip = self.zip.take().ok_or_else(|| Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other("the archive is already finished"),
        })?;
        zip.finish()
            .map(|s| s.inner)
            .map_err(|e| zip_write_err(&self.path, "cannot finish the archive", e))
    }
}

/// Whether `shape` has the rank of `want` and its sizes where `want` names one.
fn shape_fits(want: &[Option<usize>], shape: &[usize]) -> bool {
    want.len() == shape.len() && want.iter().zip(shape).all(|(w, &s)| w.is_none_or(|w| w == s))
}

/// A wanted shape as numpy prints one, `n` for any size: `(n, 3)`.
fn show_shape(want: &[Option<usize>]) -> String {
    let v: Vec<String> = want
        .iter()
        .map(|x| x.map_or("n".into(), |x| x.to_string()))
        .collect();
    format!("({})", v.join(", "))
}

/// numpy's fixed-width UTF-32 strings: the descr and the bytes.
fn unicode(v: &[&str]) -> (String, Vec<u8>) {
    let width = v.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1);
    let mut data = Vec::with_capacity(v.len() * width * 4);
    for s in v {
        let mut n = 0;
        for c in s.chars() {
            data.extend_from_slice(&(c as u32).to_le_bytes());
            n += 1;
        }
        data.resize(data.len() + (width - n) * 4, 0);
    }
    (format!("<U{width}"), data)
}

/// The element types an entry may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Float { size: usize },
    Int { size: usize, signed: bool },
    Bool,
    Unicode { chars: usize },
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::Float { size } | Kind::Int { size, .. } => size,
            Kind::Bool => 1,
            Kind::Unicode { chars } => 4 * chars,
        }
    }

    /// The kind and byte order of a descr such as `<f8`, `|b1`, `<U7`.
    fn parse(descr: &str) -> Option<(Kind, bool)> {
        let mut chars = descr.chars();
        let (order, rest) = match chars.next()? {
            c @ ('<' | '>' | '|' | '=') => (c, chars.as_str()),
            _ => ('=', descr),
        };
        let big = order == '>' || (order == '=' && cfg!(target_endian = "big"));
        let (code, n) = rest.split_at(rest.char_indices().nth(1).map_or(rest.len(), |(i, _)| i));
        let n: usize = n.parse().ok()?;
        let kind = match (code, n) {
            ("f", 4 | 8) => Kind::Float { size: n },
            ("i", 1 | 2 | 4 | 8) => Kind::Int {
                size: n,
                signed: true,
            },
            ("u", 1 | 2 | 4 | 8) => Kind::Int {
                size: n,
                signed: false,
            },
            ("b", 1) => Kind::Bool,
            // A width whose bytes (4 per character) overflow is no dtype numpy
            // writes; refusing it keeps every size below usize::MAX.
            ("U", 1..) if n.checked_mul(4).is_some() => Kind::Unicode { chars: n },
            _ => return None,
        };
        Some((kind, big))
    }
}

/// One entry's header and data, C order.
struct Entry {
    kind: Kind,
    big: bool,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Entry {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn word(&self, i: usize) -> u64 {
        let size = self.kind.size();
        let mut b = [0u8; 8];
        let src = &self.data[i * size..(i + 1) * size];
        if self.big {
            b[8 - size..].copy_from_slice(src);
            u64::from_be_bytes(b)
        } else {
            b[..size].copy_from_slice(src);
            u64::from_le_bytes(b)
        }
    }

    fn float(&self, i: usize) -> Option<f64> {
        match self.kind {
            Kind::Float { size: 8 } => Some(f64::from_bits(self.word(i))),
            Kind::Float { .. } => Some(f32::from_bits(self.word(i) as u32) as f64),
            _ => None,
        }
    }

    fn int(&self, i: usize) -> Option<i128> {
        let w = self.word(i);
        match self.kind {
            Kind::Int { size, signed: true } => {
                let shift = 64 - 8 * size as u32;
                Some((((w << shift) as i64) >> shift) as i128)
            }
            Kind::Int { signed: false, .. } => Some(w as i128),
            Kind::Bool => Some((w != 0) as i128),
            _ => None,
        }
    }

    fn string(&self, i: usize) -> Option<String> {
        let Kind::Unicode { chars } = self.kind else {
            return None;
        };
        let mut s = String::new();
        for k in 0..chars {
            // None past the data (a header that promised less than it
            // declares is refused when read, but this never indexes past it).
            let at = i.checked_mul(chars)?.checked_add(k)?.checked_mul(4)?;
            let b: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
            let c = if self.big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            };
            if c == 0 {
                break;
            }
            s.push(char::from_u32(c)?);
        }
        Some(s)
    }
}

/// Reads named arrays from an `.npz` (see the [module docs](self)).
pub struct NpzReader<R: Read + Seek> {
    zip: zip::ZipArchive<R>,
    path: PathBuf,
    names: Vec<String>,
}

impl NpzReader<BufReader<File>> {
    /// Opens the archive at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; [`Error::Parse`] if it is not a zip.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_err(path))?;
        NpzReader::new(BufReader::new(file), path)
    }
}

impl<R: Read + Seek> NpzReader<R> {
    /// The archive read from `r`; `path` names it in errors.
    ///
    /// # Errors
    /// [`Error::Parse`] if it is not a zip.
    pub fn new(r: R, path: &Path) -> Result<Self> {
        let zip = zip::ZipArchive::new(r).map_err(|e| zip_err(path, e))?;
        let names = zip
            .file_names()
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
            .collect();
        Ok(NpzReader {
            zip,
            path: path.to_path_buf(),
            names,
        })
    }

    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the arrays (without `.npy`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the archive holds an array of this name.
    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// An error about the array `name`.
    pub fn bad(&self, name: &str, reason: impl std::fmt::Display) -> Error {
        Error::Parse {
            path: self.path.clone(),
            line: None,
            reason: format!("array {name:?}: {reason}"),
        }
    }

    /// Reads the entry `name`, checking its header first: its shape must be
    /// `want` where that says (`None` for a free dimension) and its data must
    /// fit the entry's declared size and the machine.
    fn entry(&mut self, name: &str, want: Option<&[Option<usize>]>) -> Result<Entry> {
        let path = self.path.clone();
        let file_name = if self.zip.index_for_name(&format!("{name}.npy")).is_some() {
            format!("{name}.npy")
        } else if self.zip.index_for_name(name).is_some() {
            name.to_string()
        } else {
            return Err(self.bad(name, "missing"));
        };
        let mut f = self.zip.by_name(&file_name).map_err(|e| zip_err(&path, e))?;
        let declared = f.size();
        let bad = |reason: String| Error::Parse {
            path: path.clone(),
            line: None,
            reason: format!("array {name:?}: {reason}"),
        };
        let io = |e: std::io::Error| bad(format!("cannot be read: {e}"));
        let mut head = vec![0u8; 12];
        f.read_exact(&mut head).map_err(io)?;
        let hlen = header_len(&head)
            .ok_or_else(|| bad("not a .npy entry (no \\x93NUMPY magic or an unknown version)".into()))?;
        if hlen > MAX_HEADER || hlen as u64 > declared {
            return Err(bad(format!("a header of {hlen} bytes in an entry of {declared}")));
        }
        head.resize(hlen.max(12), 0);
        if hlen > 12 {
            f.read_exact(&mut head[12..]).map_err(io)?;
        }
        let (text, _) = header_text(&head).map_err(bad)?;
        let dict = parse_header_dict(text).map_err(|r| bad(format!("the header: {r}")))?;
        let (kind, big) = Kind::parse(&dict.descr)
            .ok_or_else(|| bad(format!("dtype {:?} is not one gpuprep reads", dict.descr)))?;
        if let Some(want) = want.filter(|w| !shape_fits(w, &dict.shape)) {
            return Err(bad(format!(
                "shape {:?}, expected {}",
                dict.shape,
                show_shape(want)
            )));
        }
        let bytes = dict
            .shape
            .iter()
            .try_fold(kind.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("shape {:?} overflows", dict.shape)))?;
        if declared != hlen as u64 + bytes {
            return Err(bad(format!(
                "its header promises {bytes} bytes of data ({:?} of {}), the entry holds {}",
                dict.shape,
                dict.descr,
                declared.saturating_sub(hlen as u64)
            )));
        }
        crate::alloc::check_bytes("npz read", bytes as u128).map_err(|e| {
            bad(format!(
                "its {bytes} bytes ({:?} of {}) cannot be held: {e}",
                dict.shape, dict.descr
            ))
        })?;
        let mut data = Vec::new();
        data.try_reserve_exact(bytes as usize)
            .map_err(|_| bad(format!("{bytes} bytes cannot be allocated")))?;
        (&mut f).take(bytes).read_to_end(&mut data).map_err(io)?;
        if data.len() as u64 != bytes {
            return Err(bad(format!("truncated: {} of {bytes} bytes", data.len())));
        }
        let mut entry = Entry {
            kind,
            big,
            shape: dict.shape,
            data,
        };
        if dict.fortran_order && entry.shape.len() > 1 {
            entry.data = fortran_to_c(&entry.data, &entry.shape, kind.size());
        }
        Ok(entry)
    }

    fn floats(&mut self, name: &str, want: &[Option<usize>]) -> Result<(Vec<usize>, Vec<f64>)> {
        let e = self.entry(name, Some(want))?;
        let v: Option<Vec<f64>> = (0..e.len()).map(|i| e.float(i)).collect();
        let v = v.ok_or_else(|| self.bad(name, format!("{:?} values, expected floats", e.kind)))?;
        Ok((e.shape, v))
    }

    /// A 1-D float array (f32 or f64 in the file), of `len` values where given.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the array when it is missing, of another shape or type.
    pub fn f64s(&mut self, name: &str, len: Option<usize>) -> Result<Array1<f64>> {
        let (_, v) = self.floats(name, &[len])?;
        Ok(Array1::from_vec(v))
    }

    /// A 2-D float array of this shape where given.
    ///
    /// # Errors
    /// As [`NpzReader::f64s`].
    pub fn f64_matrix(
        &mut self,
        name: &str,
        rows: Option<usize>,
        cols: Option<usize>,
    ) -> Result<Array2<f64>> {
        let (shape, v) = self.floats(name, &[rows, cols])?;
        Array2::from_shape_vec((shape[0], shape[1]), v).map_err(|e| self.bad(name, e))
    }

    fn scalar(&mut self, name: &str) -> Result<Entry> {
        let e = self.entry(name, None)?;
        if e.len() != 1 || e.shape.len() > 1 {
            return Err(self.bad(name, format!("shape {:?}, expected a scalar", e.shape)));
        }
        Ok(e)
    }

    /// A float scalar.
    ///
    /// # Errors
    /// As [`NpzReader::f64s`].
    pub fn f64(&mut self, name: &str) -> Result<f64> {
        let e = self.scalar(name)?;
        e.float(0)
            .ok_or_else(|| self.bad(name, format!("{:?}, expected a float", e.kind)))
    }

    /// An integer scalar (any width; a bool is 0 or 1).
    ///
    /// # Errors
    /// As [`NpzReader::f64s`], and for a value beyond i64.
    pub fn i64(&mut self, name: &str) -> Result<i64> {
        let e = self.scalar(name)?;
        let v = e
            .int(0)
            .ok_or_else(|| self.bad(name, format!("{:?}, expected an integer", e.kind)))?;
        i64::try_from(v).map_err(|_| self.bad(name, format!("{v} is beyond i64")))
    }

    /// A non-negative integer scalar.
    ///
    /// # Errors
    /// As [`NpzReader::i64`], and for a negative value.
    pub fn count(&mut self, name: &str) -> Result<u64> {
        let v = self.i64(name)?;
        u64::try_from(v).map_err(|_| self.bad(name, format!("{v} is negative")))
    }

    /// A bool scalar (or an integer 0 or 1).
    ///
    /// # Errors
    /// As [`NpzReader::f64s`], and for an integer other than 0 or 1.
    pub fn bool(&mut self, name: &str) -> Result<bool> {
        match self.i64(name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(name, format!("{v}, expected a bool"))),
        }
    }

    /// A 1-D array of unsigned integers.
    ///
    /// # Errors
    /// As [`NpzReader::f64s`], and for negative values.
    pub fn u64s(&mut self, name: &str) -> Result<Vec<u64>> {
        let e = self.entry(name, Some(&[None]))?;
        let v: Option<Vec<u64>> = (0..e.len())
            .map(|i| e.int(i).and_then(|v| u64::try_from(v).ok()))
            .collect();
        v.ok_or_else(|| self.bad(name, "expected non-negative integers"))
    }

    /// A string scalar.
    ///
    /// # Errors
    /// As [`NpzReader::f64s`].
    pub fn str(&mut self, name: &str) -> Result<String> {
        let e = self.scalar(name)?;
        e.string(0)
            .ok_or_else(|| self.bad(name, format!("{:?}, expected a string", e.kind)))
    }

    /// A 1-D array of strings, of `len` where given.
    ///
    /// # Errors
    /// As [`NpzReader::f64s`].
    pub fn strs(&mut self, name: &str, len: Option<usize>) -> Result<Vec<String>> {
        let e = self.entry(name, Some(&[len]))?;
        let v: Option<Vec<String>> = (0..e.len()).map(|i| e.string(i)).collect();
        v.ok_or_else(|| self.bad(name, "expected strings"))
    }
}

/// C order from Fortran order, elements of `size` bytes.
fn fortran_to_c(data: &[u8], shape: &[usize], size: usize) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let rank = shape.len();
    let mut out = vec![0u8; data.len()];
    let mut idx = vec![0usize; rank];
    for c_pos in 0..n {
        // Fortran offset of the multi-index.
        let mut f_pos = 0;
        let mut stride = 1;
        for (k, &i) in idx.iter().enumerate() {
            f_pos += i * stride;
            stride *= shape[k];
        }
        out[c_pos * size..(c_pos + 1) * size].copy_from_slice(&data[f_pos * size..(f_pos + 1) * size]);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// What `write` puts in an archive in memory, opened for reading (for the
/// tests of every type that saves itself to `.npz`).
#[cfg(test)]
pub(crate) fn round_trip(
    write: impl FnOnce(&mut NpzWriter<std::io::Cursor<Vec<u8>>>) -> Result<()>,
) -> NpzReader<std::io::Cursor<Vec<u8>>> {
    use std::io::Cursor;
    let p = Path::new("t.npz");
    let mut w = NpzWriter::new(Cursor::new(Vec::new()), p);
    write(&mut w).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    NpzReader::new(Cursor::new(bytes), p).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use std::io::Cursor;

    #[test]
    fn a_string_width_whose_bytes_overflow_is_refused() {
        // 4 * 2^62 wraps to 0: the entry then declared 0 bytes, passed the size
        // check, and reading the string indexed an empty vector.
        let p = Path::new("evil.npz");
        let mut w = NpzWriter::new(Cursor::new(Vec::new()), p);
        w.entry("format", "<U4611686018427387904", &[], &[]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let mut r = NpzReader::new(Cursor::new(bytes), p).unwrap();
        match r.str("format") {
            Err(Error::Parse { reason, .. }) => assert!(reason.contains("format"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_name_written_twice_is_an_error_naming_it() {
        let mut w = NpzWriter::new(Cursor::new(Vec::new()), Path::new("t.npz"));
        w.f64("x", 1.0).unwrap();
        match w.f64("x", 2.0) {
            Err(Error::InvalidArgument { reason, .. }) => {
                assert!(reason.contains("t.npz") && reason.contains("x.npy"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_and_strided_f64_arrays_round_trip() {
        // More values than one converted slice (8,192), C-ordered (written
        // as they are) and transposed or strided (converted a slice at a time).
        let big = Array2::from_shape_fn((97, 211), |(i, j)| (i * 211 + j) as f64 * 0.25 - 3.0);
        let t = big.t();
        let strided = big.slice(ndarray::s![..;3, 1..;2]);
        let mut r = round_trip(|w| {
            w.f64s("big", &big)?;
            w.f64s("t", &t)?;
            w.f64s("strided", &strided)?;
            w.f64s("empty", &Array2::<f64>::zeros((0, 4)))
        });
        assert_eq!(r.f64_matrix("big", Some(97), Some(211)).unwrap(), big);
        assert_eq!(r.f64_matrix("t", Some(211), Some(97)).unwrap(), t);
        assert_eq!(r.f64_matrix("strided", None, None).unwrap(), strided);
        assert_eq!(r.f64_matrix("empty", Some(0), Some(4)).unwrap().len(), 0);
    }

    #[test]
    fn every_kind_round_trips() {
        let m = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]];
        let mut r = round_trip(|w| {
            w.f64s("m", &m)?;
            w.f64s("v", &array![0.5, -1.0])?;
            w.f64("x", f64::NAN)?;
            w.i64("i", -7)?;
            w.u64s("ids", &[1, u64::MAX])?;
            w.bool("b", true)?;
            w.str("s", "zca")?;
            w.str("e", "")?;
            w.strs("names", &["a", "längere", ""])
        });
        assert_eq!(r.f64_matrix("m", Some(2), Some(3)).unwrap(), m);
        assert_eq!(r.f64s("v", Some(2)).unwrap(), array![0.5, -1.0]);
        assert!(r.f64("x").unwrap().is_nan());
        assert_eq!(r.i64("i").unwrap(), -7);
        assert_eq!(r.u64s("ids").unwrap(), vec![1, u64::MAX]);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.str("s").unwrap(), "zca");
        assert_eq!(r.str("e").unwrap(), "");
        assert_eq!(r.strs("names", Some(3)).unwrap(), vec!["a", "längere", ""]);
        assert!(r.has("m") && !r.has("nope"));
        // Wrong shapes and types are refused before the data is read.
        assert!(r
            .f64s("v", Some(3))
            .unwrap_err()
            .to_string()
            .contains("expected (3)"));
        assert!(r.f64s("m", None).is_err());
        assert!(r.f64("s").is_err());
        assert!(r.i64("x").is_err());
        assert!(r.count("i").is_err());
        assert!(r.str("nope").unwrap_err().to_string().contains("missing"));
    }

    fn raw(entries: &[(&str, Vec<u8>)]) -> NpzReader<Cursor<Vec<u8>>> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        NpzReader::new(Cursor::new(bytes), Path::new("raw.npz")).unwrap()
    }

    fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn files_numpy_could_write_are_read() {
        // Deflated, big-endian, Fortran order, i4, spaces before colons.
        let be: Vec<u8> = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let mut r = raw(&[
            (
                "f.npy",
                npy("{'descr' : '>f8', 'fortran_order' : True, 'shape' : (2, 3)}", &be),
            ),
            (
                "n.npy",
                npy(
                    "{\"descr\": \"<i4\", \"fortran_order\": False, \"shape\": ()}",
                    &(-3i32).to_le_bytes(),
                ),
            ),
            (
                "h.npy",
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                    &1.5f32.to_le_bytes(),
                ),
            ),
        ]);
        assert_eq!(
            r.f64_matrix("f", None, None).unwrap(),
            array![[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]
        );
        assert_eq!(r.i64("n").unwrap(), -3);
        assert_eq!(r.f64s("h", Some(1)).unwrap(), array![1.5]);
        assert_eq!(r.f64("h").unwrap(), 1.5);
    }

    #[test]
    fn headers_that_lie_are_refused_before_allocating() {
        let mut r = raw(&[
            (
                "huge.npy",
                npy(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000000,), }",
                    &[0; 16],
                ),
            ),
            (
                "over.npy",
                npy(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }",
                    &[],
                ),
            ),
            (
                "twice.npy",
                npy(
                    "{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                    &[0; 8],
                ),
            ),
            (
                "extra.npy",
                npy(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                    &[0; 8],
                ),
            ),
            (
                "obj.npy",
                npy(
                    "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                    &[0; 8],
                ),
            ),
            (
                "rec.npy",
                npy(
                    "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }",
                    &[0; 8],
                ),
            ),
            (
                "short.npy",
                npy(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                    &[0; 16],
                ),
            ),
            ("junk.npy", b"not numpy at all".to_vec()),
        ]);
        for (name, says) in [
            ("huge", "promises 8000000000000000 bytes"),
            ("over", "overflows"),
            ("twice", "appears twice"),
            ("extra", "unknown key"),
            ("obj", "not one gpuprep reads"),
            ("rec", "structured"),
            ("short", "promises 24 bytes"),
            ("junk", "magic"),
        ] {
            let e = r.f64s(name, None).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(name), "{name}: {e}");
        }
    }
}
