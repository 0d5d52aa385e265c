// The register tile of the product kernels (shaders/matmul.wgsl and
// shaders/covariance.wgsl; src/shaders.rs prepends this file to each): each
// thread accumulates a block of outputs in acc, vec4s of 4 columns, from one
// vec4 of A's column (4 rows) and vec4s of B's row (4 columns) per k step.
// The functions take acc by pointer and are called with constant offsets, so
// after inlining (every backend inlines them) each FMA reads and writes a
// fixed register, exactly as if it were written out in the loop; every
// accumulator keeps its own chain of FMAs in k order.

// acc[t + q * s] += a[q] * b for q = 0..4: the 4 rows of a against one vec4
// of columns, the rows' accumulators s apart.
fn tile_fma4(acc: ptr<function, array<vec4<f32>, 16>>, t: u32, s: u32, a: vec4<f32>, b: vec4<f32>) {
    (*acc)[t] = fma(vec4<f32>(a.x), b, (*acc)[t]);
    (*acc)[t + s] = fma(vec4<f32>(a.y), b, (*acc)[t + s]);
    (*acc)[t + 2u * s] = fma(vec4<f32>(a.z), b, (*acc)[t + 2u * s]);
    (*acc)[t + 3u * s] = fma(vec4<f32>(a.w), b, (*acc)[t + 3u * s]);
}

// The 8 x 8 tile, four 4 x 4 quadrants: acc[2 r + h] for local row r (0..3
// from a0, 4..7 from a1) and columns b0 (h = 0) or b1 (h = 1).
fn tile_fma_8x8(acc: ptr<function, array<vec4<f32>, 16>>, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    tile_fma4(acc, 0u, 2u, a0, b0);
    tile_fma4(acc, 1u, 2u, a0, b1);
    tile_fma4(acc, 8u, 2u, a1, b0);
    tile_fma4(acc, 9u, 2u, a1, b1);
}
