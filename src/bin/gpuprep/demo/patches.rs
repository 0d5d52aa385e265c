//! Natural-image patches from the two photographs shipped in data/ (see
//! data/DATA.md): every `size x size x 3` patch at a stride, as rows of
//! `size * size * 3` values in [0, 1] (row-major pixels, RGB interleaved: the
//! layout of an image, so a row reshapes straight back into a picture).

use std::path::PathBuf;

use ndarray::Array2;

static CHINA: &[u8] = include_bytes!("../../../../data/china.jpg");
static FLOWER: &[u8] = include_bytes!("../../../../data/flower.jpg");

/// The two photographs, decoded (name, image).
pub fn photos() -> gpuprep::Result<Vec<(&'static str, image::RgbImage)>> {
    [("data/china.jpg", CHINA), ("data/flower.jpg", FLOWER)]
        .into_iter()
        .map(|(name, bytes)| {
            let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).map_err(|e| {
                gpuprep::Error::Parse {
                    path: PathBuf::from(name),
                    line: None,
                    reason: format!("decoding the embedded JPEG: {e}"),
                }
            })?;
            Ok((name, img.to_rgb8()))
        })
        .collect()
}

/// Every `size x size` patch of every photo at `stride`, one per row.
pub fn patches(photos: &[(&str, image::RgbImage)], size: u32, stride: u32) -> Array2<f32> {
    let mut rows: Vec<f32> = Vec::new();
    let mut n = 0;
    for (_, img) in photos {
        let (w, h) = img.dimensions();
        if w < size || h < size {
            continue;
        }
        for y0 in (0..=h - size).step_by(stride.max(1) as usize) {
            for x0 in (0..=w - size).step_by(stride.max(1) as usize) {
                for y in y0..y0 + size {
                    for x in x0..x0 + size {
                        let p = img.get_pixel(x, y).0;
                        rows.extend(p.iter().map(|&c| f32::from(c) / 255.0));
                    }
                }
                n += 1;
            }
        }
    }
    let d = (size * size * 3) as usize;
    Array2::from_shape_vec((n, d), rows).expect("n rows of d values")
}

/// Pairs of horizontally neighbouring gray values (two pixels apart), on the
/// scale 0..16 of the digits, sampled on a grid of `step` pixels: a strongly
/// correlated 2-D cloud of real data.
pub fn neighbour_pairs(photos: &[(&str, image::RgbImage)], step: u32) -> Array2<f32> {
    let mut v = Vec::new();
    for (_, img) in photos {
        let (w, h) = img.dimensions();
        let gray = |x: u32, y: u32| {
            let p = img.get_pixel(x, y).0;
            (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) / 16.0
        };
        for y in (0..h).step_by(step as usize) {
            for x in (0..w.saturating_sub(2)).step_by(step as usize) {
                v.push(gray(x, y));
                v.push(gray(x + 2, y));
            }
        }
    }
    let n = v.len() / 2;
    Array2::from_shape_vec((n, 2), v).expect("pairs")
}
