// Weight initialization: Philox4x32-10 and the fills built on it.
// CPU twin: src/rng.rs (the generator and the transforms, operation for
// operation) and src/cpu/init.rs (the schemes); launcher: src/ops/init.rs.
//
// Stream element i is lane i % 4 of philox4x32_10(counter = (lo(i/4), hi(i/4),
// stream_lo, stream_hi), key = (seed_lo, seed_hi)). Each invocation computes one
// Philox block and writes the (up to) four output elements that fall in it, so
// no invocation shares state with another and any chunking gives the same
// stream. Output element o is stream element offset + o.
//
// Every output is stored as u32 (floats through bitcast) so that one binding
// layout serves all entry points.

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream_lo: u32,
    stream_hi: u32,
    // offset / 4: the block of output element 0.
    block_lo: u32,
    block_hi: u32,
    // offset % 4: lanes of the first block that lie before the output.
    lead: u32,
    // Output elements.
    n: u32,
    // Invocations with work: blocks touched by offset .. offset + n.
    blocks: u32,
    // Invocations per row of the dispatch (groups in x times the workgroup size).
    row_stride: u32,
    // value (constant), center (uniform), mean (normal).
    a: f32,
    // half_width (uniform), std (normal, sparse).
    b: f32,
    // Sparse: columns of the matrix, entries kept per line, line length,
    // 1 if the lines are rows (the lecture) and 0 if columns (PyTorch).
    cols: u32,
    keep: u32,
    line_len: u32,
    by_rows: u32,
    row_base: u32,   // fill_sparse: the matrix row of this piece's first element
    // fill_trunc_normal (mean in a, std in b): the bounds, Phi(alpha),
    // 1 - Phi(beta) and the probability of [low, high] (src/model/init.rs).
    low: f32,
    high: f32,
    cdf_low: f32,
    sf_high: f32,
    mass: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

override WG: u32 = 256u;

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const SPARSE_TAG: u32 = 0x53504152u;
const FEISTEL_ROUNDS: u32 = 12u;

// Constants shared with src/rng.rs (the test shader_constants_match checks
// that both spell them alike).
const SQRT2_F32: f32 = 1.4142135;
const LN2_HI: f32 = 0.69314575;
const LN2_LO: f32 = 1.4286068e-6;
const ATANH_C3: f32 = 0.33333334;
const ATANH_C5: f32 = 0.2;
const ATANH_C7: f32 = 0.14285715;
const ATANH_C9: f32 = 0.11111111;
const SIN_S1: f32 = 1.5707964;
const SIN_S3: f32 = -0.6459641;
const SIN_S5: f32 = 0.079692625;
const SIN_S7: f32 = -0.004681754;
const SIN_S9: f32 = 0.00016044118;
const COS_C2: f32 = -1.2337005;
const COS_C4: f32 = 0.2536695;
const COS_C6: f32 = -0.02086348;
const COS_C8: f32 = 0.00091926026;
const COS_C10: f32 = -2.5202042e-5;

// Wichura's AS241 (PPND16) coefficients, constant term first: the f32
// roundings of PPND_A .. PPND_F in src/rng.rs.
const PPND_A = array<f32, 8>(3.387133, 133.14166, 1971.591, 13731.693, 45921.953, 67265.77, 33430.574, 2509.0808);
const PPND_B = array<f32, 8>(1.0, 42.31333, 687.187, 5394.196, 21213.795, 39307.895, 28729.086, 5226.495);
const PPND_C = array<f32, 8>(1.4234371, 4.6303377, 5.7694974, 3.6478484, 1.2704582, 0.24178073, 0.022723844, 0.000774545);
const PPND_D = array<f32, 8>(1.0, 2.0531917, 1.6763848, 0.68976736, 0.14810398, 0.015198667, 0.0005475938, 1.0507500425305238e-09);
const PPND_E = array<f32, 8>(6.6579046, 5.4637847, 1.7848265, 0.2965606, 0.02653219, 0.0012426609, 2.711555498535745e-05, 2.010334441138184e-07);
const PPND_F = array<f32, 8>(1.0, 0.5998322, 0.13692988, 0.014875362, 0.00078686915, 1.84631826414261e-05, 1.4215117971616564e-07, 2.0442631962214186e-15);

// (hi, lo) of the 64-bit product a * b, from 16-bit halves.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, c.x);
        let p1 = mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

fn seed_key() -> vec2<u32> {
    return vec2<u32>(params.seed_lo, params.seed_hi);
}

// The Philox block of invocation t: block (offset / 4) + t, a 64-bit add.
fn block_words(t: u32) -> vec4<u32> {
    let lo = params.block_lo + t;
    let hi = params.block_hi + select(0u, 1u, lo < t);
    return philox4x32_10(vec4<u32>(lo, hi, params.stream_lo, params.stream_hi), seed_key());
}

