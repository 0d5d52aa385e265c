// Per-column statistics of a row-major N x D f32 matrix in one read of X.
// CPU twin: src/cpu/column_stats.rs. Launcher: src/ops/column_stats.rs.
//
// Pass 1 (`column_stats_partial`): workgroup (64, 4) covers 64 columns of one
// chunk of rows; each thread runs Welford over every 4th row of the chunk.
// Values are shifted by the column's first element K = x[0, c] (the `shift`
// binding: row 0 of the whole matrix; 0 where that is not finite) before
// accumulation, so data with a large offset (1e4 + unit noise) keeps full
// precision in f32; all partials share the same shift. The 4 row lanes are
// merged in workgroup memory (Chan et al.), then one partial per (column,
// chunk) is written. A matrix split into pieces (row ranges bound one at a
// time) runs pass 1 once per piece, each writing its chunks from `chunk_base` on.
// Pass 2 (`column_stats_finalize`): one workgroup of 256 threads per column
// merges that column's partials (strided loop, then a tree in workgroup
// memory) and writes mean, var, std, min, max (and, ignoring NaN, the count).
//
// Range. Each state accumulates (x - K) * 2^-e, with a power-of-two scale per
// thread and column: exact (unless the scaled value falls below f32's normal
// range, where it is negligible beside the values that raised the scale). The
// state keeps every |x| below LIMIT = 2^(e + ROOM); a value past it raises e to
// exponent(|x|) - HEAD and rescales mean (by 2^-de) and M2 (by 2^-2de) exactly.
// So the scaled values stay below 2^41, each M2 term below 2^83 and M2 below
// 2^115 for 2^32 rows: f32 never overflows, and the mean and std of finite f32
// data of any magnitude (a spread of 1e20, values near +-3.4e38) come out
// finite; a variance past f32's range is written as inf (its f32 rounding).
// The check costs one integer AND and MAX per value (on the bits, so it sees a
// NaN too) and one compare per 4 rows; the scale one multiply per value.
//
// Non-finite values never enter the arithmetic: a value whose bits are NaN or
// inf takes the slow path, which counts NaNs and notes each infinity, and the
// finalize writes numpy's results for them by their bits (NaN in a column:
// all five NaN, unless ignore_nan; +inf: mean and max +inf, var and std NaN;
// both infinities: mean NaN). Comparisons never see a NaN (drivers may assume
// they do not), and no NaN or infinity is ever computed.

struct Params {
    n: u32,              // rows of this piece (pass 1); of the whole matrix (pass 2)
    d: u32,              // columns
    rows_per_chunk: u32,
    n_chunks: u32,       // chunks of all pieces (the partials' stride per column)
    ddof: u32,
    groups_x: u32,       // workgroups along x in the finalize dispatch
    chunk_base: u32,     // this piece's first chunk
    ignore_nan: u32,     // 1: leave NaNs out (numpy's nanmean, nanvar, nanmin, nanmax)
}

