//! Streaming `.npy` input and output: a 2-D f32 or f64 array read in row
//! ranges and written row range by row range, so a file of any size passes
//! through a bounded amount of memory.
//!
//! [`NpyReader`] parses the header (format versions 1 to 3; `<f4`, `<f8`,
//! `>f4`, `>f8`; C or Fortran order), checks the file holds all the data it
//! promises, and reads any row range into a row-major buffer of f32 or f64: a
//! C-order range is one contiguous read, a Fortran-order range one read per
//! column. [`NpyWriter`] writes the header of a known shape, then rows in
//! order, and refuses to finish with fewer rows than promised.
//!
//! An f64 file read as f32 is rounded, and a finite value beyond f32's range
//! is an error (never a silent infinity); reading f32 as f64 is exact.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::error::{Error, Result};
use crate::host::HostFloat;

/// The element type of a `.npy` file gpuprep reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }
}

/// An element type of [`NpyReader`] and [`NpyWriter`] buffers: f32 or f64.
pub trait NpyFloat: HostFloat + bytemuck::Pod {
    /// Its dtype.
    const DTYPE: Dtype;

    /// `x` itself as f32 rows, when `Self` is f32 (no copy).
    fn as_f32(x: ArrayView2<'_, Self>) -> Option<ArrayView2<'_, f32>>;

    /// `x` itself as f64 rows, when `Self` is f64 (no copy).
    fn as_f64(x: ArrayView2<'_, Self>) -> Option<ArrayView2<'_, f64>>;
}

impl NpyFloat for f32 {
    const DTYPE: Dtype = Dtype::F32;

    fn as_f32(x: ArrayView2<'_, f32>) -> Option<ArrayView2<'_, f32>> {
        Some(x)
    }

    fn as_f64(_: ArrayView2<'_, f32>) -> Option<ArrayView2<'_, f64>> {
        None
    }
}

impl NpyFloat for f64 {
    const DTYPE: Dtype = Dtype::F64;

    fn as_f32(_: ArrayView2<'_, f64>) -> Option<ArrayView2<'_, f32>> {
        None
    }

    fn as_f64(x: ArrayView2<'_, f64>) -> Option<ArrayView2<'_, f64>> {
        Some(x)
    }
}

/// What a `.npy` header says about the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: Dtype,
    /// Byte order of the elements.
    pub big_endian: bool,
    /// Column-major (`fortran_order: True`).
    pub fortran: bool,
    /// (rows, cols).
    pub shape: (usize, usize),
    /// Byte offset of the first element.
    pub data_offset: u64,
}

impl NpyHeader {
    /// Bytes of data the header promises.
    pub(crate) fn data_bytes(&self) -> Option<u64> {
        (self.shape.0 as u64)
            .checked_mul(self.shape.1 as u64)?
            .checked_mul(self.dtype.size() as u64)
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line: None,
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses a `.npy` header from the start of a file (`bytes` holds at least the
/// whole header; more is fine). `path` names the file in errors.
///
/// # Errors
/// [`Error::Parse`] for anything but a 2-D f32/f64 array with a
/// well-formed header (a 1-D array is refused, as scikit-learn refuses it:
/// one row or one column is for the user to say).
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<NpyHeader> {
    let (dict, dtype, big_endian, end) = float_header(path, bytes)?;
    let shape = match dict.shape[..] {
        [r, c] => (r, c),
        [n] => {
            return Err(bad(
                path,
                format!(
                    "a 1-D array of {n} values: gpuprep reads 2-D arrays (rows x columns), as scikit-learn does; \
                     reshape it: x.reshape(-1, 1) for one column, x.reshape(1, -1) for one row"
                ),
            ))
        }
        _ => {
            return Err(bad(
                path,
                format!(
                    "a {}-D array of shape {:?}: gpuprep reads 2-D arrays (rows x columns)",
                    dict.shape.len(),
                    dict.shape
                ),
            ))
        }
    };
    let header = NpyHeader {
        dtype,
        big_endian,
        fortran: dict.fortran_order,
        shape,
        data_offset: end as u64,
    };
    if header.data_bytes().is_none() {
        return Err(bad(path, format!("shape {shape:?} overflows")));
    }
    Ok(header)
}

/// The header at the start of `bytes` of an f32 or f64 array: its dict, the
/// dtype, whether it is big-endian, and where the data starts.
fn float_header(path: &Path, bytes: &[u8]) -> Result<(HeaderDict, Dtype, bool, usize)> {
    let (text, end) = header_text(bytes).map_err(|r| bad(path, r))?;
    let dict = parse_header_dict(text).map_err(|r| bad(path, format!("the .npy header: {r}")))?;
    let (dtype, big) = float_descr(&dict.descr).ok_or_else(|| {
        bad(
            path,
            format!(
                "dtype {:?}: gpuprep reads f32 (<f4) and f64 (<f8) arrays (convert with x.astype(np.float64))",
                dict.descr
            ),
        )
    })?;
    Ok((dict, dtype, big, end))
}

/// The element type and byte order of a float descr, in the spellings numpy
/// reads: `<f8`, `>f4`, `=f8`, `|f8`, `f8`, `<d`, `f`, `float64`, `double`, ...
fn float_descr(descr: &str) -> Option<(Dtype, bool)> {
    let (order, rest) = match descr.as_bytes().first()? {
        b'<' | b'>' | b'=' | b'|' => (descr.as_bytes()[0], &descr[1..]),
        _ => (b'=', descr),
    };
    let big = match order {
        b'>' => true,
        b'<' => false,
        _ => cfg!(target_endian = "big"),
    };
    let dtype = match rest {
        "f4" | "f" | "float32" | "single" => Dtype::F32,
        "f8" | "d" | "float64" | "double" | "float" => Dtype::F64,
        _ => return None,
    };
    Some((dtype, big))
}

/// What a `.npy` header's dictionary holds, as numpy writes it: the dtype's
/// `descr`, `fortran_order` and `shape` (any rank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderDict {
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

/// Parses the Python literal of a `.npy` header, `{'descr': '<f8',
/// 'fortran_order': False, 'shape': (3, 4), }`, as numpy's
/// `ast.literal_eval` reads it: whitespace anywhere between tokens, either
/// quote, a trailing comma. What numpy would not read as one unambiguous
/// array is refused with the reason: a key given twice (Python keeps the last
/// one silently), a missing or unknown key, a structured or object dtype.
pub(crate) fn parse_header_dict(text: &str) -> std::result::Result<HeaderDict, String> {
    let mut p = Lit {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let repeated = match key.as_str() {
            "descr" => {
                if p.peek() == Some(b'[') {
                    return Err("a structured dtype (a list of fields): gpuprep reads plain arrays".into());
                }
                descr.replace(p.string()?).is_some()
            }
            "fortran_order" => fortran.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            other => {
                return Err(format!(
                    "an unknown key {other:?} (numpy writes descr, fortran_order and shape)"
                ))
            }
        };
        if repeated {
            return Err(format!("the key {key:?} appears twice"));
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("text after the dictionary".into());
    }
    let missing = |k: &str| format!("no {k:?} key");
    Ok(HeaderDict {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// A cursor over a Python literal.
struct Lit<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lit<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => format!("{:?}", c as char),
            Some(c) => format!("byte {c:#04x}"),
            None => "the end".into(),
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at offset {}, found {}",
                c as char,
                self.i,
                self.found()
            ))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "expected a string at offset {}, found {}",
                    self.i,
                    self.found()
                ))
            }
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b'\\' {
                return Err("escapes in a header string".into());
            }
            if c == q {
                let v =
                    std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "a string that is not UTF-8")?;
                self.i += 1;
                return Ok(v.to_string());
            }
            self.i += 1;
        }
        Err("an unterminated string".into())
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!(
            "expected True or False at offset {}, found {}",
            self.i,
            self.found()
        ))
    }

    fn int(&mut self) -> std::result::Result<usize, String> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        // Python 2's numpy wrote long integers as `3L`.
        self.eat(b'L');
        digits.parse::<usize>().map_err(|_| {
            format!(
                "expected a non-negative integer at offset {start}, found {}",
                self.found()
            )
        })
    }

    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        let mut comma = true;
        loop {
            self.ws();
            if self.eat(b')') {
                // (3) is the integer 3 in Python, not a tuple.
                if dims.len() == 1 && !comma {
                    return Err("the shape (n) is not a tuple: numpy writes (n,)".into());
                }
                return Ok(dims);
            }
            if !comma {
                return Err(format!("expected ',' or ')' in the shape at offset {}", self.i));
            }
            dims.push(self.int()?);
            self.ws();
            comma = self.eat(b',');
        }
    }
}

