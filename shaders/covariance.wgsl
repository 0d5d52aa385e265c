// Covariance of the columns of a row-major N x D matrix X:
//     C = (X - mu)^T (X - mu) / (N - ddof)
// CPU twin: src/cpu/covariance.rs. Launcher: src/ops/covariance.rs.
//
// C is symmetric, so only the TILE x TILE tiles on and above the diagonal are
// computed (half the flops of a general product) and the finalize pass mirrors
// them. Each element is centred with the mean buffer m as it is loaded into
// workgroup memory: X - m is never materialized, and the products are of
// centred values, which keeps f32 accurate on data with a large offset.
// The f32 mean is itself rounded (by up to half an ulp of the data, 5e-4 at
// 1e4); the kernel also sums the centred values, s = sum_n (x_n - m), and
// removes that residual exactly:
//     sum (x - mu)(x - mu)^T = sum (x - m)(x - m)^T - s s^T / N,
// so C is the covariance about the data's own mean for any shift m near it.
//
// Range. Each column c is also scaled by a power of two, sc_c = 2^-e_c with
// 2^e_c the largest magnitude among its minimum, maximum and shift (pass 0,
// `covariance_scales`, from a column_stats buffer): the kernel accumulates
// (x*sc - m*sc), exact scalings whose magnitudes stay below 4, so products and
// sums stay far from f32's limits whatever the data's magnitude (a spread of
// 1e20, values near +-3.4e38), and the finalize multiplies by 2^(e_i + e_j),
// writing inf (by its bits) where the covariance itself is beyond f32. A
// column whose shift or extremes are not finite (NaN or inf in it) has scale
// 0 and gets NaN in its row and column (numpy's cov gives NaN there too).
//
// Pass 1, `covariance_partial`: workgroup (t, s) accumulates upper tile t over
// the rows of slice s (rows_per_slice rows), KSTEP rows at a time through
// workgroup memory (double-buffered where it fits, the next step's rows loaded
// into registers during the current step's FMAs), each thread holding an
// 8 x 8 register tile (shaders/common/tile.wgsl); it writes its
// TILE x TILE partial sum to `partials[s][t]`, and the diagonal tiles' groups
// write their columns' sums to `colsums[s]`. Splitting N into slices gives the
// device enough workgroups when D (and so the number of tiles) is small. A
// matrix split into pieces (row ranges bound one at a time) runs pass 1 once
// per piece, its slices numbered from slice_base. A stream of chunks
// (`CovarianceStream`) runs pass 1 once per chunk with `accumulate`, all chunks
// adding into the same slices, about the first chunk's shift and scales; pass 2
// runs once at the end.
// Pass 2, `covariance_finalize`: sums the slices (compensated), removes
// s s^T / N, scales by 1 / (N - ddof), writes the tile's entries on and above
// the diagonal and their mirrors. (In a diagonal tile pass 1 skips the quarter
// of each thread's outputs that lies wholly below the diagonal.)

struct Params {
    n: u32,              // rows of X in this piece (pass 1)
    d: u32,              // columns of X
    rows_per_slice: u32, // rows each slice of pass 1 covers
    n_slices: u32,       // slices of all pieces
    n_blocks: u32,       // ceil(d / TILE)
    n_tiles: u32,        // n_blocks * (n_blocks + 1) / 2, the upper tiles
    scale: f32,          // 1 / (N - ddof), N the rows of all pieces
    inv_n: f32,          // 1 / N
    slice_base: u32,     // this piece's first slice (pass 1)
    raw: u32,            // 1: write the scaled covariance (the caller unscales)
    accumulate: u32,     // 1: pass 1 adds into partials, colsums and colmax (a stream's chunks)
    _pad2: u32,
}

