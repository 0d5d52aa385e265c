//! gpuprep: the data preprocessing, weight initialization and normalization
//! steps of neural-network training (cs231n's lecture of that name) as WGSL
//! compute kernels on any wgpu adapter (Vulkan, Metal, DX12), each with a CPU
//! twin on ndarray that computes the same function in f64.
//!
//! ```no_run
//! use gpuprep::{Gpu, GpuMatrix, StandardizeOptions};
//! # fn main() -> gpuprep::Result<()> {
//! let gpu = Gpu::new()?;
//! let x = ndarray::Array2::<f32>::from_shape_fn((1000, 64), |(i, j)| (i * j % 7) as f32);
//! let xg = GpuMatrix::upload(&gpu, x.view())?;
//! let stats = gpuprep::ops::column_stats(&gpu, &xg, &Default::default())?; // stays on the GPU
//! let z = gpuprep::ops::standardize(&gpu, &xg, &stats, &StandardizeOptions::default())?;
//! let summary = stats.download(&gpu)?;                            // read back on request
//! println!("{:?}", summary.mean);
//! # let _ = z; Ok(()) }
//! ```
//!
//! A host application that already has a `wgpu::Device` and `wgpu::Queue`
//! wraps them with [`Gpu::from_device_queue`] and records gpuprep's work into
//! its own encoder with the `encode_*_into` functions (each op has that one
//! recording form and one convenience form that submits). gpuprep re-exports the wgpu
//! it is built on as [`wgpu`], so the host can name exactly that version.

#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc)]

mod alloc;
mod avx;
pub mod cpu;
pub mod csvfile;
pub mod error;
pub mod gpu;
pub mod host;
pub mod io;
pub mod matrix;
pub mod model;
pub mod npy;
pub mod npz;
pub mod ops;
pub mod pipeline;
pub mod rng;
pub(crate) mod shaders;
pub mod stream;
pub mod timer;

/// The ndarray gpuprep takes and returns (0.17): a host names this one, so
/// `GpuMatrix::upload(&gpu, x.view())` type-checks whatever ndarray the host
/// depends on itself.
pub use ndarray;
pub use wgpu;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use matrix::GpuMatrix;
pub use model::convention::Convention;
pub use model::init::{FanMode, Scheme};
pub use model::matmul::Activation;
pub use model::moments::{CoMoments, ColumnMoments, NanMoments, WeightedMoments};
pub use model::norm::{NormKind, NormSummary, RunningStatsConfig};
pub use model::pca::{NComponents, PcaModel, PcaOptions, Solver, Whitening};
pub use model::pipeline::{Pipeline, PipelineOptions, PipelineState, Standardizer};
pub use model::standardize::StandardizeOptions;
pub use model::stats::ColumnSummary;
pub use ops::{BatchNorm, ColumnStats, Norm, NormGrads, NormStats, Pca, Stat};
pub use rng::Philox;
pub use timer::{time_recorded, GpuTimer};