// Write lane l of invocation t's block to output element 4t + l - lead, if it
// is one of the n outputs.
fn store4(t: u32, v: vec4<u32>) {
    for (var l = 0u; l < 4u; l++) {
        let e = 4u * t + l;
        if (e >= params.lead && e - params.lead < params.n) {
            out[e - params.lead] = v[l];
        }
    }
}

// s = 2u - 1 = ((x >> 8) - 2^23) * 2^-23 in [-1, 1), exact.
fn centered(x: u32) -> f32 {
    return f32(i32(x >> 8u) - 8388608) * (1.0 / 8388608.0);
}

// Box-Muller radius sqrt(-2 ln u1), u1 = ((x >> 8) + 1) * 2^-24 in (0, 1]:
// ln_scaled of the integer (x >> 8) + 1 (exact in f32) and 24.
fn bm_radius(x: u32) -> f32 {
    let m = (x >> 8u) + 1u;
    return sqrt(-2.0 * ln_scaled(f32(m), 24));
}

// (cos 2 pi t, sin 2 pi t) for t = (x >> 8) * 2^-24 turns: t = (q + f) / 4
// exactly, q in 0..4 and f in [-1/2, 1/2), then Taylor polynomials for
// cos and sin of (pi / 2) f and a rotation by q quarter turns.
fn cos_sin_turns(x: u32) -> vec2<f32> {
    let j = (x >> 8u) + 0x200000u;
    let q = (j >> 22u) & 3u;
    let f = f32(i32(j & 0x3FFFFFu) - 0x200000) * (1.0 / 4194304.0);
    let f2 = f * f;
    let s = f * (SIN_S1 + f2 * (SIN_S3 + f2 * (SIN_S5 + f2 * (SIN_S7 + f2 * SIN_S9))));
    let c = 1.0 + f2 * (COS_C2 + f2 * (COS_C4 + f2 * (COS_C6 + f2 * (COS_C8 + f2 * COS_C10))));
    switch q {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

// The four normals of a block: (r0 cos, r0 sin, r1 cos, r1 sin).
fn normal4(x: vec4<u32>) -> vec4<f32> {
    let r0 = bm_radius(x.x);
    let a0 = cos_sin_turns(x.y);
    let r1 = bm_radius(x.z);
    let a1 = cos_sin_turns(x.w);
    return vec4<f32>(r0 * a0.x, r0 * a0.y, r1 * a1.x, r1 * a1.y);
}

// ln (v * 2^-k) of a positive normal f32 v: v * 2^-k = y * 2^e with y in
// [sqrt(1/2), sqrt(2)] from the float's bits, ln = e ln 2 + 2 atanh((y - 1) / (y + 1)).
fn ln_scaled(v: f32, k: i32) -> f32 {
    let bits = bitcast<u32>(v);
    var e = i32(bits >> 23u) - 127 - k;
    var y = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u);
    if (y > SQRT2_F32) {
        y = y * 0.5;
        e = e + 1;
    }
    let s = (y - 1.0) / (y + 1.0);
    let s2 = s * s;
    let p = s2 * (ATANH_C3 + s2 * (ATANH_C5 + s2 * (ATANH_C7 + s2 * ATANH_C9)));
    let two_s = 2.0 * s;
    let ln_y = two_s + two_s * p;
    let ef = f32(e);
    return ef * LN2_HI + (ef * LN2_LO + ln_y);
}

// ln v of a positive normal f32 (src/rng.rs's ln_f32).
fn ln_f32(v: f32) -> f32 {
    return ln_scaled(v, 0);
}

// c[0] + c[1] r + ... + c[7] r^7 by Horner's rule, from c[7] down.
fn horner8(c: array<f32, 8>, r: f32) -> f32 {
    var acc = c[7] * r + c[6];
    acc = acc * r + c[5];
    acc = acc * r + c[4];
    acc = acc * r + c[3];
    acc = acc * r + c[2];
    acc = acc * r + c[1];
    return acc * r + c[0];
}

// Phi^-1(p) for 0 < p <= 1/2: AS241's lower half.
fn norm_ppf_lower(p: f32) -> f32 {
    let q = p - 0.5;
    if (q >= -0.425) {
        let r = 0.180625 - q * q;
        return q * horner8(PPND_A, r) / horner8(PPND_B, r);
    }
    var r = sqrt(-ln_f32(p));
    if (r <= 5.0) {
        r = r - 1.6;
        return -(horner8(PPND_C, r) / horner8(PPND_D, r));
    }
    r = r - 5.0;
    return -(horner8(PPND_E, r) / horner8(PPND_F, r));
}

// A truncated-normal value from the word x: u = (2 (x >> 9) + 1) * 2^-24
// (0 < u < 1; u and 1 - u exact), the lower- and upper-tail probabilities
// p = cdf_low + u * mass and q = sf_high + (1 - u) * mass, and the inverse CDF
// at the smaller of the two.
fn trunc_normal(x: u32) -> f32 {
    let k = 2u * (x >> 9u) + 1u;
    let u = f32(k) * (1.0 / 16777216.0);
    let v = f32(16777216u - k) * (1.0 / 16777216.0);
    let p = params.cdf_low + u * params.mass;
    let q = params.sf_high + v * params.mass;
    var z = 0.0;
    if (p <= q) {
        z = norm_ppf_lower(p);
    } else {
        z = -norm_ppf_lower(q);
    }
    return clamp(params.a + params.b * z, params.low, params.high);
}

fn mix32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * PHILOX_M0;
    x = x ^ (x >> 15u);
    x = x * PHILOX_M1;
    x = x ^ (x >> 16u);
    return x;
}

