//! [`GpuMatrix`]: an f32 row-major matrix living in a GPU buffer.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// A rows x cols f32 matrix, row-major, in a GPU storage buffer.
///
/// Cloning is cheap and shares the buffer. The buffer may be one gpuprep made
/// or one a host application owns ([`GpuMatrix::from_buffer`]).
#[derive(Debug, Clone)]
pub struct GpuMatrix {
    buffer: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl GpuMatrix {
    /// Uploads a matrix (any memory layout) to a new buffer.
    pub fn upload(gpu: &Gpu, x: ArrayView2<f32>) -> Result<GpuMatrix> {
        let (rows, cols) = x.dim();
        let m = Self::uninit(gpu, rows, cols)?;
        if rows * cols > 0 {
            match x.as_slice() {
                Some(s) => gpu.queue().write_buffer(&m.buffer, 0, bytemuck::cast_slice(s)),
                None => {
                    let owned: Vec<f32> = x.iter().copied().collect();
                    gpu.queue()
                        .write_buffer(&m.buffer, 0, bytemuck::cast_slice(&owned))
                }
            }
        }
        Ok(m)
    }

    /// A new matrix whose contents are unspecified (zeros, in practice).
    pub fn uninit(gpu: &Gpu, rows: usize, cols: usize) -> Result<GpuMatrix> {
        let bytes = elements(rows, cols)? * 4;
        let buffer = gpu.storage_buffer("GpuMatrix", bytes, "gpuprep matrix")?;
        Ok(GpuMatrix { buffer, rows, cols })
    }

    /// A new matrix filled with `value` (NaN poisons an output in tests).
    pub fn filled(gpu: &Gpu, rows: usize, cols: usize, value: f32) -> Result<GpuMatrix> {
        let m = Self::uninit(gpu, rows, cols)?;
        m.fill(gpu, value);
        Ok(m)
    }

    /// Overwrites every element with `value`.
    pub fn fill(&self, gpu: &Gpu, value: f32) {
        if !self.is_empty() {
            let v = vec![value; self.len()];
            gpu.queue()
                .write_buffer(&self.buffer, 0, bytemuck::cast_slice(&v));
        }
    }

    /// Wraps a host's buffer (no copy). The buffer needs `STORAGE` usage and
    /// at least `rows * cols * 4` bytes; `COPY_SRC` too if it will be downloaded.
    pub fn from_buffer(buffer: wgpu::Buffer, rows: usize, cols: usize) -> Result<GpuMatrix> {
        let bytes = elements(rows, cols)? * 4;
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::invalid(
                "GpuMatrix::from_buffer",
                format!("buffer usage {:?} lacks STORAGE", buffer.usage()),
            ));
        }
        if buffer.size() < bytes {
            return Err(Error::shape(
                "GpuMatrix::from_buffer",
                format!("a buffer of at least {bytes} bytes for {rows} x {cols} f32"),
                format!("{} bytes", buffer.size()),
            ));
        }
        Ok(GpuMatrix { buffer, rows, cols })
    }

    /// Checks that `self` can be the `shape` output of `op` while `inputs` are
    /// read: its shape, and no buffer shared with an input (a kernel reading
    /// and writing one buffer through two bindings races).
    pub(crate) fn check_output(
        &self,
        op: &'static str,
        shape: (usize, usize),
        inputs: &[&GpuMatrix],
    ) -> Result<()> {
        if self.shape() != shape {
            return Err(Error::shape(
                op,
                format!("an output of {} x {}", shape.0, shape.1),
                format!("{} x {}", self.rows, self.cols),
            ));
        }
        if inputs.iter().any(|i| i.buffer == self.buffer) {
            return Err(Error::invalid(
                op,
                "the output must not share a buffer with an input",
            ));
        }
        Ok(())
    }

    /// Downloads the whole matrix.
    pub fn download(&self, gpu: &Gpu) -> Result<Array2<f32>> {
        let v = gpu.read_f32(&self.buffer, 0, self.len() as u64)?;
        Array2::from_shape_vec((self.rows, self.cols), v)
            .map_err(|e| Error::DeviceLost(format!("readback size: {e}")))
    }

    /// Downloads rows `start..start + count`.
    pub fn download_rows(&self, gpu: &Gpu, start: usize, count: usize) -> Result<Array2<f32>> {
        if start.checked_add(count).is_none_or(|end| end > self.rows) {
            return Err(Error::invalid(
                "GpuMatrix::download_rows",
                format!("rows {start}..{} of {}", start.saturating_add(count), self.rows),
            ));
        }
        let v = gpu.read_f32(
            &self.buffer,
            (start * self.cols) as u64,
            (count * self.cols) as u64,
        )?;
        Array2::from_shape_vec((count, self.cols), v)
            .map_err(|e| Error::DeviceLost(format!("readback size: {e}")))
    }

    /// The buffer (shared, not copied).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// (rows, cols).
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// rows * cols.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True when the matrix has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn elements(rows: usize, cols: usize) -> Result<u64> {
    rows.checked_mul(cols)
        .filter(|&n| n <= u32::MAX as usize)
        .map(|n| n as u64)
        .ok_or_else(|| Error::ExceedsLimit {
            op: "GpuMatrix",
            what: "elements (u32 indexing in the kernels)",
            needed: (rows as u128 * cols as u128).min(u64::MAX as u128) as u64,
            limit: u32::MAX as u64,
        })
}