/// Splits a `.npy` file's first bytes into the header's text and the offset
/// of the data: the magic, the version (1 to 3) and the header's length are
/// checked. `bytes` holds at least the whole header.
pub(crate) fn header_text(bytes: &[u8]) -> std::result::Result<(&str, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12usize,
        ),
        2 | 3 => return Err("truncated .npy header".into()),
        v => return Err(format!(".npy format version {v} is not supported (1 to 3 are)")),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let text = &bytes[start..end];
    // Version 3 is UTF-8; 1 and 2 are latin-1, which numpy only ever fills with ASCII.
    let text = std::str::from_utf8(text).map_err(|_| "the .npy header is not text")?;
    Ok((text, end))
}

/// The length of the header of a `.npy` file from its first 12 bytes (magic,
/// version, length): how many bytes to read before [`header_text`].
pub(crate) fn header_len(first: &[u8]) -> Option<usize> {
    if first.len() < 10 || &first[..6] != b"\x93NUMPY" {
        return None;
    }
    match first[6] {
        1 => Some(10 + u16::from_le_bytes([first[8], first[9]]) as usize),
        2 | 3 if first.len() >= 12 => {
            Some(12 + u32::from_le_bytes([first[8], first[9], first[10], first[11]]) as usize)
        }
        _ => None,
    }
}