// Threads along each side of a tile: TILE = 8 * WG. One of 4, 8, 16.
override WG: u32 = 16u;
// Rows of X per step through workgroup memory: 8 or 16 (KSTEP / (WG / 2) <= 8).
override KSTEP: u32 = 8u;
// D % 4 == 0: each thread's four columns are one aligned vec4 of X, loaded
// through x4 in one instruction (the launcher binds X to both x and x4).
override VEC4: bool = false;
// Buffers of the tiles: 2 where the device's workgroup memory holds them
// (steps alternate between them, one barrier per step), else 1 (the
// launcher's choice). Declared with the other overrides, before any global
// variable (naga 30's override processing panics on one declared after a
// workgroup array whose size uses overrides).
override NBUF: u32 = 2u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;
// Written as bits: an overflow is inf and a bad column NaN by their patterns.
@group(0) @binding(4) var<storage, read_write> cov: array<u32>;
// Column sums of the centred values per slice: [n_slices][n_blocks * TILE / 4].
@group(0) @binding(5) var<storage, read_write> colsums: array<vec4<f32>>;
// X again, as vec4s (read only when VEC4).
@group(0) @binding(6) var<storage, read> x4: array<vec4<f32>>;
// A column_stats buffer (5 x D; rows 3 and 4 are each column's min and max).
@group(0) @binding(7) var<storage, read> range: array<f32>;
// Each column's scale 2^-e (0 for a column that is not finite), from pass 0.
@group(0) @binding(8) var<storage, read_write> scales: array<f32>;
// Per slice, each column's largest |x - m| * sc (layout as colsums).
@group(0) @binding(9) var<storage, read_write> colmax: array<vec4<f32>>;
// `covariance_moments`' output, 2 x D: the column means, and each column's
// largest |x - m| * sc.
@group(0) @binding(10) var<storage, read_write> moments: array<f32>;

// Pass 0: one thread per column.
@compute @workgroup_size(256, 1, 1)
fn covariance_scales(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let d = params.d;
    if c >= d {
        return;
    }
    let m = bitcast<u32>(mean[c]) & ABS;
    let lo = bitcast<u32>(range[3u * d + c]) & ABS;
    let hi = bitcast<u32>(range[4u * d + c]) & ABS;
    let big = max(m, max(lo, hi));
    if big >= INF_BITS {
        scales[c] = 0.0;
        return;
    }
    // A column of zeros has scale 1: its covariance is 0 at any scale, and
    // where these statistics stand for more rows than they saw (a prefix, a
    // stream's first chunk) later values of ordinary size stay in range.
    if big == 0u {
        scales[c] = 1.0;
        return;
    }
    // The largest magnitude's exponent; each scaled value is then below 2.
    let e = clamp(i32(big >> 23u) - 127, -126, 126);
    scales[c] = pow2(-e);
}

// scales[c .. c + 4], zero past column d.
fn load_scale(c: u32) -> vec4<f32> {
    let d = params.d;
    var s = vec4<f32>(0.0);
    if c < d { s.x = scales[c]; }
    if c + 1u < d { s.y = scales[c + 1u]; }
    if c + 2u < d { s.z = scales[c + 2u]; }
    if c + 3u < d { s.w = scales[c + 3u]; }
    return s;
}

// NBUF buffers of KSTEP rows x TILE columns of centred X for the tile's row
// block (a) and column block (b).
var<workgroup> a_tile: array<vec4<f32>, NBUF * KSTEP * 2u * WG>;
var<workgroup> b_tile: array<vec4<f32>, NBUF * KSTEP * 2u * WG>;

// Upper tile number t -> (row block, column block), row by row.
fn tile_coords(t: u32) -> vec2<u32> {
    var bi = 0u;
    var rem = t;
    loop {
        let len = params.n_blocks - bi;
        if rem < len || len == 0u {
            break;
        }
        rem -= len;
        bi += 1u;
    }
    return vec2<u32>(bi, bi + rem);
}

// mean[c .. c + 4], zero past column d.
fn load_mean(c: u32) -> vec4<f32> {
    let d = params.d;
    var m = vec4<f32>(0.0);
    if c < d { m.x = mean[c]; }
    if c + 1u < d { m.y = mean[c + 1u]; }
    if c + 2u < d { m.z = mean[c + 2u]; }
    if c + 3u < d { m.w = mean[c + 3u]; }
    return m;
}

