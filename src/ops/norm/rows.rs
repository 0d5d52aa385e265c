//! Launchers of `shaders/norm_rows.wgsl` and `shaders/norm_rows_subgroup.wgsl`: the
//! row passes of layer, instance, group and RMS norm (each statistics group a
//! contiguous run of one row).

use super::NormForward;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::matrix::{bind_input, pieces, GpuMatrix, OutputPiece, Span};
use crate::model::norm::NormPlan;
use crate::shaders::norm_rows as SH;
use crate::shaders::norm_rows_subgroup as SG;
use crate::shaders::{Shader, Slot};

const OP: &str = "norm";
const WG: usize = 256;
/// Elements of a row each lane aims to reduce (four unrolled steps of four).
const ELEMS_PER_LANE: u32 = 16;

pub(crate) use SH::RowParams;

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
        per_channel: !plan.kind.elementwise() as u32,
        lane_q: lanes / s,
        lane_r: lanes % s,
        eps,
        row_base: 0,
        center: plan.kind.centers() as u32,
        ..Default::default()
    }
}

/// Which kernel a row pass runs (`forward` or backward): one subgroup per
/// row (no workgroup barriers) where the device has subgroups and a row
/// wants no more lanes than its smallest subgroup has, else WG / lanes rows
/// per workgroup through workgroup memory. Returns the shader, the entry
/// point, and the rows one workgroup covers. A driver that cannot build the
/// subgroup kernel gets the workgroup one, and subgroups are switched off
/// for the context (so the build is not retried on every call).
fn row_kernel(gpu: &Gpu, p: &RowParams, forward: bool) -> (&'static Shader, &'static str, u32) {
    if let Some((min, _)) = gpu.subgroup_sizes() {
        let entry = if forward {
            SG::ROW_FORWARD
        } else {
            SG::ROW_BACKWARD
        };
        if p.lanes <= min {
            if gpu.pipeline(&SG::SHADER, entry, &[]).is_ok() {
                // at most this many subgroups per workgroup
                return (&SG::SHADER, entry, (WG as u32 / min).max(1));
            }
            gpu.set_subgroups(false);
        }
    }
    let entry = if forward {
        SH::ROW_FORWARD
    } else {
        SH::ROW_BACKWARD
    };
    (&SH::SHADER, entry, WG as u32 / p.lanes)
}

/// Workgroups of a row pass covering `per_group` rows each, capped at the
/// device's per-dimension limit (the kernels stride over the rest).
fn row_groups(gpu: &Gpu, p: &RowParams, per_group: u32) -> [u32; 3] {
    let limit = gpu.limits().max_compute_workgroups_per_dimension;
    [p.rows.div_ceil(per_group).clamp(1, limit), 1, 1]
}

/// Refuses a row pass whose invocations would run past half the adapter's
/// loop limit ([`Gpu::loop_limit`]: lavapipe ends every loop of an
/// invocation after 65,535 iterations in all, silently). Each lane walks
/// `len / lanes` elements of its row: in the forward pass twice in fours
/// (Welford, and again where the state overflowed) and once to write; in the
/// backward pass twice; plus the lanes' tree, for every row block the grid
/// stride gives a workgroup. On lavapipe that refuses rows of more than
/// about 4.2 million elements backward (5.6 million forward), which summed
/// only part of the row before (an instance norm of 1 x 1 x 8,500,000 left
/// 225,600 gradients unwritten).
fn check_loop_limit(gpu: &Gpu, p: &RowParams, groups: [u32; 3], per_group: u32, forward: bool) -> Result<()> {
    let lanes = p.lanes.max(1) as u64;
    let per_lane = (p.len as u64).div_ceil(lanes);
    let tree = lanes.ilog2() as u64 + 1;
    let per_row = if forward {
        2 * (per_lane / 4 + 5) + tree + per_lane + 2
    } else {
        2 * (per_lane + 1) + tree + 1
    };
    let blocks = (p.rows as u64)
        .div_ceil(per_group.max(1) as u64)
        .div_ceil(groups[0].max(1) as u64);
    gpu.check_loop_iterations(OP, blocks.max(1) * per_row, |l| l / 2)
}

/// The pieces of a row pass over `mats` (N x F), each with its params: the
/// norm rows (N * G of them) of its samples, from `row_base` on.
fn split(gpu: &Gpu, mats: &[&GpuMatrix], base: RowParams) -> Vec<(std::ops::Range<usize>, RowParams)> {
    let g = base.groups.max(1);
    pieces(gpu, mats)
        .into_iter()
        .map(|r| {
            let p = RowParams {
                rows: r.len() as u32 * g,
                row_base: r.start as u32 * g,
                ..base
            };
            (r, p)
        })
        .collect()
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
    let whole = [
        (SH::STATS, out.stats.buffer.whole_span(gpu, OP)?),
        (SH::GAMMA, gamma.whole_span(gpu, OP)?),
        (SH::BETA, beta.whole_span(gpu, OP)?),
    ];
    encode_row_pass(gpu, encoder, row_params(plan, eps), x, None, &whole, &out.y)
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
    let whole = [
        (SH::STATS, stats.whole_span(gpu, OP)?),
        (SH::GAMMA, gamma.whole_span(gpu, OP)?),
    ];
    encode_row_pass(gpu, encoder, row_params(plan, 0.0), x, Some(dy), &whole, dx)
}

/// One row pass in binding-sized pieces of rows: the forward (no `dy`,
/// writing `y` into `out`) or the backward (writing `dx`); `whole` are the
/// bindings every piece shares (statistics, gamma, beta).
fn encode_row_pass(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    base: RowParams,
    x: &GpuMatrix,
    dy: Option<&GpuMatrix>,
    whole: &[(Slot, Span)],
    out: &GpuMatrix,
) -> Result<()> {
    let forward = dy.is_none();
    let split_on: Vec<&GpuMatrix> = [Some(x), dy, Some(out)].into_iter().flatten().collect();
    for (rows, p) in split(gpu, &split_on, base) {
        let params = gpu.uniform("norm params", &p)?;
        let xs = bind_input(gpu, encoder, OP, "norm x", x, rows.clone())?;
        let dys = match dy {
            Some(dy) => Some(bind_input(gpu, encoder, OP, "norm dy", dy, rows.clone())?),
            None => None,
        };
        let piece = OutputPiece::new(gpu, encoder, OP, "norm out", out, rows, false)?;
        let (shader, entry, per_group) = row_kernel(gpu, &p, forward);
        let groups = row_groups(gpu, &p, per_group);
        check_loop_limit(gpu, &p, groups, per_group, forward)?;
        let mut binds = vec![(SH::PARAMS, &params), (SH::X, &xs), (SH::OUT, &piece.span)];
        binds.extend(dys.as_ref().map(|d| (SH::DY, d)));
        binds.extend(whole.iter().map(|(slot, span)| (*slot, span)));
        gpu.launch(encoder, shader, entry, &[], &binds, groups)?;
        piece.finish(gpu, encoder, OP)?;
    }
    Ok(())
}
