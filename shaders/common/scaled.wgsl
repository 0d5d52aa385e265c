// Shared by shaders/norm_columns.wgsl and shaders/norm_rows.wgsl (src/shaders.rs
// prepends it, after shaders/common/welford.wgsl and reduce.wgsl): Welford states that survive
// f32 overflow, and NaN by its bits. welford_strided reads the includer's data
// binding, x.
//
// Finite f32 data can still overflow a variance: a spread beyond about 1e19
// squares past f32's 3.4e38, and values near +-3e38 overflow x - shift itself.
// A state that came out non-finite is recomputed in units of 2^96 (values
// times 2^-96, exact: a power of two), where the deviations of any finite f32
// values, squared and summed over 2^31 of them, stay below 1e30. Only what
// is below 2^-30 in such a group underflows there: below f32's resolution
// of a spread of 1e19. A state in those units carries the SCALED bit in its
// count; merging a scaled with an unscaled state first scales the unscaled
// one, and a merge of two unscaled states that overflows is redone scaled.
// So data that never overflows takes exactly the arithmetic it took before,
// and NaN or inf in the data ends as a NaN state (scaled, like any non-finite
// one), which the finalize passes report as NaN statistics.
//
// A statistics row (shift, mean - shift, invstd, var) of a scaled group holds
// (shift * 2^-96, (mean - shift) * 2^-96, -invstd * 2^96, var): the sign bit of
// invstd (positive in every unscaled row) marks it, and decode() turns a row
// into the values the kernels need.

const SCALED: u32 = 0x80000000u;
const COUNT_MASK: u32 = 0x7fffffffu;
const DOWN: f32 = 0x1p-96f;
const UP: f32 = 0x1p96f;

// v * 2^-192 (an M2, >= 0, or inf / NaN) by its exponent: exact, and 0 where
// the result would be subnormal. Not (v * DOWN) * DOWN: a compiler may fold
// the two constants into one, 2^-192, which is 0 in f32 (Mesa's does).
fn down2(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    let e = (b >> 23u) & 0xffu;
    if (e == 0xffu) {
        return v;
    }
    if (e <= 192u) {
        return 0.0;
    }
    return bitcast<f32>(b - (192u << 23u));
}

// v * 2^192 by its exponent: +-inf past f32's range, 0 for 0 (and a subnormal,
// which a GPU may flush anyway); for the same reason as down2.
fn up2(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    let e = (b >> 23u) & 0xffu;
    if (e == 0xffu) {
        return v;
    }
    if (e == 0u) {
        return 0.0;
    }
    if (e + 192u >= 0xffu) {
        return bitcast<f32>((b & 0x80000000u) | 0x7f800000u);
    }
    return bitcast<f32>(b + (192u << 23u));
}

// A Welford state: count (with the SCALED bit), mean and M2 (of values
// already shifted by the state's shift).
struct Wf {
    n: u32,
    mean: f32,
    m2: f32,
}

// The Welford state of x[base + i * stride] for i = first, first + step, ...
// below end, each value taken as v * sc - shift * sc: four at a time (four
// independent loads in flight, one division for the four), then one by one.
// A column of a row-major matrix is stride = its width, a row stride = 1.
fn welford_strided(base: u32, first: u32, step: u32, end: u32, stride: u32, shift: f32, sc: f32) -> Wf {
    let ks = shift * sc;
    var n = 0u;
    var mean = 0.0;
    var m2 = 0.0;
    var i = first;
    loop {
        if (i + 3u * step >= end) {
            break;
        }
        let v0 = x[base + i * stride] * sc - ks;
        let v1 = x[base + (i + step) * stride] * sc - ks;
        let v2 = x[base + (i + 2u * step) * stride] * sc - ks;
        let v3 = x[base + (i + 3u * step) * stride] * sc - ks;
        let mm = welford4(n, mean, m2, v0, v1, v2, v3);
        n = n + 4u;
        mean = mm.x;
        m2 = mm.y;
        i = i + 4u * step;
    }
    loop {
        if (i >= end) {
            break;
        }
        let v = x[base + i * stride] * sc - ks;
        n = n + 1u;
        let d = v - mean;
        mean = mean + d / f32(n);
        m2 = m2 + d * (v - mean);
        i = i + step;
    }
    return Wf(n, mean, m2);
}

