//! [`GpuMatrix`]: an f32 row-major matrix on the GPU, as a view of one or more
//! buffers.
//!
//! A matrix is a list of *row blocks*, each a byte range of one buffer
//! (`buffer`, `offset`, `rows`). Most matrices are one block of a buffer of
//! their own; a matrix larger than the device's `max_buffer_size` is several
//! blocks, and a row range of any matrix ([`GpuMatrix::row_range`]) is a view
//! of the same buffers, so chunks, row ranges and multi-buffer matrices all go
//! through the same launchers. The launchers split the rows into *pieces*
//! (`pieces`): row ranges that lie in one block of every operand and fit one
//! storage binding, bound at their offsets (a piece whose offset is not a
//! multiple of the device's `min_storage_buffer_offset_alignment` is staged
//! through a scratch buffer, at the cost of one copy).

use std::ops::Range;
use std::sync::Arc;

use ndarray::{s, Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
pub(crate) use crate::gpu::Span;

/// One row block of a matrix: `rows` rows starting at byte `offset` of `buffer`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub rows: usize,
}

/// A rows x cols f32 matrix, row-major, in GPU storage buffers.
///
/// Cloning is cheap and shares the buffers. The buffers may be ones gpuprep
/// made or ones a host application owns ([`GpuMatrix::from_buffer`]).
#[derive(Debug, Clone)]
pub struct GpuMatrix {
    /// The [`Gpu`] context that made it (see `Gpu::id`).
    owner: u64,
    blocks: Arc<[Block]>,
    rows: usize,
    cols: usize,
}

/// `rows * cols`, checked so that its byte count fits.
fn elements(op: &'static str, rows: usize, cols: usize) -> Result<u64> {
    rows.checked_mul(cols)
        .filter(|n| n.checked_mul(4).is_some())
        .map(|n| n as u64)
        .ok_or_else(|| Error::invalid(op, format!("{rows} x {cols} elements overflow")))
}

impl GpuMatrix {
    /// Uploads a matrix (any memory layout) to new buffers: one, unless it is
    /// larger than the device's largest buffer.
    ///
    /// # Errors
    /// As [`GpuMatrix::uninit`] (and the upload's: [`Error::DeviceLost`] for a
    /// lost device).
    pub fn upload(gpu: &Gpu, x: ArrayView2<f32>) -> Result<GpuMatrix> {
        let (rows, cols) = x.dim();
        let m = Self::uninit(gpu, rows, cols)?;
        let mut start = 0;
        for b in m.blocks.iter() {
            let part = x.slice(s![start..start + b.rows, ..]);
            gpu.write_rows(&b.buffer, b.offset, part)?;
            start += b.rows;
        }
        Ok(m)
    }

    /// Overwrites the matrix with `x` (same shape, any layout) through
    /// `Queue::write_buffer`: the write lands before the next submit, after
    /// every submit before it, so a matrix still read by submitted work can be
    /// refilled for the next (streaming reuses two input matrices so).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for another shape; a buffer without `COPY_DST`.
    pub fn write(&self, gpu: &Gpu, x: ArrayView2<f32>) -> Result<()> {
        self.check_device(gpu, "GpuMatrix::write")?;
        if x.dim() != self.shape() {
            return Err(Error::shape(
                "GpuMatrix::write",
                format!("{} x {}", self.rows, self.cols),
                format!("{} x {}", x.nrows(), x.ncols()),
            ));
        }
        let mut start = 0;
        for b in self.blocks.iter() {
            gpu.write_rows(&b.buffer, b.offset, x.slice(s![start..start + b.rows, ..]))?;
            start += b.rows;
        }
        Ok(())
    }