// (X[row, c .. c + 4] - m) * sc, as X * sc + nm with nm = -m * sc, zero past
// the slice's end or column d (c is a multiple of 4).
fn load_centred(row: u32, row_end: u32, c: u32, sc: vec4<f32>, nm: vec4<f32>) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if row < row_end {
        let d = params.d;
        let base = row * d;
        if VEC4 {
            if c < d { v = fma(x4[(base + c) / 4u], sc, nm); }
            return v;
        }
        if c < d { v.x = fma(x[base + c], sc.x, nm.x); }
        if c + 1u < d { v.y = fma(x[base + c + 1u], sc.y, nm.y); }
        if c + 2u < d { v.z = fma(x[base + c + 2u], sc.z, nm.z); }
        if c + 3u < d { v.w = fma(x[base + c + 3u], sc.w, nm.w); }
    }
    return v;
}

@compute @workgroup_size(WG, WG, 1)
fn covariance_partial(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let tile = 8u * WG;
    let t4 = 2u * WG; // vec4s per row of a tile
    let bij = tile_coords(wid.x);
    let diagonal = bij.x == bij.y;
    let col_a = bij.x * tile;
    let col_b = bij.y * tile;
    let row_begin = wid.y * params.rows_per_slice;
    let row_end = min(params.n, row_begin + params.rows_per_slice);

    // This thread loads vec4 column c4 of rows k0, k0 + kstride, ... of each step.
    let c4 = tid % t4;
    let k0 = tid / t4;
    let kstride = WG / 2u;
    let sweeps = KSTEP / kstride;
    let sa = load_scale(col_a + 4u * c4);
    let sb = load_scale(col_b + 4u * c4);
    let ma = -(load_mean(col_a + 4u * c4) * sa);
    let mb = -(load_mean(col_b + 4u * c4) * sb);

    // Loads for the next step are issued before the current step's arithmetic.
    var pa: array<vec4<f32>, 8>;
    var pb: array<vec4<f32>, 8>;
    // Sum and largest magnitude of the centred values this thread loads
    // for column block a.
    var csum = vec4<f32>(0.0);
    var cmax = vec4<f32>(0.0);
    for (var j = 0u; j < sweeps; j++) {
        let r = row_begin + k0 + j * kstride;
        pa[j] = load_centred(r, row_end, col_a + 4u * c4, sa, ma);
        pb[j] = load_centred(r, row_end, col_b + 4u * c4, sb, mb);
        csum += pa[j];
        cmax = max(cmax, abs(pa[j]));
    }

    // acc[2 * r + h]: local row r (0..3: 4 * lid.y + r, 4..7: TILE/2 + 4 * lid.y + r - 4),
    // columns 4 * lid.x .. + 4 (h = 0) and TILE/2 + 4 * lid.x .. + 4 (h = 1).
    var acc: array<vec4<f32>, 16>;
    // Step s computes from buffer s % NBUF. With two buffers the step's
    // prefetched rows go to the other one after its FMAs, and the barrier
    // that ends the step both publishes them and retires the step's reads
    // before the buffer is written again; with one, a second barrier retires
    // the reads before the stores.
    let buf_len = KSTEP * t4;
    for (var j = 0u; j < sweeps; j++) {
        let slot = (k0 + j * kstride) * t4 + c4;
        a_tile[slot] = pa[j];
        b_tile[slot] = pb[j];
    }
    workgroupBarrier();
    var buf = 0u;
    for (var r0 = row_begin; r0 < row_end; r0 += KSTEP) {
        let base = buf * buf_len;
        let other = (buf + 1u) % NBUF;
        let next = r0 + KSTEP;
        for (var j = 0u; j < sweeps; j++) {
            let r = next + k0 + j * kstride;
            pa[j] = load_centred(r, row_end, col_a + 4u * c4, sa, ma);
            pb[j] = load_centred(r, row_end, col_b + 4u * c4, sb, mb);
            csum += pa[j];
            cmax = max(cmax, abs(pa[j]));
        }
        if diagonal {
            // A diagonal tile: each thread's rows TILE/2 + .. against columns
            // .. TILE/2 (acc 8, 10, 12, 14) lie wholly below the diagonal, which
            // the finalize takes from the mirror: a quarter of the work skipped,
            // the same for every thread.
            for (var k = 0u; k < KSTEP; k++) {
                let a0 = a_tile[base + k * t4 + lid.y];
                let a1 = a_tile[base + k * t4 + WG + lid.y];
                let b0 = b_tile[base + k * t4 + lid.x];
                let b1 = b_tile[base + k * t4 + WG + lid.x];
                tile_fma4(&acc, 0u, 2u, a0, b0);
                tile_fma4(&acc, 1u, 2u, a0, b1);
                tile_fma4(&acc, 9u, 2u, a1, b1);
            }
        } else {
            for (var k = 0u; k < KSTEP; k++) {
                let a0 = a_tile[base + k * t4 + lid.y];
                let a1 = a_tile[base + k * t4 + WG + lid.y];
                let b0 = b_tile[base + k * t4 + lid.x];
                let b1 = b_tile[base + k * t4 + WG + lid.x];
                tile_fma_8x8(&acc, a0, a1, b0, b1);
            }
        }
        if NBUF == 1u {
            workgroupBarrier();
        }
        let next_base = other * buf_len;
        for (var j = 0u; j < sweeps; j++) {
            let slot = next_base + (k0 + j * kstride) * t4 + c4;
            a_tile[slot] = pa[j];
            b_tile[slot] = pb[j];
        }
        workgroupBarrier();
        buf = other;
    }

    // partials[slice][tile] is TILE x TILE, row-major, in vec4s.
    let slice = params.slice_base + wid.y;
    let base = (slice * params.n_tiles + wid.x) * tile * t4;
    let lo = 4u * lid.y;
    let hi = tile / 2u + 4u * lid.y;
    store_partial(base, lo, lid.x, acc[0], acc[1]);
    store_partial(base, lo + 1u, lid.x, acc[2], acc[3]);
    store_partial(base, lo + 2u, lid.x, acc[4], acc[5]);
    store_partial(base, lo + 3u, lid.x, acc[6], acc[7]);
    store_partial(base, hi, lid.x, acc[8], acc[9]);
    store_partial(base, hi + 1u, lid.x, acc[10], acc[11]);
    store_partial(base, hi + 2u, lid.x, acc[12], acc[13]);
    store_partial(base, hi + 3u, lid.x, acc[14], acc[15]);

    // Diagonal tiles: the column sums and largest magnitudes of block a over
    // this slice, reduced over the threads that loaded the same column
    // (a_tile is free after the loop).
    if diagonal {
        let at = slice * params.n_blocks * t4 + bij.x * t4 + c4;
        a_tile[k0 * t4 + c4] = csum;
        workgroupBarrier();
        if k0 == 0u {
            var t = vec4<f32>(0.0);
            for (var r = 0u; r < kstride; r++) {
                t += a_tile[r * t4 + c4];
            }
            if params.accumulate != 0u {
                t += colsums[at];
            }
            colsums[at] = t;
        }
        workgroupBarrier();
        a_tile[k0 * t4 + c4] = cmax;
        workgroupBarrier();
        if k0 == 0u {
            var t = vec4<f32>(0.0);
            for (var r = 0u; r < kstride; r++) {
                t = max(t, a_tile[r * t4 + c4]);
            }
            if params.accumulate != 0u {
                t = max(t, colmax[at]);
            }
            colmax[at] = t;
        }
    }
}

