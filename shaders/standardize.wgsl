// Centering and scaling by per-column statistics (the 5 x D output of
// column_stats: rows mean, var, std, min, max).
//   center only: y = x - mean           (the lecture's X - np.mean(X, axis=0))
//   scale only:  y = x / scale
//   both:        y = (x - mean) / scale (the lecture's X / np.std(X, axis=0) after centering)
// scale is the column's std, or 1 for a column that is constant up to
// rounding by scikit-learn's rule (`_is_constant_feature`; twin:
// model::standardize::is_constant):
//   var <= n eps var + (n |mean| eps)^2,  eps = 2^-52 (f64's, as scikit-learn)
// tested as std * sqrt(max(0, 1 - n eps)) <= n eps |mean| (params.c1 and
// params.ne), which holds where var is beyond f32 (std is finite there). A std
// below the smallest normal f32 counts as constant (it may be flushed to 0);
// a NaN std (its bits) never does, so NaN statistics give NaN. A NaN mean
// (its bits) is not constant; an infinite one is (n eps |mean| = inf).
// When x - mean overflows (x and mean near opposite ends of f32's range) it is
// recomputed as (x/2 - mean/2) / scale * 2: the result is finite whenever
// the standardized value is.
// One thread per element (per vec4 of 4 adjacent columns when D % 4 == 0); the dispatch is 2-D when N*D needs more than 65535 workgroups.

struct Params {
    len: u32,       // N * D
    d: u32,
    center: u32,
    scale: u32,
    groups_x: u32,  // workgroups along x
    ne: f32,        // n * eps (n the rows the statistics cover)
    c1: f32,        // sqrt(max(0, 1 - n * eps))
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> xy: array<f32>;
// vec4 views of the same buffers, for D % 4 == 0 (len then counts vec4s).
@group(0) @binding(5) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> xy4: array<vec4<f32>>;

const WG: u32 = 256u;
const MIN_NORMAL_BITS: u32 = 0x00800000u;

// Whether a column with this std and mean is constant up to rounding.
fn constant(s: f32, mean: f32) -> bool {
    let sb = bitcast<u32>(s) & ABS;
    let mb = bitcast<u32>(mean) & ABS;
    if (sb >= INF_BITS || mb > INF_BITS) {
        return false;
    }
    if (sb < MIN_NORMAL_BITS || mb == INF_BITS) {
        return true;
    }
    return s * params.c1 <= params.ne * abs(mean);
}

fn apply(v: f32, c: u32) -> f32 {
    let mean = stats[c];
    var r = v;
    if (params.center != 0u) {
        r = r - mean;
    }
    if (params.scale != 0u) {
        var s = stats[2u * params.d + c];
        if (constant(s, mean)) {
            s = 1.0;
        }
        if (params.center != 0u && (bitcast<u32>(r) & ABS) == INF_BITS) {
            // x - mean past f32's range (x and mean near opposite limits):
            // halved, exactly, before the division.
            r = (v * 0.5 - mean * 0.5) / s * 2.0;
        } else {
            r = r / s;
        }
    }
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn standardize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * params.groups_x + wg.x) * WG + lid.x;
    if (i >= params.len) {
        return;
    }
    y[i] = apply(x[i], i % params.d);
}

@compute @workgroup_size(256, 1, 1)
fn standardize_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * params.groups_x + wg.x) * WG + lid.x;
    if (i >= params.len) {
        return;
    }
    xy[i] = apply(xy[i], i % params.d);
}

fn apply4(v: vec4<f32>, c: u32) -> vec4<f32> {
    return vec4<f32>(apply(v.x, c), apply(v.y, c + 1u), apply(v.z, c + 2u), apply(v.w, c + 3u));
}

@compute @workgroup_size(256, 1, 1)
fn standardize_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * params.groups_x + wg.x) * WG + lid.x;
    if (i >= params.len) {
        return;
    }
    y4[i] = apply4(x4[i], (i * 4u) % params.d);
}

@compute @workgroup_size(256, 1, 1)
fn standardize_inplace_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * params.groups_x + wg.x) * WG + lid.x;
    if (i >= params.len) {
        return;
    }
    xy4[i] = apply4(xy4[i], (i * 4u) % params.d);
}