    /// A new `rows x cols` matrix that `record` writes (recording into a new
    /// encoder, which is then submitted as `op`): the allocating form of an
    /// op's `encode_*_into`.
    ///
    /// # Errors
    /// As [`GpuMatrix::uninit`]; `record`'s errors; [`Error::Gpu`] for a
    /// validation error at the submit.
    pub fn recorded(
        gpu: &Gpu,
        op: &'static str,
        (rows, cols): (usize, usize),
        record: impl FnOnce(&mut wgpu::CommandEncoder, &GpuMatrix) -> Result<()>,
    ) -> Result<GpuMatrix> {
        let out = GpuMatrix::uninit(gpu, rows, cols)?;
        gpu.run(op, |e| record(e, &out))?;
        Ok(out)
    }

    /// A new matrix whose contents are unspecified (zeros, in practice).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `rows * cols * 4` bytes overflow;
    /// [`Error::ExceedsLimit`] for a row block beyond the device's largest buffer
    /// (one row too wide); [`Error::Gpu`] when the allocation fails;
    /// [`Error::DeviceLost`] for a lost device.
    pub fn uninit(gpu: &Gpu, rows: usize, cols: usize) -> Result<GpuMatrix> {
        gpu.check_alive()?;
        elements("GpuMatrix", rows, cols)?;
        let row_bytes = cols as u64 * 4;
        let per_block = gpu.block_rows(cols);
        let mut blocks = Vec::new();
        let mut left = rows;
        loop {
            let take = left.min(per_block);
            let buffer = gpu.storage_buffer("GpuMatrix", take as u64 * row_bytes, "gpuprep matrix")?;
            blocks.push(Block {
                buffer,
                offset: 0,
                rows: take,
            });
            left -= take;
            if left == 0 {
                break;
            }
        }
        Ok(GpuMatrix {
            owner: gpu.id(),
            blocks: blocks.into(),
            rows,
            cols,
        })
    }

    /// A new matrix in one buffer of its own, whatever this context's block
    /// cap: for the small operands ops make (statistics, parameters), which
    /// the launchers bind whole.
    pub(crate) fn uninit_whole(gpu: &Gpu, rows: usize, cols: usize) -> Result<GpuMatrix> {
        gpu.check_alive()?;
        let n = elements("GpuMatrix", rows, cols)?;
        let buffer = gpu.storage_buffer("GpuMatrix", n * 4, "gpuprep matrix")?;
        Ok(GpuMatrix {
            owner: gpu.id(),
            blocks: vec![Block {
                buffer,
                offset: 0,
                rows,
            }]
            .into(),
            rows,
            cols,
        })
    }

    /// A new matrix filled with `value` (NaN poisons an output in tests).
    ///
    /// # Errors
    /// As [`GpuMatrix::uninit`] and [`GpuMatrix::fill`].
    pub fn filled(gpu: &Gpu, rows: usize, cols: usize, value: f32) -> Result<GpuMatrix> {
        let m = Self::uninit(gpu, rows, cols)?;
        m.fill(gpu, value)?;
        Ok(m)
    }

    /// Overwrites every element with `value` (through `Queue::write_buffer`:
    /// it lands before the next submit). Errors if a buffer lacks `COPY_DST`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a matrix of another context or a buffer
    /// without `COPY_DST`; [`Error::DeviceLost`] for a lost device.
    pub fn fill(&self, gpu: &Gpu, value: f32) -> Result<()> {
        self.check_device(gpu, "GpuMatrix::fill")?;
        for b in self.blocks.iter() {
            let bytes = b.rows as u64 * self.cols as u64 * 4;
            gpu.write_value(&b.buffer, b.offset, bytes, value)?;
        }
        Ok(())
    }

    /// Wraps a host's buffer (no copy): the matrix starts at byte 0. The buffer
    /// needs `STORAGE` usage and at least `rows * cols * 4` bytes; `COPY_SRC`
    /// too if it will be downloaded.
    ///
    /// # Errors
    /// As [`GpuMatrix::from_buffer_at`].
    pub fn from_buffer(gpu: &Gpu, buffer: wgpu::Buffer, rows: usize, cols: usize) -> Result<GpuMatrix> {
        Self::from_buffer_at(gpu, buffer, 0, rows, cols)
    }