// Welford state of the finite values of a column, scaled by 2^-e.
struct Partial {
    n: f32,      // finite values (a weight: exact below 2^24 per thread)
    mean: f32,   // mean of (x - K) * 2^-e
    m2: f32,     // sum of squared deviations, times 2^-2e
    mn: f32,     // min and max of the finite values, unscaled
    mx: f32,
    e: i32,      // the scale's exponent
    nan: u32,    // NaNs seen
    inf: u32,    // bit 0: +inf seen, bit 1: -inf seen
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<Partial>;
// out is 5 x D (rows mean, var, std, min, max), written as bits so that NaN and
// inf results are exact bit patterns, never computed.
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
// The same X seen as vec4 (used by column_stats_partial_vec4 when D % 4 == 0).
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;
// Row 0 of the whole matrix: each column's shift.
@group(0) @binding(5) var<storage, read> shift: array<f32>;
// Per-column counts of the non-NaN values (written when ignore_nan).
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;

const LANES: u32 = 4u;
const COLS: u32 = 64u;
const FIN: u32 = 256u;

const F32_MAX: f32 = 3.4028234663852886e38;
// After a rescale the largest magnitude sits near 2^(e + HEAD) ...
const HEAD: i32 = 20;
// ... and values up to 2^(e + ROOM) are taken without one.
const ROOM: i32 = 40;
const E_MIN: i32 = -126;
const E_MAX: i32 = 107;

// The scale exponent for a largest magnitude whose bits (sign cleared) are b.
fn exp_for(b: u32) -> i32 {
    return clamp(i32(b >> 23u) - 127 - HEAD, E_MIN, E_MAX);
}

fn exp_for4(b: vec4<u32>) -> vec4<i32> {
    return clamp(vec4<i32>(b >> vec4<u32>(23u)) - 127 - HEAD, vec4<i32>(E_MIN), vec4<i32>(E_MAX));
}

// The bits (sign cleared) from which a value needs a larger scale than 2^-e;
// INF_BITS once every finite value fits, so NaN and inf always reach the slow path.
fn limit_for(e: i32) -> u32 {
    let p = e + ROOM;
    if (p > 127) {
        return INF_BITS;
    }
    return u32(p + 127) << 23u;
}

fn limit_for4(e: vec4<i32>) -> vec4<u32> {
    let p = e + ROOM;
    return select(vec4<u32>(p + 127) << vec4<u32>(23u), vec4<u32>(INF_BITS), p > vec4<i32>(127));
}

// x * 2^p for p <= 0; 0 below f32's range, where the rescaled state is
// negligible beside the value that raised the scale.
fn shrink(x: f32, p: i32) -> f32 {
    if (p < -126) {
        return 0.0;
    }
    return x * pow2(p);
}

fn shrink4(x: vec4<f32>, p: vec4<i32>) -> vec4<f32> {
    return select(x * pow2_4(max(p, vec4<i32>(-126))), vec4<f32>(0.0), p < vec4<i32>(-126));
}

fn abs_bits4(v: vec4<f32>) -> vec4<u32> {
    return bitcast<vec4<u32>>(v) & vec4<u32>(ABS);
}

// The column's shift: row 0's value, or 0 where that is not finite.
fn shift_of(c: u32) -> f32 {
    let k = shift[c];
    return select(k, 0.0, (bitcast<u32>(k) & ABS) >= INF_BITS);
}

fn empty_partial(e: i32) -> Partial {
    return Partial(0.0, 0.0, 0.0, F32_MAX, -F32_MAX, e, 0u, 0u);
}

// Raises the state's scale exponent to at least e_new, rescaling exactly.
fn raise(p: ptr<function, Partial>, e_new: i32) {
    let e = max(e_new, (*p).e);
    let de = (*p).e - e;
    (*p).mean = shrink((*p).mean, de);
    (*p).m2 = shrink((*p).m2, 2 * de);
    (*p).e = e;
}

// One value of any kind into a state (the slow path): NaN counted, an
// infinity noted, a finite value accumulated after any rescale it needs.
fn push(p: ptr<function, Partial>, v: f32, k: f32) {
    let b = bitcast<u32>(v) & ABS;
    if (b >= INF_BITS) {
        if (b > INF_BITS) {
            (*p).nan = (*p).nan + 1u;
        } else if ((bitcast<u32>(v) >> 31u) == 0u) {
            (*p).inf = (*p).inf | 1u;
        } else {
            (*p).inf = (*p).inf | 2u;
        }
        return;
    }
    if (b >= limit_for((*p).e)) {
        raise(p, exp_for(b));
    }
    let sc = pow2(-(*p).e);
    let y = v * sc - k * sc;
    (*p).n = (*p).n + 1.0;
    let delta = y - (*p).mean;
    (*p).mean = (*p).mean + delta / (*p).n;
    (*p).m2 = (*p).m2 + delta * (y - (*p).mean);
    (*p).mn = min((*p).mn, v);
    (*p).mx = max((*p).mx, v);
}

// Chan, Golub and LeVeque's pairwise merge of two states (chan_mix), at the
// larger scale. Branch-free but for a rescale.
fn merge(a: Partial, b: Partial) -> Partial {
    var r: Partial;
    r.mn = min(a.mn, b.mn);
    r.mx = max(a.mx, b.mx);
    r.nan = a.nan + b.nan;
    r.inf = a.inf | b.inf;
    r.n = a.n + b.n;
    // Usually both have the scale their column started with (an empty side
    // takes the other's).
    r.e = select(a.e, b.e, a.n == 0.0);
    var ma = a.mean;
    var qa = a.m2;
    var mb = b.mean;
    var qb = b.m2;
    if (a.e != b.e && a.n != 0.0 && b.n != 0.0) {
        r.e = max(a.e, b.e);
        ma = shrink(a.mean, a.e - r.e);
        qa = shrink(a.m2, 2 * (a.e - r.e));
        mb = shrink(b.mean, b.e - r.e);
        qb = shrink(b.m2, 2 * (b.e - r.e));
    }
    let mm = chan_mix(a.n, ma, qa, b.n / max(r.n, 1.0), mb, qb);
    r.mean = mm.x;
    r.m2 = mm.y;
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
    var s = empty_partial(0);
    if (c < d) {
        let k = shift_of(c);
        s.e = exp_for(bitcast<u32>(k) & ABS);
        var lim = limit_for(s.e);
        var sc = pow2(-s.e);
        var ksc = k * sc;
        let start = chunk * params.rows_per_chunk;
        let end = min(params.n, start + params.rows_per_chunk);
        var r = start + lid.y;
        loop {
            if (r >= end) {
                break;
            }
            let v = x[r * d + c];
            if ((bitcast<u32>(v) & ABS) >= lim) {
                push(&s, v, k);
                lim = limit_for(s.e);
                sc = pow2(-s.e);
                ksc = k * sc;
            } else {
                let y = v * sc - ksc;
                s.n = s.n + 1.0;
                let delta = y - s.mean;
                s.mean = s.mean + delta / s.n;
                s.m2 = s.m2 + delta * (y - s.mean);
                s.mn = min(s.mn, v);
                s.mx = max(s.mx, v);
            }
            r = r + LANES;
        }
    }
    merge_lanes(s, c, c < d, lid, chunk);
}

// Welford over 4 columns at once, all values finite and within the lanes'
// limits: one reciprocal per row for all 4. Only what the loop needs is kept
// (registers are what this loop runs out of first): the scale's exponent is
// read back from its bits, the shift from its binding, the limit is a
// constant in scaled units.
struct Acc4 {
    count: f32,
    mean: vec4<f32>,
    m2: vec4<f32>,
    mn: vec4<f32>,
    mx: vec4<f32>,
    sc: vec4<f32>,   // 2^-e
    nksc: vec4<f32>, // -K * 2^-e
}

// The Welford step (min and max are taken per batch by the caller).
fn update4(s: ptr<function, Acc4>, v: vec4<f32>) {
    let y = fma(v, (*s).sc, (*s).nksc);
    (*s).count = (*s).count + 1.0;
    let delta = y - (*s).mean;
    (*s).mean = (*s).mean + delta * (1.0 / (*s).count);
    (*s).m2 = (*s).m2 + delta * (y - (*s).mean);
}

// 2^ROOM: the limit |x| * 2^-e < 2^ROOM in scaled units.
const ROOM_SCALED: f32 = 1099511627776.0;

// Whether the batch with extremes lo and hi needs the careful path: a value at
// or past a lane's limit (finite compares, exact: the scale is a power of
// two; an infinity passes any limit).
fn past_limit4(s: ptr<function, Acc4>, lo: vec4<f32>, hi: vec4<f32>) -> bool {
    return any(max(hi, -lo) * (*s).sc >= vec4<f32>(ROOM_SCALED));
}

// The lanes' scale exponents, from the scales' bits.
fn exps4(s: ptr<function, Acc4>) -> vec4<i32> {
    return vec4<i32>(127) - vec4<i32>(bitcast<vec4<u32>>((*s).sc) >> vec4<u32>(23u));
}

// The four shifts of the thread's columns.
fn shifts4(c4: u32) -> vec4<f32> {
    return vec4<f32>(shift_of(4u * c4), shift_of(4u * c4 + 1u), shift_of(4u * c4 + 2u), shift_of(4u * c4 + 3u));
}

// Sets the lanes' scales to 2^-e.
fn set_scale4(s: ptr<function, Acc4>, e: vec4<i32>, k: vec4<f32>) {
    (*s).sc = pow2_4(-e);
    (*s).nksc = -(k * (*s).sc);
}

// Rescales the lanes whose largest new magnitude (bits m, all finite) passes
// their limit.
fn raise4(s: ptr<function, Acc4>, m: vec4<u32>, c4: u32) {
    let e0 = exps4(s);
    let e = select(e0, max(e0, exp_for4(m)), m >= limit_for4(e0));
    let de = e0 - e;
    // A state a NaN slipped into stays NaN (see column_stats_partial_vec4).
    let keep = max(abs_bits4((*s).mean), abs_bits4((*s).m2)) >= vec4<u32>(INF_BITS);
    (*s).mean = select(shrink4((*s).mean, de), (*s).mean, keep);
    (*s).m2 = select(shrink4((*s).m2, 2 * de), (*s).m2, keep);
    set_scale4(s, e, shifts4(c4));
}

fn lane(s: Acc4, e: vec4<i32>, q: u32) -> Partial {
    return Partial(s.count, s.mean[q], s.m2[q], s.mn[q], s.mx[q], e[q], 0u, 0u);
}

// Vector form of column_stats_partial for D % 4 == 0: workgroup (64, 4)
// covers 256 columns (4 per thread) of one chunk of rows; rows are loaded 4
// at a time before the updates so several loads are in flight per thread.
// From the first row holding a NaN or an infinity on, the thread continues
// one lane at a time through `push` (the slow path).
@compute @workgroup_size(64, 4, 1)
fn column_stats_partial_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let d4 = params.d / 4u;
    let c4 = wg.x * COLS + lid.x;
    let chunk = wg.y;
    let big = vec4<f32>(F32_MAX);
    var s = Acc4(0.0, vec4<f32>(0.0), vec4<f32>(0.0), big, -big, vec4<f32>(1.0), vec4<f32>(0.0));
    let start = chunk * params.rows_per_chunk;
    let end = min(params.n, start + params.rows_per_chunk);
    // The first row of the slow path (end: none).
    var slow = end;
    if (c4 < d4) {
        let k = shifts4(c4);
        set_scale4(&s, exp_for4(abs_bits4(k)), k);
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
            let lo = min(min(a, b), min(c, e));
            let hi = max(max(a, b), max(c, e));
            if (past_limit4(&s, lo, hi)) {
                // The exact magnitudes, by their bits.
                let m = max(max(abs_bits4(a), abs_bits4(b)), max(abs_bits4(c), abs_bits4(e)));
                if (any(m >= vec4<u32>(INF_BITS))) {
                    slow = r;
                    break;
                }
                raise4(&s, m, c4);
            }
            update4(&s, a);
            update4(&s, b);
            update4(&s, c);
            update4(&s, e);
            s.mn = min(s.mn, lo);
            s.mx = max(s.mx, hi);
            r = r + 4u * LANES;
        }
        loop {
            if (r >= end || slow < end) {
                break;
            }
            let v = x4[r * d4 + c4];
            if (past_limit4(&s, v, v)) {
                let m = abs_bits4(v);
                if (any(m >= vec4<u32>(INF_BITS))) {
                    slow = r;
                    break;
                }
                raise4(&s, m, c4);
            }
            update4(&s, v);
            s.mn = min(s.mn, v);
            s.mx = max(s.mx, v);
            r = r + LANES;
        }
        // min and max may pass over a NaN (drivers may assume there is none),
        // so a NaN can reach the Welford step; it stays in the state (its
        // bits are checked here) and the thread then starts over, value by value.
        if (any(abs_bits4(s.mean) >= vec4<u32>(INF_BITS)) || any(abs_bits4(s.m2) >= vec4<u32>(INF_BITS))) {
            s.count = 0.0;
            s.mean = vec4<f32>(0.0);
            s.m2 = vec4<f32>(0.0);
            s.mn = big;
            s.mx = -big;
            set_scale4(&s, exp_for4(abs_bits4(k)), k);
            slow = start + lid.y;
        }
    }
    // Each lane's state; from the first row with a NaN or an infinity on,
    // one value at a time (the slow path).
    let e = exps4(&s);
    var k = vec4<f32>(0.0);
    if (c4 < d4) {
        k = shifts4(c4);
    }
    var p0 = lane(s, e, 0u);
    var p1 = lane(s, e, 1u);
    var p2 = lane(s, e, 2u);
    var p3 = lane(s, e, 3u);
    for (var r = slow; r < end; r = r + LANES) {
        let v = x4[r * d4 + c4];
        push(&p0, v.x, k.x);
        push(&p1, v.y, k.y);
        push(&p2, v.z, k.z);
        push(&p3, v.w, k.w);
    }
    // Merge the 4 row lanes, one column of the 4 at a time (lane_state
    // reused: a barrier between columns).
    let live = c4 < d4;
    merge_lanes(p0, c4 * 4u, live, lid, chunk);
    workgroupBarrier();
    merge_lanes(p1, c4 * 4u + 1u, live, lid, chunk);
    workgroupBarrier();
    merge_lanes(p2, c4 * 4u + 2u, live, lid, chunk);
    workgroupBarrier();
    merge_lanes(p3, c4 * 4u + 3u, live, lid, chunk);
}

