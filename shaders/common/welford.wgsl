// Shared by shaders/norm_columns.wgsl and shaders/norm_rows.wgsl: src/shaders.rs
// prepends this file to each (naga reports its lines first, then the op's).
// The workgroup size, the scratch arrays of the workgroup reductions, Chan's
// merge of Welford states, and the two steps built on it.

override WG: u32 = 256u;

var<workgroup> sh_n: array<u32, WG>;
var<workgroup> sh_a: array<f32, WG>;
var<workgroup> sh_b: array<f32, WG>;

// Chan et al.'s merge of two Welford states (na, ma, m2a) and (nb, mb, m2b);
// returns (mean, M2) of the union (its count is na + nb).
fn chan(na: u32, ma: f32, m2a: f32, nb: u32, mb: f32, m2b: f32) -> vec2<f32> {
    if (nb == 0u) {
        return vec2<f32>(ma, m2a);
    }
    if (na == 0u) {
        return vec2<f32>(mb, m2b);
    }
    let fa = f32(na);
    let fb = f32(nb) / f32(na + nb);
    let d = mb - ma;
    return vec2<f32>(ma + d * fb, m2a + m2b + d * d * fa * fb);
}

// Four values merged into the Welford state (n, mean, m2) at once: their own
// mean and M2 (one division for four values), then Chan's formula. Returns
// the new (mean, M2); the count becomes n + 4.
fn welford4(n: u32, mean: f32, m2: f32, v0: f32, v1: f32, v2: f32, v3: f32) -> vec2<f32> {
    let m4 = 0.25 * ((v0 + v1) + (v2 + v3));
    let d0 = v0 - m4;
    let d1 = v1 - m4;
    let d2 = v2 - m4;
    let d3 = v3 - m4;
    let q4 = (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    return chan(n, mean, m2, 4u, m4, q4);
}

// The workgroup tree that sums pairs. Each thread puts v in its slot li; a
// group of `count` threads whose slots are first + k * stride (k = 0..count,
// the thread's own k given) is summed into its first slot, in halves, and
// read there after the call. count is a power of two and workgroup-uniform,
// and the call sits in uniform control flow (it holds barriers).
fn sh_tree_sum2(li: u32, k: u32, count: u32, stride: u32, v: vec2<f32>) {
    sh_a[li] = v.x;
    sh_b[li] = v.y;
    workgroupBarrier();
    for (var s = count / 2u; s > 0u; s = s / 2u) {
        if (k < s) {
            let o = li + s * stride;
            sh_a[li] = sh_a[li] + sh_a[o];
            sh_b[li] = sh_b[li] + sh_b[o];
        }
        workgroupBarrier();
    }
}