    /// Wraps `rows * cols * 4` bytes of a host's buffer starting at byte
    /// `offset` (a multiple of 4). An offset that is not a multiple of the
    /// device's `min_storage_buffer_offset_alignment` works, at the cost of a
    /// staging copy per op (the buffer then needs `COPY_SRC` and `COPY_DST`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `rows * cols * 4` bytes overflow, for a
    /// buffer without `STORAGE` or an `offset` not a multiple of 4;
    /// [`Error::ShapeMismatch`] for a buffer too small for the matrix at `offset`;
    /// [`Error::ExceedsLimit`] beyond the device's storage binding size;
    /// [`Error::DeviceLost`] for a lost device.
    pub fn from_buffer_at(
        gpu: &Gpu,
        buffer: wgpu::Buffer,
        offset: u64,
        rows: usize,
        cols: usize,
    ) -> Result<GpuMatrix> {
        const OP: &str = "GpuMatrix::from_buffer";
        gpu.check_alive()?;
        let bytes = elements(OP, rows, cols)? * 4;
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::invalid(
                OP,
                format!("buffer usage {:?} lacks STORAGE", buffer.usage()),
            ));
        }
        if !offset.is_multiple_of(4) {
            return Err(Error::invalid(
                OP,
                format!("offset {offset} is not a multiple of 4"),
            ));
        }
        if offset.checked_add(bytes).is_none_or(|end| end > buffer.size()) {
            return Err(Error::shape(
                OP,
                format!(
                    "a buffer of at least {} bytes ({rows} x {cols} f32 from byte {offset})",
                    offset.saturating_add(bytes)
                ),
                format!("a buffer of {} bytes", buffer.size()),
            ));
        }
        gpu.check_binding(OP, bytes)?;
        Ok(GpuMatrix {
            owner: gpu.id(),
            blocks: vec![Block { buffer, offset, rows }].into(),
            rows,
            cols,
        })
    }

    /// Rows `rows` of this matrix as a matrix of their own: a view of the
    /// same buffers (no copy; writes through it change this matrix).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range that is reversed or past the last row.
    pub fn row_range(&self, rows: Range<usize>) -> Result<GpuMatrix> {
        if rows.start > rows.end || rows.end > self.rows {
            return Err(Error::invalid(
                "GpuMatrix::row_range",
                format!("rows {}..{} of {}", rows.start, rows.end, self.rows),
            ));
        }
        let row_bytes = self.cols as u64 * 4;
        let mut blocks = Vec::new();
        let mut at = 0;
        for b in self.blocks.iter() {
            let (lo, hi) = (at, at + b.rows);
            at = hi;
            let (s, e) = (rows.start.max(lo), rows.end.min(hi));
            if s < e || (blocks.is_empty() && rows.is_empty() && (lo..=hi).contains(&rows.start)) {
                blocks.push(Block {
                    buffer: b.buffer.clone(),
                    offset: b.offset + (s - lo) as u64 * row_bytes,
                    rows: e - s,
                });
                if rows.is_empty() {
                    break;
                }
            }
        }
        Ok(GpuMatrix {
            owner: self.owner,
            blocks: blocks.into(),
            rows: rows.len(),
            cols: self.cols,
        })
    }

    /// A ShapeMismatch naming `op`, `expected` and this matrix's shape unless
    /// `ok` (a test of that shape by the caller: for matrices in public fields,
    /// which a user may have replaced).
    pub(crate) fn check_dims(&self, op: &'static str, expected: &str, ok: bool) -> Result<()> {
        if ok {
            return Ok(());
        }
        Err(Error::shape(
            op,
            expected,
            format!("{} x {}", self.rows, self.cols),
        ))
    }

    /// Checks that `self` can be the `shape` output of `op` while `inputs` are
    /// read: its shape, its device, and no buffer shared with an input (a
    /// kernel reading and writing one buffer through two bindings races, and
    /// wgpu refuses it).
    pub(crate) fn check_output(
        &self,
        gpu: &Gpu,
        op: &'static str,
        shape: (usize, usize),
        inputs: &[&GpuMatrix],
    ) -> Result<()> {
        self.check_device(gpu, op)?;
        // Inputs of another context first: their buffers are another
        // device's, and comparing them below would say the wrong thing.
        for i in inputs {
            i.check_device(gpu, op)?;
        }
        if self.shape() != shape {
            return Err(Error::shape(
                op,
                format!("an output matrix of {} rows x {} columns", shape.0, shape.1),
                format!("one of {} x {}", self.rows, self.cols),
            ));
        }
        if inputs.iter().any(|i| i.shares_buffer(self)) {
            return Err(Error::invalid(
                op,
                "the output must not share a buffer with an input",
            ));
        }
        Ok(())
    }

    /// Whether the two are the same view: the same shape over the same bytes.
    pub(crate) fn same_view(&self, other: &GpuMatrix) -> bool {
        self.shape() == other.shape()
            && self.blocks.len() == other.blocks.len()
            && self
                .blocks
                .iter()
                .zip(other.blocks.iter())
                .all(|(a, b)| a.buffer == b.buffer && a.offset == b.offset && a.rows == b.rows)
    }

    /// Whether the two matrices have a buffer in common.
    pub(crate) fn shares_buffer(&self, other: &GpuMatrix) -> bool {
        self.blocks
            .iter()
            .any(|a| other.blocks.iter().any(|b| a.buffer == b.buffer))
    }

    /// Checks that this matrix lives on `gpu`'s device.
    pub(crate) fn check_device(&self, gpu: &Gpu, op: &'static str) -> Result<()> {
        gpu.check_owner(self.owner, op, "matrix")
    }

    /// Records copies of each `(buffer, offset, bytes)` into this matrix's
    /// row-major data, one after the other from its start: several results
    /// packed for one readback. Each copy is cut where this matrix passes
    /// from one buffer to the next.
    pub(crate) fn encode_pack(&self, e: &mut wgpu::CommandEncoder, parts: &[(&wgpu::Buffer, u64, u64)]) {
        let row_bytes = self.cols as u64 * 4;
        let mut at = 0u64;
        for &(buffer, mut offset, mut bytes) in parts {
            let mut start = 0u64;
            for b in self.blocks.iter() {
                let end = start + b.rows as u64 * row_bytes;
                if bytes > 0 && at < end {
                    let n = bytes.min(end - at);
                    e.copy_buffer_to_buffer(buffer, offset, &b.buffer, b.offset + (at - start), n);
                    (at, offset, bytes) = (at + n, offset + n, bytes - n);
                }
                start = end;
            }
        }
    }

    /// Records `record` and reads this whole matrix back after it: one submit
    /// where the matrix is one buffer (the copy to the staging buffer in the
    /// same encoder), a submit and a [`GpuMatrix::download`] otherwise.
    pub(crate) fn read_after(
        &self,
        gpu: &Gpu,
        op: &'static str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<Array2<f32>> {
        self.check_device(gpu, op)?;
        if self.blocks.len() != 1 {
            gpu.run(op, record)?;
            return self.download(gpu);
        }
        let bytes = (self.rows as u64) * (self.cols as u64) * 4;
        let raw = gpu.run_and_read(op, record, self.buffer(), self.offset(), bytes)?;
        Array2::from_shape_vec((self.rows, self.cols), bytemuck::pod_collect_to_vec(&raw))
            .map_err(|e| Error::DeviceLost(format!("readback size: {e}")))
    }

    /// Downloads the whole matrix.
    ///
    /// # Errors
    /// As [`GpuMatrix::download_rows`].
    pub fn download(&self, gpu: &Gpu) -> Result<Array2<f32>> {
        self.download_rows(gpu, 0, self.rows)
    }

    /// Downloads rows `start..start + count`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for rows past the end or a matrix of another
    /// context; the readback's errors ([`Error::Timeout`], [`Error::DeviceLost`],
    /// [`Error::Gpu`], and [`Error::InvalidArgument`] for a buffer without
    /// `COPY_SRC`).
    pub fn download_rows(&self, gpu: &Gpu, start: usize, count: usize) -> Result<Array2<f32>> {
        const OP: &str = "GpuMatrix::download_rows";
        self.check_device(gpu, OP)?;
        if start.checked_add(count).is_none_or(|end| end > self.rows) {
            return Err(Error::invalid(
                OP,
                format!("rows {start}..{} of {}", start.saturating_add(count), self.rows),
            ));
        }
        let view = self.row_range(start..start + count)?;
        let mut v = Vec::with_capacity(count * self.cols);
        for b in view.blocks.iter() {
            let bytes = b.rows as u64 * self.cols as u64 * 4;
            v.extend(gpu.read_f32_bytes(&b.buffer, b.offset, bytes)?);
        }
        Array2::from_shape_vec((count, self.cols), v)
            .map_err(|e| Error::DeviceLost(format!("readback size: {e}")))
    }

    /// The buffer of the first row block: the matrix's only buffer unless it is
    /// larger than one buffer ([`GpuMatrix::block_count`]). Shared, not copied.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.blocks[0].buffer
    }

    /// Byte offset of row 0 in [`GpuMatrix::buffer`].
    pub fn offset(&self) -> u64 {
        self.blocks[0].offset
    }

    /// Number of row blocks (buffers, or byte ranges of buffers) the matrix spans.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn blocks(&self) -> &[Block] {
        &self.blocks
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

    /// Rows `rows` as one byte range, when they lie in one block.
    pub(crate) fn span(&self, rows: Range<usize>) -> Option<Span> {
        let row_bytes = self.cols as u64 * 4;
        let mut at = 0;
        for b in self.blocks.iter() {
            if rows.start >= at && rows.end <= at + b.rows {
                return Some(Span {
                    buffer: b.buffer.clone(),
                    offset: b.offset + (rows.start - at) as u64 * row_bytes,
                    size: rows.len() as u64 * row_bytes,
                });
            }
            at += b.rows;
        }
        None
    }

    /// The whole matrix as one byte range: for the small operands of an op
    /// (statistics, weights, vectors, parameters), which are never split. It
    /// must be one block that fits one binding, at an offset the device can
    /// bind (a multiple of `min_storage_buffer_offset_alignment`).
    pub(crate) fn whole_span(&self, gpu: &Gpu, op: &'static str) -> Result<Span> {
        self.check_device(gpu, op)?;
        let span = self.span(0..self.rows).ok_or_else(|| {
            Error::invalid(
                op,
                "this operand must lie in one buffer (it is split over several)",
            )
        })?;
        gpu.check_binding(op, span.size)?;
        if !gpu.offset_ok(span.offset) {
            return Err(Error::invalid(
                op,
                format!(
                    "this operand starts at byte {} of its buffer, which is not a multiple of the \
                     device's storage offset alignment ({})",
                    span.offset,
                    gpu.limits().min_storage_buffer_offset_alignment
                ),
            ));
        }
        Ok(span)
    }
}