// The row lanes' states of column c (live: a column of the data) merged into
// its chunk's partial, by the first row lane. Both partial passes end here.
fn merge_lanes(p: Partial, c: u32, live: bool, lid: vec3<u32>, chunk: u32) {
    lane_state[lid.y * COLS + lid.x] = p;
    workgroupBarrier();
    if (lid.y == 0u && live) {
        var acc = lane_state[lid.x];
        for (var l = 1u; l < LANES; l = l + 1u) {
            acc = merge(acc, lane_state[l * COLS + lid.x]);
        }
        partials[c * params.n_chunks + params.chunk_base + chunk] = acc;
    }
}

var<workgroup> fin_state: array<Partial, 256>;

// A column's min (or max): the infinity on its side (`toward`) where the data
// holds it, else the extreme of the finite values, else (the column holds only
// the other infinity) `away`. Bits, as the output is written.
fn extreme_bits(hit: bool, finite: bool, v: f32, toward: u32, away: u32) -> u32 {
    if (hit) {
        return toward;
    }
    if (finite) {
        return bitcast<u32>(v);
    }
    return away;
}

@compute @workgroup_size(256, 1, 1)
fn column_stats_finalize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c = wg.y * params.groups_x + wg.x;
    let d = params.d;
    var s = empty_partial(E_MIN);
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
        let ignore = params.ignore_nan != 0u;
        var count = params.n;
        if (ignore) {
            count = params.n - t.nan;
            counts[c] = count;
        }
        var o_mean = NAN_BITS;
        var o_var = NAN_BITS;
        var o_std = NAN_BITS;
        var o_min = NAN_BITS;
        var o_max = NAN_BITS;
        if (count > 0u && (ignore || t.nan == 0u)) {
            let pos = (t.inf & 1u) != 0u;
            let neg = (t.inf & 2u) != 0u;
            let finite = t.n > 0.0;
            if (pos && !neg) {
                o_mean = INF_BITS;
            } else if (neg && !pos) {
                o_mean = NEG_INF_BITS;
            } else if (!pos && !neg) {
                // K + mean * 2^e, summed at the scale (no overflow), then
                // kept between the extremes the exact mean lies between.
                let m = (shift_of(c) * pow2(-t.e) + t.mean) * pow2(t.e);
                o_mean = bitcast<u32>(clamp(m, t.mn, t.mx));
            }
            if (!pos && !neg && count > params.ddof) {
                let q = t.m2 / f32(count - params.ddof);
                o_var = scaled_bits(q, 2 * t.e);
                o_std = scaled_bits(sqrt(q), t.e);
            }
            o_min = extreme_bits(neg, finite, t.mn, NEG_INF_BITS, INF_BITS);
            o_max = extreme_bits(pos, finite, t.mx, INF_BITS, NEG_INF_BITS);
        }
        out[c] = o_mean;
        out[d + c] = o_var;
        out[2u * d + c] = o_std;
        out[3u * d + c] = o_min;
        out[4u * d + c] = o_max;
    }
}
