//! Drawing the demo's figures: plotters on an RGB buffer (its bitmap backend,
//! text by ab_glyph with DejaVu Sans embedded in the binary, so no system font
//! library is involved), image grids blitted into the same buffer, and the
//! PNG written by the `image` crate.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// DejaVu Sans (Bitstream Vera license; data/fonts/LICENSE-DejaVu.txt).
static FONT: &[u8] = include_bytes!("../../../../data/fonts/DejaVuSans.ttf");

pub const FAMILY: &str = "sans-serif";

/// Colours for series, in order.
pub const SERIES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            crate::output::note(
                "gpuprep: warning: the embedded font did not load; figures will have no text",
            );
        }
    });
}

/// A drawing error as the crate's error, naming the figure.
pub fn err(path: &Path, e: impl std::fmt::Display) -> gpuprep::Error {
    gpuprep::Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("drawing the figure: {e}")),
    }
}

/// An RGB picture being drawn.
pub struct Canvas {
    pub w: u32,
    pub h: u32,
    buf: Vec<u8>,
    path: PathBuf,
}

impl Canvas {
    /// A white canvas that will be written to `path`.
    pub fn new(path: PathBuf, w: u32, h: u32) -> Canvas {
        register_font();
        Canvas {
            w,
            h,
            buf: vec![255; (w * h * 3) as usize],
            path,
        }
    }

    /// Draws with plotters on the whole canvas (the root area).
    pub fn draw(
        &mut self,
        f: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>,
    ) -> gpuprep::Result<()> {
        let path = self.path.clone();
        let root = BitMapBackend::with_buffer(&mut self.buf, (self.w, self.h)).into_drawing_area();
        f(&root).map_err(|e| err(&path, e))?;
        root.present().map_err(|e| err(&path, e))?;
        Ok(())
    }

    /// Copies `img` with its top-left corner at (x, y), each pixel a
    /// `scale x scale` block (clipped at the canvas's edge).
    pub fn blit(&mut self, x: u32, y: u32, img: &image::RgbImage, scale: u32) {
        for (px, py, p) in img.enumerate_pixels() {
            for dy in 0..scale {
                for dx in 0..scale {
                    let (cx, cy) = (x + px * scale + dx, y + py * scale + dy);
                    if cx < self.w && cy < self.h {
                        let i = ((cy * self.w + cx) * 3) as usize;
                        self.buf[i..i + 3].copy_from_slice(&p.0);
                    }
                }
            }
        }
    }

    /// Writes the PNG atomically (encoded in memory, then a temporary file
    /// renamed into place: an interrupted demo leaves no half-written
    /// figure); returns its path.
    pub fn save(self) -> gpuprep::Result<PathBuf> {
        let img = image::RgbImage::from_raw(self.w, self.h, self.buf)
            .ok_or_else(|| err(&self.path, "buffer size"))?;
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| err(&self.path, e))?;
        gpuprep::io::write_atomic(&self.path, |f| {
            std::io::Write::write_all(f, png.get_ref()).map_err(|source| gpuprep::Error::Io {
                path: self.path.clone(),
                source,
            })
        })?;
        Ok(self.path)
    }
}

/// Text at (x, y) of the root area.
pub fn label(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    text: &str,
    (x, y): (i32, i32),
    size: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    // An even size: plotters' ab_glyph backend misplaces small glyphs (a
    // '.' floats to mid-height) by a pixel at odd sizes.
    let size = size + size % 2;
    root.draw(&Text::new(
        text.to_string(),
        (x, y),
        (FAMILY, size).into_font().color(&BLACK),
    ))?;
    Ok(())
}

/// A grid of images (each `side x side` pixels, given as values to map to
/// colours by `to_rgb`), `cols` per row, `scale` canvas pixels per image
/// pixel and `gap` pixels between them.
pub struct Grid {
    pub images: Vec<image::RgbImage>,
    pub cols: u32,
    pub scale: u32,
    pub gap: u32,
}

impl Grid {
    /// The grid's size on the canvas.
    pub fn size(&self) -> (u32, u32) {
        let Some(first) = self.images.first() else {
            return (0, 0);
        };
        let (w, h) = first.dimensions();
        let cols = self.cols.min(self.images.len() as u32).max(1);
        let rows = (self.images.len() as u32).div_ceil(cols);
        (
            cols * (w * self.scale + self.gap),
            rows * (h * self.scale + self.gap),
        )
    }

    /// Blits the grid at (x, y).
    pub fn blit(&self, canvas: &mut Canvas, x: u32, y: u32) {
        for (i, img) in self.images.iter().enumerate() {
            let (w, h) = img.dimensions();
            let (c, r) = (i as u32 % self.cols, i as u32 / self.cols);
            canvas.blit(
                x + c * (w * self.scale + self.gap),
                y + r * (h * self.scale + self.gap),
                img,
                self.scale,
            );
        }
    }
}

/// An image from `side x side x channels` values (row-major, channels
/// interleaved), each mapped by `f` to [0, 1]; one channel is gray.
pub fn image_from(values: &[f64], side: u32, channels: usize, f: impl Fn(f64) -> f64) -> image::RgbImage {
    let byte = |v: f64| (f(v).clamp(0.0, 1.0) * 255.0).round() as u8;
    image::RgbImage::from_fn(side, side, |x, y| {
        let at = ((y * side + x) as usize) * channels;
        if channels == 1 {
            let g = byte(values[at]);
            image::Rgb([g, g, g])
        } else {
            image::Rgb([byte(values[at]), byte(values[at + 1]), byte(values[at + 2])])
        }
    })
}

/// Maps values symmetrically about 0 to [0, 1]: 0 is mid-gray, the largest
/// magnitude of `values` is black or white.
pub fn symmetric(values: &[f64]) -> impl Fn(f64) -> f64 {
    let m = values
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    move |v| 0.5 + 0.5 * v / m
}

/// Maps values to [0, 1] by their own min and max.
pub fn stretch(values: &[f64]) -> impl Fn(f64) -> f64 {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    move |v| (v - lo) / span
}

/// A blue-white-red colour for v in [-1, 1].
pub fn diverging(v: f64) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    let t = v.abs();
    let (r, g, b) = if v >= 0.0 {
        (1.0, 1.0 - 0.75 * t, 1.0 - 0.8 * t)
    } else {
        (1.0 - 0.8 * t, 1.0 - 0.6 * t, 1.0)
    };
    RGBColor((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8)
}