/// Row ranges that split an op over `mats` (all with the same number of rows):
/// each lies in one block of every matrix, fits one storage binding for each,
/// and starts at a row offset that keeps every matrix's byte offset a multiple
/// of the device's storage-offset alignment wherever the blocks allow.
pub(crate) fn pieces(gpu: &Gpu, mats: &[&GpuMatrix]) -> Vec<Range<usize>> {
    let rows = mats.first().map_or(0, |m| m.rows);
    if rows == 0 {
        return Vec::new();
    }
    // Block boundaries of every operand.
    let mut cuts: Vec<usize> = vec![0, rows];
    for m in mats {
        let mut at = 0;
        for b in m.blocks.iter() {
            at += b.rows;
            cuts.push(at.min(rows));
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let max_rows = mats
        .iter()
        .map(|m| gpu.piece_rows(m.cols))
        .min()
        .unwrap_or(rows)
        .max(1);
    let align = mats.iter().map(|m| gpu.align_rows(m.cols)).fold(1, lcm);
    let step = if max_rows >= align {
        max_rows / align * align
    } else {
        max_rows
    };
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let mut s = w[0];
        while s < w[1] {
            let e = (s + step).min(w[1]);
            out.push(s..e);
            s = e;
        }
    }
    out
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Rows `rows` of input `m` as a bindable span: the matrix's own bytes when
/// they lie in one block at an aligned offset, else a copy in a scratch buffer
/// (`tag` names the scratch; each input of one dispatch needs its own).
pub(crate) fn bind_input(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    op: &'static str,
    tag: &'static str,
    m: &GpuMatrix,
    rows: Range<usize>,
) -> Result<Span> {
    // Every operand an op binds passes here: one place refuses a matrix of
    // another context (a panic inside wgpu-core otherwise).
    m.check_device(gpu, op)?;
    let row_bytes = m.cols as u64 * 4;
    let size = rows.len() as u64 * row_bytes;
    if let Some(span) = m.span(rows.clone()) {
        if gpu.offset_ok(span.offset) {
            return Ok(span);
        }
    }
    let scratch = gpu.scratch(tag, size.max(16))?;
    copy_rows_out(gpu, encoder, op, m, rows, &scratch, 0)?;
    Ok(Span {
        buffer: scratch,
        offset: 0,
        size,
    })
}

/// Copies rows `rows` of `m` (any blocks) to `dst` at byte `at`.
fn copy_rows_out(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    op: &'static str,
    m: &GpuMatrix,
    rows: Range<usize>,
    dst: &wgpu::Buffer,
    mut at: u64,
) -> Result<()> {
    let view = m.row_range(rows)?;
    for b in view.blocks.iter() {
        let bytes = b.rows as u64 * m.cols as u64 * 4;
        if bytes == 0 {
            continue;
        }
        gpu.require_usage(op, &b.buffer, wgpu::BufferUsages::COPY_SRC)?;
        encoder.copy_buffer_to_buffer(&b.buffer, b.offset, dst, at, bytes);
        at += bytes;
    }
    Ok(())
}

/// Rows of an output for one dispatch: bound in place when they lie in one
/// block at an aligned offset, else a scratch buffer that
/// [`OutputPiece::finish`] copies into place after the dispatch. With
/// `read_back_first` (an in-place op reads what it writes) the scratch starts
/// as a copy of the rows.
pub(crate) struct OutputPiece {
    pub span: Span,
    staged: Option<(GpuMatrix, Range<usize>)>,
}

impl OutputPiece {
    pub fn new(
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        op: &'static str,
        tag: &'static str,
        m: &GpuMatrix,
        rows: Range<usize>,
        read_back_first: bool,
    ) -> Result<OutputPiece> {
        if let Some(span) = m.span(rows.clone()) {
            if gpu.offset_ok(span.offset) {
                return Ok(OutputPiece { span, staged: None });
            }
        }
        let size = rows.len() as u64 * m.cols as u64 * 4;
        let scratch = gpu.scratch(tag, size.max(16))?;
        if read_back_first {
            copy_rows_out(gpu, encoder, op, m, rows.clone(), &scratch, 0)?;
        }
        Ok(OutputPiece {
            span: Span {
                buffer: scratch,
                offset: 0,
                size,
            },
            staged: Some((m.clone(), rows)),
        })
    }

    /// Copies a staged piece into place (records the copies).
    pub fn finish(self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, op: &'static str) -> Result<()> {
        let Some((m, rows)) = self.staged else {
            return Ok(());
        };
        let view = m.row_range(rows)?;
        let mut at = 0;
        for b in view.blocks.iter() {
            let bytes = b.rows as u64 * m.cols as u64 * 4;
            if bytes == 0 {
                continue;
            }
            gpu.require_usage(op, &b.buffer, wgpu::BufferUsages::COPY_DST)?;
            encoder.copy_buffer_to_buffer(&self.span.buffer, at, &b.buffer, b.offset, bytes);
            at += bytes;
        }
        Ok(())
    }
}
