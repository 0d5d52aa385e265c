// out = x, element for element: the device-side clone of a matrix, and the
// bandwidth ceiling the benchmarks quote (one read and one write of every
// byte, through the same load/store path as the other kernels; some drivers'
// copy_buffer_to_buffer runs at a fraction of that).
// Launcher: src/ops/copy.rs. The copy is bit-exact, so the input is its own
// CPU twin (tests/copy.rs compares bits).
// One thread per element (per vec4 when the length is a multiple of 4); the
// dispatch is 2-D when the count needs more than 65535 workgroups.

struct Params {
    len: u32,      // elements (vec4s for copy_vec4)
    groups_x: u32, // workgroups along x
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wg.y * params.groups_x + wg.x) * WG + lid.x;
    if (i < params.len) {
        out[i] = x[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn copy_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wg.y * params.groups_x + wg.x) * WG + lid.x;
    if (i < params.len) {
        out4[i] = x4[i];
    }
}
