// The workgroup tree reductions of the norm family (shaders/norm_columns.wgsl
// and shaders/norm_rows.wgsl; src/shaders.rs prepends this file after
// shaders/common/welford.wgsl and shaders/common/scaled.wgsl): the workgroup
// size, the scratch arrays, and the trees over them.
//
// A workgroup's WG threads form groups of `lanes` threads (a power of two);
// thread li is lane `lane` of its group, and its group's lane l is thread
// li + (l - lane) * step. Each tree halves the live lanes per step, lane
// i < s taking in lane i + s, so a group's result ends in its lane 0. Every
// thread of the workgroup must call a tree (it holds barriers), with `lanes`
// and `step` the same in all of them.

override WG: u32 = 256u;

var<workgroup> sh_n: array<u32, WG>;
var<workgroup> sh_a: array<f32, WG>;
var<workgroup> sh_b: array<f32, WG>;

// One step of a tree over sh_n / sh_a / sh_b holding Wf states: slot o merged
// into slot li (shaders/common/scaled.wgsl's merge_wf).
fn sh_merge_wf(li: u32, o: u32) {
    let r = merge_wf(Wf(sh_n[li], sh_a[li], sh_b[li]), Wf(sh_n[o], sh_a[o], sh_b[o]));
    sh_n[li] = r.n;
    sh_a[li] = r.mean;
    sh_b[li] = r.m2;
}

// Each group's Wf states merged into its lane 0's slot of sh_n / sh_a / sh_b.
fn sh_tree_wf(li: u32, st: Wf, lane: u32, lanes: u32, step: u32) {
    sh_n[li] = st.n;
    sh_a[li] = st.mean;
    sh_b[li] = st.m2;
    workgroupBarrier();
    for (var s = lanes / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            sh_merge_wf(li, li + s * step);
        }
        workgroupBarrier();
    }
}

// Each group's pairs (a, b) summed into its lane 0's slot of sh_a / sh_b.
fn sh_tree_sum2(li: u32, a: f32, b: f32, lane: u32, lanes: u32, step: u32) {
    sh_a[li] = a;
    sh_b[li] = b;
    workgroupBarrier();
    for (var s = lanes / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            let o = li + s * step;
            sh_a[li] = sh_a[li] + sh_a[o];
            sh_b[li] = sh_b[li] + sh_b[o];
        }
        workgroupBarrier();
    }
}