/// The bytes of a `.npy` header for `descr` and `shape` (C order): version 1,
/// or 2 for a header too long for it, padded so the data starts at a multiple
/// of 64 bytes, as numpy writes it.
pub(crate) fn header_for(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let v1 = dict.len() + 1 + 10 <= u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    let total = (prefix + dict.len() + 1).next_multiple_of(64);
    let len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY");
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// The first bytes of a `.npy` file, holding at least its whole header: a
/// header may be longer than 4 KiB (version 1 up to 64 KiB, 2 and 3 up to
/// 4 GiB; numpy itself refuses more than 10 KB unless asked), and one
/// claiming more than 64 MiB is refused.
fn read_head(file: &mut File, path: &Path) -> Result<Vec<u8>> {
    let mut head = vec![0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        let n = file.read(&mut head[got..]).map_err(io(path))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    if let Some(len) = header_len(&head) {
        if len >= (64 << 20) {
            return Err(bad(
                path,
                format!("a .npy header of {len} bytes (at most 64 MiB is read)"),
            ));
        }
        if len > got {
            let mut more = vec![0u8; len - got];
            file.read_exact(&mut more)
                .map_err(|_| bad(path, "truncated .npy header"))?;
            head.extend(more);
        }
    }
    Ok(head)
}

/// Reads a whole `.npy` array of any rank (f32 or f64, either byte order, C
/// or Fortran order) as f64 in C order, with its dtype: for small tensors
/// (`normcheck`'s). The header's claim is checked against the file's size
/// and the machine's memory before anything is allocated.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] for a header
/// gpuprep does not read, a file shorter than its header promises, or an
/// array too large for memory.
pub fn read_array(path: &Path) -> Result<(ndarray::ArrayD<f64>, Dtype)> {
    let mut file = File::open(path).map_err(io(path))?;
    let head = read_head(&mut file, path)?;
    let (dict, dtype, big, offset) = float_header(path, &head)?;
    let count = dict
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| bad(path, format!("shape {:?} overflows", dict.shape)))?;
    let bytes = count as u64 * dtype.size() as u64;
    let len = file.metadata().map_err(io(path))?.len();
    if offset as u64 > len || len - (offset as u64) < bytes {
        return Err(bad(
            path,
            format!(
                "truncated: the header promises shape {:?} of {:?} ({} bytes with the header), the file has {len}",
                dict.shape,
                dtype,
                offset as u64 + bytes
            ),
        ));
    }
    crate::alloc::check_bytes("npy read", (count as u128) * 8 + bytes as u128)?;
    file.seek(SeekFrom::Start(offset as u64)).map_err(io(path))?;
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact(&mut raw).map_err(io(path))?;
    let mut values = vec![0f64; count];
    match dtype {
        Dtype::F32 => {
            for (o, b) in values.iter_mut().zip(raw.chunks_exact(4)) {
                let b = [b[0], b[1], b[2], b[3]];
                *o = f64::from(if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                });
            }
        }
        Dtype::F64 => {
            for (o, b) in values.iter_mut().zip(raw.chunks_exact(8)) {
                let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                *o = if big {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                };
            }
        }
    }
    drop(raw);
    let shape = ndarray::IxDyn(&dict.shape);
    let a = if dict.fortran_order {
        use ndarray::ShapeBuilder;
        ndarray::ArrayD::from_shape_vec(shape.f(), values).map(|a| a.as_standard_layout().into_owned())
    } else {
        ndarray::ArrayD::from_shape_vec(shape, values)
    }
    .map_err(|e| bad(path, e.to_string()))?;
    Ok((a, dtype))
}

