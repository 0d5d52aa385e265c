// Welford's running mean and M2, and Chan et al.'s merge of two states: the
// arithmetic every statistics kernel shares (src/shaders.rs prepends this file
// to shaders/column_stats.wgsl, shaders/norm_columns.wgsl and
// shaders/norm_rows.wgsl). Pure functions: no bindings, no workgroup memory
// (the norm family's workgroup reductions are shaders/common/reduce.wgsl).

// Chan's formula on float counts: the union of (na, ma, m2a) and a state
// (mb, m2b) whose share of the union's count is wb = nb / (na + nb); returns
// (mean, M2). An empty side (count 0, mean and M2 0) gives the other side
// exactly: wb = 0 keeps a, and na = 0 with wb = 1 gives b.
fn chan_mix(na: f32, ma: f32, m2a: f32, mb: f32, m2b: f32, wb: f32) -> vec2<f32> {
    let d = mb - ma;
    return vec2<f32>(ma + d * wb, m2a + m2b + d * d * na * wb);
}

// Chan et al.'s merge of two Welford states (na, ma, m2a) and (nb, mb, m2b);
// returns (mean, M2) of the union (its count is na + nb).
fn chan(na: u32, ma: f32, m2a: f32, nb: u32, mb: f32, m2b: f32) -> vec2<f32> {
    if (nb == 0u) {
        return vec2<f32>(ma, m2a);
    }
    if (na == 0u) {
        return vec2<f32>(mb, m2b);
    }
    return chan_mix(f32(na), ma, m2a, mb, m2b, f32(nb) / f32(na + nb));
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
