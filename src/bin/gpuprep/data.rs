//! The digits data set, embedded in the binary (see data/DATA.md).

use std::io::Read;
use std::path::Path;

use gpuprep::io::parse_csv_matrix;
use ndarray::{s, Array1, Array2};

static DIGITS_GZ: &[u8] = include_bytes!("../../../data/digits.csv.gz");

/// The 1797 x 64 pixel matrix (values 0..16) and the 1797 labels.
pub fn digits() -> gpuprep::Result<(Array2<f32>, Array1<u8>)> {
    let name = Path::new("data/digits.csv.gz (embedded)");
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|source| gpuprep::Error::Io {
            path: name.to_path_buf(),
            source,
        })?;
    let m = parse_csv_matrix(name, &text)?;
    let x = m.slice(s![.., ..64]).mapv(|v| v as f32);
    let y = m.column(64).mapv(|v| v as u8);
    Ok((x, y))
}
