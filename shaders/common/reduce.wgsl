// The norm family's workgroup size and the scratch arrays of its workgroup
// reductions, and the tree that sums pairs (src/shaders.rs prepends this file
// to shaders/norm_columns.wgsl and shaders/norm_rows.wgsl, after
// common/welford.wgsl; common/scaled.wgsl builds the Welford tree on it).

override WG: u32 = 256u;

var<workgroup> sh_n: array<u32, WG>;
var<workgroup> sh_a: array<f32, WG>;
var<workgroup> sh_b: array<f32, WG>;

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