fn store_partial(base: u32, local_row: u32, tx: u32, left: vec4<f32>, right: vec4<f32>) {
    let t4 = 2u * WG;
    let l = base + local_row * t4 + tx;
    let r = l + WG;
    if params.accumulate != 0u {
        partials[l] += left;
        partials[r] += right;
    } else {
        partials[l] = left;
        partials[r] = right;
    }
}

// Finalize: each workgroup reduces FIN_OUT vec4s of the tiles, FIN_LANES
// threads per vec4 splitting the slices between them (so the pass has
// parallelism even when D is small and the slices are many).
const FIN_OUT: u32 = 16u;
const FIN_LANES: u32 = 16u;
var<workgroup> fin_sum: array<vec4<f32>, 256>;
var<workgroup> fin_sj: array<vec4<f32>, 256>;
var<workgroup> fin_si: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn covariance_finalize(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = 8u * WG;
    let t4 = 2u * WG;
    let per_tile = tile * t4; // vec4s per tile
    let total = params.n_tiles * per_tile; // vec4s per slice
    let row4 = params.n_blocks * t4; // vec4s per slice of colsums
    let d = params.d;
    let o = tid % FIN_OUT;
    let lane = tid / FIN_OUT;
    let n_groups = (total + FIN_OUT - 1u) / FIN_OUT;
    for (var grp = wid.x; grp < n_groups; grp += nwg.x) {
        let i = grp * FIN_OUT + o;
        var sum = vec4<f32>(0.0);
        var si = 0.0;
        var sj = vec4<f32>(0.0);
        var gi = 0u;
        var gj = 0u;
        if i < total {
            let bij = tile_coords(i / per_tile);
            let local = i % per_tile;
            gi = bij.x * tile + local / t4;
            gj = bij.y * tile + (local % t4) * 4u;
            // Kahan-compensated sum over this lane's slices; s_i and s_j..j+3 likewise.
            var comp = vec4<f32>(0.0);
            for (var s = lane; s < params.n_slices; s += FIN_LANES) {
                let y = partials[s * total + i] - comp;
                let t = sum + y;
                comp = (t - sum) - y;
                sum = t;
                si += colsums[s * row4 + gi / 4u][gi % 4u];
                sj += colsums[s * row4 + gj / 4u];
            }
        }
        fin_sum[tid] = sum;
        fin_si[tid] = si;
        fin_sj[tid] = sj;
        workgroupBarrier();
        if lane == 0u && i < total && gi < d {
            for (var l = 1u; l < FIN_LANES; l++) {
                sum += fin_sum[l * FIN_OUT + o];
                si += fin_si[l * FIN_OUT + o];
                sj += fin_sj[l * FIN_OUT + o];
            }
            let v = (sum - si * sj * params.inv_n) * params.scale;
            let ei = 127 - i32(bitcast<u32>(scales[gi]) >> 23u);
            let bad_i = scales[gi] == 0.0;
            // The upper triangle and its mirror; below the diagonal of a
            // diagonal tile the partials are not all summed (see above).
            for (var q = 0u; q < 4u; q++) {
                let c = gj + q;
                if c < d && c >= gi {
                    var bits = bitcast<u32>(v[q]);
                    if bad_i || scales[c] == 0.0 {
                        bits = NAN_BITS;
                    } else if params.raw == 0u {
                        bits = scaled_bits(v[q], ei + 127 - i32(bitcast<u32>(scales[c]) >> 23u));
                    }
                    cov[gi * d + c] = bits;
                    cov[c * d + gi] = bits;
                }
            }
        }
        workgroupBarrier();
    }
}

// The column means and ranges the partial pass saw, for a fit that took its
// shift m and scales from a prefix of the rows (one read of X for both
// statistics and covariance): mean = m + (sum of the slices' column sums) /
// (N sc), compensated; and the largest |x - m| * sc over the slices, by which
// the caller checks that the scales kept every product inside f32's range.
// One thread per column.
@compute @workgroup_size(256, 1, 1)
fn covariance_moments(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let d = params.d;
    if c >= d {
        return;
    }
    let row4 = params.n_blocks * 2u * WG;
    var sum = 0.0;
    var comp = 0.0;
    var big = 0.0;
    for (var s = 0u; s < params.n_slices; s++) {
        let y = colsums[s * row4 + c / 4u][c % 4u] - comp;
        let t = sum + y;
        comp = (t - sum) - y;
        sum = t;
        big = max(big, colmax[s * row4 + c / 4u][c % 4u]);
    }
    let sc = scales[c];
    if sc == 0.0 {
        moments[c] = bitcast<f32>(NAN_BITS);
        moments[d + c] = bitcast<f32>(NAN_BITS);
        return;
    }
    moments[c] = mean[c] + sum * params.inv_n / sc;
    moments[d + c] = big;
}