// welford_strided in the data's units, redone in units of 2^96 where it
// overflowed (or met NaN / inf): the state of one thread's run of values.
fn welford_run(base: u32, first: u32, step: u32, end: u32, stride: u32, shift: f32) -> Wf {
    var st = welford_strided(base, first, step, end, stride, shift, 1.0);
    if (!(is_finite(st.mean) && is_finite(st.m2))) {
        st = welford_strided(base, first, step, end, stride, shift, DOWN);
        st.n = st.n | SCALED;
    }
    return st;
}

// Chan's merge of two states in either units.
fn merge_wf(a: Wf, b: Wf) -> Wf {
    let na = a.n & COUNT_MASK;
    let nb = b.n & COUNT_MASK;
    let fa = a.n & SCALED;
    let fb = b.n & SCALED;
    var am = a.mean;
    var am2 = a.m2;
    var bm = b.mean;
    var bm2 = b.m2;
    if (fa == 0u && fb != 0u) {
        am = am * DOWN;
        am2 = down2(am2);
    }
    if (fb == 0u && fa != 0u) {
        bm = bm * DOWN;
        bm2 = down2(bm2);
    }
    var f = fa | fb;
    var r = chan(na, am, am2, nb, bm, bm2);
    if (f == 0u && !(is_finite(r.x) && is_finite(r.y))) {
        r = chan(na, am * DOWN, down2(am2), nb, bm * DOWN, down2(bm2));
        f = SCALED;
    }
    return Wf((na + nb) | f, r.x, r.y);
}

// One step of a workgroup tree reduction over sh_n / sh_a / sh_b holding Wf states.
fn sh_merge_wf(li: u32, o: u32) {
    let r = merge_wf(Wf(sh_n[li], sh_a[li], sh_b[li]), Wf(sh_n[o], sh_a[o], sh_b[o]));
    sh_n[li] = r.n;
    sh_a[li] = r.mean;
    sh_b[li] = r.m2;
}

// The workgroup tree of Welford states, as sh_tree_sum2 (same slots, same
// barriers) with merge_wf: the merged state is read after it at the first
// slot.
fn sh_tree_wf(li: u32, k: u32, count: u32, stride: u32, st: Wf) {
    sh_n[li] = st.n;
    sh_a[li] = st.mean;
    sh_b[li] = st.m2;
    workgroupBarrier();
    for (var s = count / 2u; s > 0u; s = s / 2u) {
        if (k < s) {
            sh_merge_wf(li, li + s * stride);
        }
        workgroupBarrier();
    }
}

// What the kernels need of a statistics row: xhat = ((x * sc - k) - m) * ist,
// and invstd (in the data's own units).
struct Decoded {
    sc: f32,
    k: f32,
    m: f32,
    ist: f32,
    invstd: f32,
}

fn decode(st: vec4<f32>) -> Decoded {
    if (sign_bit(st.z) && !is_nan(st.z)) {
        return Decoded(DOWN, st.x, st.y, -st.z, -st.z * DOWN);
    }
    return Decoded(1.0, st.x, st.y, st.z, st.z);
}

// The statistics row of a finished state (count cnt, mean ms relative to the
// shift k, M2 m2): (k, ms, invstd, var), or the scaled form above. The
// variance is NaN-propagating (M2 is a sum of non-negative terms, so it is
// never negative), and so is invstd.
fn stats_row(st: Wf, k: f32, eps: f32) -> vec4<f32> {
    let cnt = f32(st.n & COUNT_MASK);
    let v = st.m2 / cnt;
    if ((st.n & SCALED) == 0u) {
        return vec4<f32>(k, st.mean, 1.0 / sqrt(v + eps), v);
    }
    // eps * 2^-192 underflows: a scaled group's variance (above 1e29) dwarfs it
    var ist = 1.0 / sqrt(v);
    if (is_nan(v)) {
        ist = v;
    }
    return vec4<f32>(k * DOWN, st.mean, -ist, up2(v));
}

// The normalized value of x under a decoded statistics row.
fn xhat(v: f32, d: Decoded) -> f32 {
    return ((v * d.sc - d.k) - d.m) * d.ist;
}
