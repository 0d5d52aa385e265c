// Welford's running mean and M2 and Chan's merge of two such states, pure
// arithmetic: shared by shaders/column_stats.wgsl and the norm family
// (src/shaders.rs prepends this file; naga reports its lines first).

// Chan, Golub and LeVeque's merge of (mean, M2) states a and b, given a's
// count na and b's share wb = nb / (na + nb) of the union: (mean, M2) of the
// union. An empty side has mean and M2 0, so wb = 0 (b empty) or 1 (a empty)
// gives the other side exactly.
fn chan_mix(na: f32, ma: f32, m2a: f32, wb: f32, mb: f32, m2b: f32) -> vec2<f32> {
    let d = mb - ma;
    return vec2<f32>(ma + d * wb, m2a + m2b + d * d * na * wb);
}

// Chan's merge on u32 counts: the states (na, ma, m2a) and (nb, mb, m2b);
// returns (mean, M2) of the union (its count is na + nb).
fn chan(na: u32, ma: f32, m2a: f32, nb: u32, mb: f32, m2b: f32) -> vec2<f32> {
    if (nb == 0u) {
        return vec2<f32>(ma, m2a);
    }
    if (na == 0u) {
        return vec2<f32>(mb, m2b);
    }
    return chan_mix(f32(na), ma, m2a, f32(nb) / f32(na + nb), mb, m2b);
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
