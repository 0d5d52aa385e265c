// Per-column statistics of a row-major N x D f32 matrix in one read of X.
//
// Pass 1 (`column_stats_partial`): workgroup (64, 4) covers 64 columns of one
// chunk of rows; each thread runs Welford over every 4th row of the chunk.
// Values are shifted by the column's first element K = x[0, c] (the `shift`
// binding: row 0 of the whole matrix) before accumulation, so data with a
// large offset (1e4 + unit noise) keeps full precision in f32; all partials
// share the same shift. The 4 row lanes are merged in workgroup memory (Chan
// et al.), then one partial per (column, chunk) is written. A matrix split
// into pieces (row ranges bound one at a time) runs pass 1 once per piece,
// each writing its chunks from `chunk_base` on.
// Pass 2 (`column_stats_finalize`): one workgroup of 256 threads per column
// merges that column's partials (strided loop, then a tree in workgroup
// memory) and writes mean, var, std, min, max.

struct Params {
    n: u32,              // rows of this piece
    d: u32,              // columns
    rows_per_chunk: u32,
    n_chunks: u32,       // chunks of all pieces (the partials' stride per column)
    ddof: f32,
    groups_x: u32,       // workgroups along x in the finalize dispatch
    chunk_base: u32,     // this piece's first chunk
    _pad0: u32,
}

// Welford state of a set of shifted values.
struct Partial {
    count: f32,
    mean: f32,
    m2: f32,
    mn: f32,
    mx: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<Partial>;
// out is 5 x D: rows mean, var, std, min, max.
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// The same X seen as vec4 (used by column_stats_partial_vec4 when D % 4 == 0).
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;
// Row 0 of the whole matrix: each column's shift.
@group(0) @binding(5) var<storage, read> shift: array<f32>;

const LANES: u32 = 4u;
const COLS: u32 = 64u;
const FIN: u32 = 256u;

fn empty_partial() -> Partial {
    return Partial(0.0, 0.0, 0.0, 3.0e38, -3.0e38);
}

// Chan, Golub and LeVeque's pairwise merge of two Welford states.
fn merge(a: Partial, b: Partial) -> Partial {
    if (b.count == 0.0) {
        return a;
    }
    if (a.count == 0.0) {
        return b;
    }
    let n = a.count + b.count;
    let delta = b.mean - a.mean;
    let fb = b.count / n;
    var r: Partial;
    r.count = n;
    r.mean = a.mean + delta * fb;
    r.m2 = a.m2 + b.m2 + delta * delta * a.count * fb;
    r.mn = min(a.mn, b.mn);
    r.mx = max(a.mx, b.mx);
    return r;
}

var<workgroup> lane_state: array<Partial, 256>;

@compute @workgroup_size(64, 4, 1)
fn column_stats_partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c = wg.x * COLS + lid.x;
    let chunk = wg.y;
    let d = params.d;
    var s = empty_partial();
    if (c < d) {
        let k = shift[c];
        let start = chunk * params.rows_per_chunk;
        let end = min(params.n, start + params.rows_per_chunk);
        var r = start + lid.y;
        loop {
            if (r >= end) {
                break;
            }
            let v = x[r * d + c];
            let y = v - k;
            s.count = s.count + 1.0;
            let delta = y - s.mean;
            s.mean = s.mean + delta / s.count;
            s.m2 = s.m2 + delta * (y - s.mean);
            s.mn = min(s.mn, v);
            s.mx = max(s.mx, v);
            r = r + LANES;
        }
    }
    lane_state[lid.y * COLS + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && c < d) {
        var acc = lane_state[lid.x];
        for (var l = 1u; l < LANES; l = l + 1u) {
            acc = merge(acc, lane_state[l * COLS + lid.x]);
        }
        partials[c * params.n_chunks + params.chunk_base + chunk] = acc;
    }
}

// Welford over 4 columns at once: one reciprocal per row for all 4.
struct Partial4 {
    count: f32,
    mean: vec4<f32>,
    m2: vec4<f32>,
    mn: vec4<f32>,
    mx: vec4<f32>,
}