// A pseudo-random permutation of 0..n evaluated at p: a 12-round balanced
// Feistel network on 2h bits (4^h >= n), walked in cycles back into 0..n;
// round i keys with word i % 4 plus i * PHILOX_W0.
fn feistel_permute(p: u32, n: u32, keys: vec4<u32>) -> u32 {
    var h = 1u;
    while (h < 16u && (1u << (2u * h)) < n) {
        h = h + 1u;
    }
    let mask = (1u << h) - 1u;
    var x = p;
    loop {
        var l = x >> h;
        var r = x & mask;
        for (var round = 0u; round < FEISTEL_ROUNDS; round++) {
            let k = keys[round % 4u] + round * PHILOX_W0;
            let t = l ^ (mix32(r ^ k) & mask);
            l = r;
            r = t;
        }
        x = (l << h) | r;
        if (x < n) {
            break;
        }
    }
    return x;
}

fn invocation(gid: vec3<u32>) -> u32 {
    return gid.y * params.row_stride + gid.x;
}

// The raw u32 stream.
@compute @workgroup_size(WG)
fn random_bits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = invocation(gid);
    if (t >= params.blocks) {
        return;
    }
    store4(t, block_words(t));
}

// Every element params.a.
@compute @workgroup_size(WG)
fn fill_constant(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = invocation(gid);
    if (t >= params.blocks) {
        return;
    }
    store4(t, vec4<u32>(bitcast<u32>(params.a)));
}

// center + half_width * s.
@compute @workgroup_size(WG)
fn fill_uniform(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = invocation(gid);
    if (t >= params.blocks) {
        return;
    }
    let x = block_words(t);
    let s = vec4<f32>(centered(x.x), centered(x.y), centered(x.z), centered(x.w));
    store4(t, bitcast<vec4<u32>>(params.a + params.b * s));
}

// mean + std * z.
@compute @workgroup_size(WG)
fn fill_normal(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = invocation(gid);
    if (t >= params.blocks) {
        return;
    }
    let z = normal4(block_words(t));
    store4(t, bitcast<vec4<u32>>(params.a + params.b * z));
}

// The truncated normal N(a, b^2) on [low, high].
@compute @workgroup_size(WG)
fn fill_trunc_normal(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = invocation(gid);
    if (t >= params.blocks) {
        return;
    }
    let x = block_words(t);
    let w = vec4<f32>(trunc_normal(x.x), trunc_normal(x.y), trunc_normal(x.z), trunc_normal(x.w));
    store4(t, bitcast<vec4<u32>>(w));
}

// Sparse: a rows x cols matrix filled in pieces of whole rows (stream
// element offset = row_base * cols); entry (i, j) is std * z when the
// permutation of its line puts its position below keep, else 0.
@compute @workgroup_size(WG)
fn fill_sparse(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = invocation(gid);
    if (t >= params.blocks) {
        return;
    }
    let z = normal4(block_words(t));
    for (var l = 0u; l < 4u; l++) {
        let e4 = 4u * t + l;
        if (e4 >= params.lead && e4 - params.lead < params.n) {
            let e = e4 - params.lead;
            let local_row = e / params.cols;
            let col = e - local_row * params.cols;
            let row = params.row_base + local_row;
            let line = select(col, row, params.by_rows != 0u);
            let pos = select(row, col, params.by_rows != 0u);
            let keys = philox4x32_10(
                vec4<u32>(line, SPARSE_TAG, params.stream_lo, params.stream_hi),
                seed_key(),
            );
            var v = 0.0;
            if (feistel_permute(pos, params.line_len, keys) < params.keep) {
                v = params.b * z[l];
            }
            out[e] = bitcast<u32>(v);
        }
    }
}
