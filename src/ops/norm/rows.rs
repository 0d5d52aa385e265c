//! Launchers of `shaders/norm.wgsl`: the row passes of layer, instance and
//! group norm (each statistics group a contiguous run of one row).

use bytemuck::{Pod, Zeroable};

use super::NormForward;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::GpuMatrix;
use crate::model::norm::{NormKind, NormPlan};
use crate::shaders;

const WG: usize = 256;
/// Elements of a row each lane aims to reduce (four unrolled steps of four).
const ELEMS_PER_LANE: u32 = 16;

/// Mirror of `RowParams` in shaders/norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct RowParams {
    rows: u32,
    len: u32,
    lanes: u32,
    groups: u32,
    spatial: u32,
    per_channel: u32,
    lane_q: u32,
    lane_r: u32,
    eps: f32,
    _pad: [f32; 3],
}

/// Rows of `plan` (N * G) each normalized over its L contiguous elements,
/// with about ELEMS_PER_LANE elements per lane and a power-of-two number of
/// lanes: several short rows share a workgroup, so the barriers of the
/// per-row reduction are paid once for all of them.
fn row_params(plan: &NormPlan, eps: f32) -> RowParams {
    let len = plan.group_len as u32;
    let lanes = len.div_ceil(ELEMS_PER_LANE).next_power_of_two().min(WG as u32);
    let s = plan.shape.s as u32;
    RowParams {
        rows: (plan.shape.n * plan.groups_per_sample) as u32,
        len,
        lanes,
        groups: plan.groups_per_sample as u32,
        spatial: s,
        per_channel: (plan.kind != NormKind::Layer) as u32,
        lane_q: lanes / s,
        lane_r: lanes % s,
        eps,
        _pad: [0.0; 3],
    }
}

/// Workgroups of a row pass: one per block of WG / lanes rows, capped at the
/// device's per-dimension limit (the kernels stride over the rest).
fn row_groups(gpu: &Gpu, p: &RowParams) -> [u32; 3] {
    let slots = WG as u32 / p.lanes;
    let limit = gpu.limits().max_compute_workgroups_per_dimension;
    [p.rows.div_ceil(slots).clamp(1, limit), 1, 1]
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_row_forward(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    plan: &NormPlan,
    x: &GpuMatrix,
    gamma: &GpuMatrix,
    beta: &GpuMatrix,
    eps: f32,
    out: &NormForward,
) -> Result<()> {
    let p = row_params(plan, eps);
    let params = gpu.uniform("norm params", &p);
    gpu.launch(
        encoder,
        &shaders::NORM,
        "row_forward",
        &[],
        &[
            (0, &params),
            (1, x.buffer()),
            (4, out.stats.buffer.buffer()),
            (6, gamma.buffer()),
            (7, beta.buffer()),
            (8, out.y.buffer()),
        ],
        row_groups(gpu, &p),
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_row_backward(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    plan: &NormPlan,
    x: &GpuMatrix,
    dy: &GpuMatrix,
    gamma: &GpuMatrix,
    stats: &GpuMatrix,
    dx: &GpuMatrix,
) -> Result<()> {
    let p = row_params(plan, 0.0);
    let params = gpu.uniform("norm params", &p);
    gpu.launch(
        encoder,
        &shaders::NORM,
        "row_backward",
        &[],
        &[
            (0, &params),
            (1, x.buffer()),
            (2, dy.buffer()),
            (4, stats.buffer()),
            (6, gamma.buffer()),
            (8, dx.buffer()),
        ],
        row_groups(gpu, &p),
    )?;
    Ok(())
}
