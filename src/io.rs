//! File I/O shared by the library and the command line: .npy matrices in,
//! .npy out written atomically (temporary file, then rename), and the CSV
//! data set embedded in the binary.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line: None,
        reason: reason.to_string(),
    }
}

/// Reads a 2-D .npy file of f32 or f64 (C or Fortran order) as f32.
pub fn read_npy_matrix(path: &Path) -> Result<Array2<f32>> {
    let open = || File::open(path).map(BufReader::new).map_err(io_err(path));
    match Array2::<f32>::read_npy(open()?) {
        Ok(a) => Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => Array2::<f64>::read_npy(open()?)
            .map(|a| a.mapv(|v| v as f32))
            .map_err(|e| parse_err(path, format!("not a 2-D f32 or f64 array: {e}"))),
        Err(e) => Err(parse_err(path, format!("not a 2-D f32 or f64 array: {e}"))),
    }
}

/// Writes `path` so that it is either absent (on error) or complete: the data
/// goes to a temporary file beside it, which is renamed over `path` at the end.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid("write", format!("{} has no file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush().map_err(io_err(&tmp))?;
        w.get_ref().sync_all().map_err(io_err(&tmp))?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a 2-D f32 array as .npy, atomically.
pub fn write_npy_matrix(path: &Path, a: ArrayView2<f32>) -> Result<()> {
    write_atomic(path, |w| {
        a.write_npy(w).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })
    })
}

/// Parses comma-separated numbers, one row per line, all rows the same length.
/// `name` is used in error messages (a path or a label).
pub fn parse_csv_matrix(name: &Path, text: &str) -> Result<Array2<f64>> {
    let mut values = Vec::new();
    let mut cols = None;
    let mut rows = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let before = values.len();
        for field in line.split(',') {
            let v: f64 = field.trim().parse().map_err(|_| Error::Parse {
                path: name.to_path_buf(),
                line: Some(i + 1),
                reason: format!("not a number: {field:?}"),
            })?;
            values.push(v);
        }
        let n = values.len() - before;
        match cols {
            None => cols = Some(n),
            Some(c) if c != n => {
                return Err(Error::Parse {
                    path: name.to_path_buf(),
                    line: Some(i + 1),
                    reason: format!("{n} fields, expected {c}"),
                })
            }
            _ => {}
        }
        rows += 1;
    }
    let cols = cols.ok_or_else(|| parse_err(name, "no rows"))?;
    Array2::from_shape_vec((rows, cols), values).map_err(|e| parse_err(name, e))
}
