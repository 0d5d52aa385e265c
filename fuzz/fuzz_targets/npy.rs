//! The .npy readers on any bytes: the whole-file reader
//! (`gpuprep::io::read_matrix`, `read_npy_matrix`) and the streaming one
//! (`gpuprep::npy::NpyReader`, as every subcommand reads): an `Ok` or an
//! `Err`, never a panic, an abort or a hang.
#![no_main]

use gpuprep::io::{read_matrix, read_npy_matrix, Format, NonFinite, ReadOptions};
use gpuprep::npy::{parse_header, NpyReader};
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("npy", data);
    let _ = parse_header(&path, data);
    let _ = read_npy_matrix(&path);
    let _ = read_matrix(
        &path,
        &ReadOptions {
            format: Some(Format::Npy),
            non_finite: NonFinite::Reject,
            ..Default::default()
        },
    );
    if let Ok(mut r) = NpyReader::open(&path) {
        let (rows, cols) = (r.rows(), r.cols());
        // Chunks as the streamed subcommands read them, bounded so the
        // fuzzer's own allocations stay small; then ranges past the end.
        if cols > 0 && cols <= 1 << 12 {
            let step = (1usize << 12) / cols;
            let mut start = 0;
            while start < rows.min(1 << 14) {
                let n = step.min(rows - start);
                let _ = r.read_rows(start, Array2::<f32>::zeros((n, cols)).view_mut());
                let _ = r.read_rows(start, Array2::<f64>::zeros((n, cols)).view_mut());
                start += n;
            }
            let _ = r.read_rows(rows, Array2::<f32>::zeros((1, cols)).view_mut());
            let _ = r.read_rows(usize::MAX, Array2::<f32>::zeros((1, cols)).view_mut());
        }
    }
});
