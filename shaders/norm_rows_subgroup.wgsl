// Layer, instance, group and RMS norm's row passes on subgroups: one subgroup per
// row at a time, so a row needs no workgroup barrier and no workgroup memory.
// CPU twin: src/cpu/norm.rs. Launcher: src/ops/norm/rows.rs, which takes
// these where the device has wgpu's SUBGROUP feature and a row wants no more
// lanes than a subgroup has (the workgroup passes of shaders/norm_rows.wgsl
// elsewhere). src/shaders.rs builds this shader from the preludes,
// shaders/norm_rows.wgsl (its bindings, RowParams, Lanes, the affine walk and
// the per-row loops row_state, row_apply, row_grad_sums and row_dx) and then
// this file.
//
// Correct for any subgroup size and any assignment of invocations to
// subgroups, a partial subgroup included: an invocation's lane is its rank
// among its subgroup's active invocations (subgroupExclusiveAdd(1)) and a
// row's lane count their number (subgroupAdd(1)), so the lanes of a row are
// exactly the invocations that take part in its reductions.
//
// The row's Welford state is the lanes' states combined by the exact parallel
// formula, three subgroup sums:
//     n = sum n_l,  mean = sum n_l mean_l / n,
//     M2 = sum (M2_l + n_l (mean_l - mean)^2)   (each term >= 0),
// in units of 2^96 for every lane where any lane's state needed them (see
// shaders/common/scaled.wgsl) or where the sums themselves overflow.

fn subgroup_lanes() -> Lanes {
    let tl = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    let sp = max(p.spatial, 1u);
    return Lanes(tl, lane, tl / sp, tl % sp);
}

// The lanes' states (count, mean, M2, all in the same units) combined.
fn subgroup_combine(n: u32, mean: f32, m2: f32) -> Wf {
    let total = subgroupAdd(n);
    let fl = f32(n);
    let mu = subgroupAdd(fl * mean) / f32(max(total, 1u));
    let d = mean - mu;
    let q = subgroupAdd(m2 + fl * d * d);
    return Wf(total, mu, q);
}

// The row's state from each lane's (either units, as merge_wf takes them).
fn subgroup_merge_wf(st: Wf) -> Wf {
    let n = st.n & COUNT_MASK;
    let scaled = subgroupOr(st.n & SCALED) != 0u;
    var mean = st.mean;
    var m2 = st.m2;
    if (scaled && (st.n & SCALED) == 0u) {
        mean = mean * DOWN;
        m2 = down2(m2);
    }
    var r = subgroup_combine(n, mean, m2);
    if (scaled) {
        r.n = r.n | SCALED;
    } else if (!(is_finite(r.mean) && is_finite(r.m2))) {
        r = subgroup_combine(n, mean * DOWN, down2(m2));
        r.n = r.n | SCALED;
    }
    return r;
}

// Where a subgroup is in the grid: one row per subgroup at a time, the grid's
// subgroups striding over the rows.
struct SubgroupIds {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
}

// The subgroup's first row.
fn first_row(id: SubgroupIds) -> u32 {
    return (id.wid.x + id.wid.y * id.nwg.x) * id.nsg + id.sg;
}

// The subgroups in the grid: the step from a subgroup's row to its next.
fn row_stride(id: SubgroupIds) -> u32 {
    return id.nwg.x * id.nwg.y * id.nsg;
}

@compute @workgroup_size(WG)
fn row_forward_subgroup(id: SubgroupIds) {
    let ln = subgroup_lanes();
    let len = p.len;
    for (var r = first_row(id); r < p.rows; r = r + row_stride(id)) {
        let shift = x[r * len];
        let st = row_state(r * len, ln, len, shift);
        let row = finish_row(subgroup_merge_wf(st), shift, p.eps);
        if (ln.lane == 0u) {
            stats[p.row_base + r] = row;
        }
        row_apply(r, ln, len, row);
    }
}

@compute @workgroup_size(WG)
fn row_backward_subgroup(id: SubgroupIds) {
    let ln = subgroup_lanes();
    let len = p.len;
    let inv_l = 1.0 / f32(len);
    for (var r = first_row(id); r < p.rows; r = r + row_stride(id)) {
        let st = decode(stats[p.row_base + r]);
        let sums = row_grad_sums(r, ln, len, st);
        let mg = subgroupAdd(sums.x) * inv_l * f32(p.center);
        let mgx = subgroupAdd(sums.y) * inv_l;
        row_dx(r, ln, len, st, mg, mgx);
    }
}
