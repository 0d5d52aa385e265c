// Shared by shaders/batchnorm.wgsl and shaders/norm.wgsl: src/shaders.rs
// prepends this file to each (naga reports its lines first, then the op's).
// The workgroup size, the scratch arrays of the workgroup reductions, and
// Chan's merge of Welford states.

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