/// A `.npy` file open for reading row ranges.
#[derive(Debug)]
pub struct NpyReader {
    path: PathBuf,
    file: File,
    header: NpyHeader,
    scratch: Vec<u8>,
}

impl NpyReader {
    /// Opens `path`, parses its header and checks that the file holds all the
    /// data the header promises.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Parse`] for a header
    /// gpuprep does not read (see [`parse_header`]) or a truncated file.
    pub fn open(path: &Path) -> Result<NpyReader> {
        let mut file = File::open(path).map_err(io(path))?;
        let head = read_head(&mut file, path)?;
        let header = parse_header(path, &head)?;
        let len = file.metadata().map_err(io(path))?.len();
        // A shape whose bytes overflow (alone or past the header) needs more
        // than any file holds.
        let need = header
            .data_bytes()
            .and_then(|b| b.checked_add(header.data_offset))
            .unwrap_or(u64::MAX);
        if len < need {
            return Err(bad(
                path,
                format!(
                    "truncated: the header promises {} x {} {:?} ({need} bytes with the header), the file has {len}",
                    header.shape.0, header.shape.1, header.dtype
                ),
            ));
        }
        Ok(NpyReader {
            path: path.to_path_buf(),
            file,
            header,
            scratch: Vec::new(),
        })
    }

    /// The header.
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.header.shape.0
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.header.shape.1
    }

    /// The file's element type.
    pub fn dtype(&self) -> Dtype {
        self.header.dtype
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads rows `start .. start + out.nrows()` into `out` (row-major, the
    /// file's column count), converting to `T`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range past the end or a buffer of the
    /// wrong shape; [`Error::Io`] on a read error; [`Error::Parse`] for an f64
    /// value beyond f32's range when `T` is f32.
    pub fn read_rows<T: NpyFloat>(&mut self, start: usize, mut out: ArrayViewMut2<T>) -> Result<()> {
        let (count, cols) = out.dim();
        let (rows, fcols) = self.header.shape;
        if cols != fcols || start.checked_add(count).is_none_or(|e| e > rows) {
            return Err(Error::invalid(
                "npy read",
                format!(
                    "rows {start}..{} x {cols} of a {rows} x {fcols} file",
                    start.saturating_add(count)
                ),
            ));
        }
        if count == 0 || cols == 0 {
            return Ok(());
        }
        let out = out
            .as_slice_mut()
            .ok_or_else(|| Error::invalid("npy read", "the buffer must be row-major and contiguous"))?;
        let size = self.header.dtype.size();
        let base = self.header.data_offset;
        // Rows of the buffer's own type, in C order and the host's byte
        // order: the file's bytes are the values, read straight into `out`.
        let native = self.header.big_endian == cfg!(target_endian = "big");
        if T::DTYPE == self.header.dtype && native && !self.header.fortran {
            let at = base + (start * cols * size) as u64;
            self.file.seek(SeekFrom::Start(at)).map_err(io(&self.path))?;
            return self
                .file
                .read_exact(bytemuck::cast_slice_mut(out))
                .map_err(io(&self.path));
        }
        let bytes = count * cols * size;
        self.scratch.resize(bytes, 0);
        if !self.header.fortran {
            let at = base + (start * cols * size) as u64;
            self.file.seek(SeekFrom::Start(at)).map_err(io(&self.path))?;
            self.file.read_exact(&mut self.scratch).map_err(io(&self.path))?;
        } else {
            // Column j holds rows 0..rows contiguously: one read per column,
            // transposed into row-major order below.
            let mut col = vec![0u8; count * size];
            for j in 0..cols {
                let at = base + ((j * rows + start) * size) as u64;
                self.file.seek(SeekFrom::Start(at)).map_err(io(&self.path))?;
                self.file.read_exact(&mut col).map_err(io(&self.path))?;
                for i in 0..count {
                    let dst = (i * cols + j) * size;
                    self.scratch[dst..dst + size].copy_from_slice(&col[i * size..(i + 1) * size]);
                }
            }
        }
        convert(
            &self.path,
            &self.scratch,
            self.header.dtype,
            self.header.big_endian,
            start,
            cols,
            out,
        )
    }
}

/// Decodes `bytes` (elements of `dtype` in the given byte order) into `out`.
fn convert<T: NpyFloat>(
    path: &Path,
    bytes: &[u8],
    dtype: Dtype,
    big_endian: bool,
    first_row: usize,
    cols: usize,
    out: &mut [T],
) -> Result<()> {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let b = [b[0], b[1], b[2], b[3]];
                let v = if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                };
                *o = T::from_f64(f64::from(v));
            }
        }
        Dtype::F64 => {
            for (k, (o, b)) in out.iter_mut().zip(bytes.chunks_exact(8)).enumerate() {
                let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                let v = if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                };
                let t = T::from_f64(v);
                if T::DTYPE == Dtype::F32 && v.is_finite() && !t.to_f64().is_finite() {
                    return Err(bad(
                        path,
                        format!(
                            "element [{}, {}] = {v:e} is beyond the range of f32 (largest {:e})",
                            first_row + k / cols.max(1),
                            k % cols.max(1),
                            f32::MAX
                        ),
                    ));
                }
                *o = t;
            }
        }
    }
    Ok(())
}