fn update4(s: ptr<function, Partial4>, v: vec4<f32>, k: vec4<f32>) {
    let y = v - k;
    (*s).count = (*s).count + 1.0;
    let delta = y - (*s).mean;
    (*s).mean = (*s).mean + delta * (1.0 / (*s).count);
    (*s).m2 = (*s).m2 + delta * (y - (*s).mean);
    (*s).mn = min((*s).mn, v);
    (*s).mx = max((*s).mx, v);
}

fn lane(s: Partial4, k: u32) -> Partial {
    return Partial(s.count, s.mean[k], s.m2[k], s.mn[k], s.mx[k]);
}

// Vector form of column_stats_partial for D % 4 == 0: workgroup (64, 4)
// covers 256 columns (4 per thread) of one chunk of rows; rows are loaded 4
// at a time before the updates so several loads are in flight per thread.
@compute @workgroup_size(64, 4, 1)
fn column_stats_partial_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let d4 = params.d / 4u;
    let c4 = wg.x * COLS + lid.x;
    let chunk = wg.y;
    let big = vec4<f32>(3.0e38);
    var s = Partial4(0.0, vec4<f32>(0.0), vec4<f32>(0.0), big, -big);
    if (c4 < d4) {
        let k = vec4<f32>(shift[4u * c4], shift[4u * c4 + 1u], shift[4u * c4 + 2u], shift[4u * c4 + 3u]);
        let start = chunk * params.rows_per_chunk;
        let end = min(params.n, start + params.rows_per_chunk);
        var r = start + lid.y;
        // 4 rows per step, LANES apart.
        loop {
            if (r + 3u * LANES >= end) {
                break;
            }
            let a = x4[r * d4 + c4];
            let b = x4[(r + LANES) * d4 + c4];
            let c = x4[(r + 2u * LANES) * d4 + c4];
            let e = x4[(r + 3u * LANES) * d4 + c4];
            update4(&s, a, k);
            update4(&s, b, k);
            update4(&s, c, k);
            update4(&s, e, k);
            r = r + 4u * LANES;
        }
        loop {
            if (r >= end) {
                break;
            }
            update4(&s, x4[r * d4 + c4], k);
            r = r + LANES;
        }
    }
    // Merge the 4 row lanes, one column of the 4 at a time.
    for (var q = 0u; q < 4u; q = q + 1u) {
        lane_state[lid.y * COLS + lid.x] = lane(s, q);
        workgroupBarrier();
        if (lid.y == 0u && c4 < d4) {
            var acc = lane_state[lid.x];
            for (var l = 1u; l < LANES; l = l + 1u) {
                acc = merge(acc, lane_state[l * COLS + lid.x]);
            }
            partials[(c4 * 4u + q) * params.n_chunks + params.chunk_base + chunk] = acc;
        }
        workgroupBarrier();
    }
}

var<workgroup> fin_state: array<Partial, 256>;

@compute @workgroup_size(256, 1, 1)
fn column_stats_finalize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c = wg.y * params.groups_x + wg.x;
    let d = params.d;
    var s = empty_partial();
    if (c < d) {
        for (var k = lid.x; k < params.n_chunks; k = k + FIN) {
            s = merge(s, partials[c * params.n_chunks + k]);
        }
    }
    fin_state[lid.x] = s;
    workgroupBarrier();
    for (var stride = FIN / 2u; stride > 0u; stride = stride / 2u) {
        if (lid.x < stride) {
            fin_state[lid.x] = merge(fin_state[lid.x], fin_state[lid.x + stride]);
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && c < d) {
        let t = fin_state[0];
        let var_ = t.m2 / (t.count - params.ddof);
        out[c] = shift[c] + t.mean;
        out[d + c] = var_;
        out[2u * d + c] = sqrt(var_);
        out[3u * d + c] = t.mn;
        out[4u * d + c] = t.mx;
    }
}