/// Writes a 2-D C-order `.npy` of a shape known up front, rows in order.
#[derive(Debug)]
pub struct NpyWriter<W: Write> {
    w: W,
    dtype: Dtype,
    rows: usize,
    cols: usize,
    written: usize,
    buf: Vec<u8>,
}

/// The bytes of a version 1 (or, for a long shape, 2) `.npy` header, padded so
/// the data starts at a multiple of 64 bytes.
pub fn header_bytes(dtype: Dtype, rows: usize, cols: usize) -> Vec<u8> {
    header_for(dtype.descr(), &[rows, cols])
}

impl<W: Write> NpyWriter<W> {
    /// Writes the header of a `rows x cols` array of `dtype` to `w`.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path` (the file `w` writes, for messages).
    pub fn new(mut w: W, path: &Path, dtype: Dtype, rows: usize, cols: usize) -> Result<Self> {
        w.write_all(&header_bytes(dtype, rows, cols)).map_err(io(path))?;
        Ok(NpyWriter {
            w,
            dtype,
            rows,
            cols,
            written: 0,
            buf: Vec::new(),
        })
    }

    /// The element type it writes.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Appends rows (any layout), converting to the file's dtype. With an f32
    /// file, a finite value beyond f32's range is an error, never infinity.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for rows of the wrong width or past the
    /// promised count, and for a value beyond the range of an f32 file (naming
    /// the file and the element); [`Error::Io`] on a write error.
    pub fn write_rows<T: NpyFloat>(&mut self, path: &Path, x: ArrayView2<T>) -> Result<()> {
        let (n, d) = x.dim();
        if d != self.cols || self.written + n > self.rows {
            return Err(Error::invalid(
                "npy write",
                format!(
                    "{n} x {d} rows after {} of a {} x {} file",
                    self.written, self.rows, self.cols
                ),
            ));
        }
        // The same type, row-major and contiguous, on a little-endian host:
        // the values' bytes are the file's, written as they are.
        if T::DTYPE == self.dtype && cfg!(target_endian = "little") {
            if let Some(v) = x.as_slice() {
                self.w.write_all(bytemuck::cast_slice(v)).map_err(io(path))?;
                self.written += n;
                return Ok(());
            }
        }
        self.buf.clear();
        match self.dtype {
            Dtype::F32 => {
                for (k, v) in x.iter().enumerate() {
                    let w = v.to_f64();
                    let f = w as f32;
                    if w.is_finite() && f.is_infinite() {
                        return Err(Error::invalid(
                            "npy write",
                            format!(
                                "{}: element [{}, {}] = {w:e} is beyond the range of f32; write f64 (--dtype f64)",
                                path.display(),
                                self.written + k / d.max(1),
                                k % d.max(1)
                            ),
                        ));
                    }
                    self.buf.extend_from_slice(&f.to_le_bytes());
                }
            }
            Dtype::F64 => {
                for v in x.iter() {
                    self.buf.extend_from_slice(&v.to_f64().to_le_bytes());
                }
            }
        }
        self.w.write_all(&self.buf).map_err(io(path))?;
        self.written += n;
        Ok(())
    }

    /// Checks that every promised row was written and returns the writer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when rows are missing.
    pub fn finish(self) -> Result<W> {
        if self.written != self.rows {
            return Err(Error::invalid(
                "npy write",
                format!("{} of {} rows written", self.written, self.rows),
            ));
        }
        Ok(self.w)
    }
}
