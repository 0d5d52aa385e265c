// The small kernels that turn gpuprep's layers into a training loop: ReLU
// forward and backward, softmax cross-entropy with its gradient and the
// loss / accuracy sums, the SGD (momentum) update, and a row gather for
// shuffled mini-batches. The products (forward, dX = dY W, dW = dY^T X) are
// shaders/matmul.wgsl's, batch norm is shaders/norm_columns.wgsl's.
// CPU twin: src/cpu/train.rs. Launcher: src/ops/train.rs.
//
// Elementwise kernels run one element per thread on a 2-D grid (groups_x
// workgroups per row of the grid). Labels and row indices arrive as f32 (exact
// for integers below 2^24); one that is not a valid integer gives NaN, never
// an out-of-bounds read.

struct Params {
    n: u32,            // elements (elementwise kernels) or rows (softmax_xent, gather_rows)
    cols: u32,         // classes (softmax_xent) or the row length (gather_rows)
    slot: u32,         // softmax_xent: where its three sums start in metrics
    flags: u32,        // softmax_xent: WRITE_GRAD
    groups_x: u32,     // elementwise kernels: workgroups along x
    src_rows: u32,     // gather_rows: rows of the source
    lr: f32,           // sgd
    momentum: f32,     // sgd
    weight_decay: f32, // sgd
    grad_scale: f32,   // softmax_xent: dlogits = (softmax - onehot) * grad_scale
    _pad0: u32,
    _pad1: u32,
}

const WRITE_GRAD: u32 = 1u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> logits: array<f32>;
@group(0) @binding(6) var<storage, read> labels: array<f32>;
@group(0) @binding(7) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(8) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(9) var<storage, read> grad: array<f32>;
@group(0) @binding(10) var<storage, read_write> param: array<f32>;
@group(0) @binding(11) var<storage, read_write> velocity: array<f32>;
@group(0) @binding(12) var<storage, read> index: array<f32>;

fn flat(gid: vec3<u32>) -> u32 {
    return gid.y * p.groups_x * WG + gid.x;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// An integer in [0, bound) held as f32, or bound (invalid) for anything else.
fn as_index(v: f32, bound: u32) -> u32 {
    if is_nan(v) || v < 0.0 || v >= f32(bound) || floor(v) != v {
        return bound;
    }
    return u32(v);
}

// out = max(x, 0); NaN passes through (as PyTorch's).
@compute @workgroup_size(WG)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= p.n {
        return;
    }
    let v = x[i];
    out[i] = select(max(v, 0.0), v, is_nan(v));
}

// dx = dy where the forward output y is positive, else 0 (ReLU's subgradient
// at 0 is 0, as PyTorch's).
@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= p.n {
        return;
    }
    out[i] = select(0.0, dy[i], y[i] > 0.0);
}

// p -= lr * v with v = momentum * v + (g + weight_decay * p): PyTorch's SGD
// with momentum (dampening 0, not Nesterov); momentum 0 is plain SGD.
@compute @workgroup_size(WG)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= p.n {
        return;
    }
    let w = param[i];
    let g = grad[i] + p.weight_decay * w;
    let v = p.momentum * velocity[i] + g;
    velocity[i] = v;
    param[i] = w - p.lr * v;
}

// out[r, :] = x[index[r], :]; a row whose index is invalid is NaN.
@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= p.n * p.cols {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    let src = as_index(index[r], p.src_rows);
    if src == p.src_rows {
        out[i] = nan();
        return;
    }
    out[i] = x[src * p.cols + c];
}

var<workgroup> sum_loss: array<f32, WG>;
var<workgroup> sum_correct: array<f32, WG>;

// Softmax cross-entropy of each row of logits (n x cols) against its label:
// loss = log(sum_j exp(z_j - max z)) + max z - z_label (stable for any
// logits), correct when the first largest logit is the label's. One
// workgroup; each thread walks rows tid, tid + WG, ...; the sums of the loss,
// of the correct rows and of the rows are added to metrics[slot .. slot + 3]
// (dispatches on the same metrics are ordered, so pieces and batches add up).
// With WRITE_GRAD, dlogits = (softmax - onehot) * grad_scale.
@compute @workgroup_size(WG)
fn softmax_xent(@builtin(local_invocation_index) tid: u32) {
    let c = p.cols;
    var loss = 0.0;
    var correct = 0.0;
    for (var r = tid; r < p.n; r += WG) {
        let base = r * c;
        let label = as_index(labels[r], c);
        var zmax = logits[base];
        var best = 0u;
        for (var j = 1u; j < c; j++) {
            let z = logits[base + j];
            if z > zmax {
                zmax = z;
                best = j;
            }
        }
        var s = 0.0;
        for (var j = 0u; j < c; j++) {
            s += exp(logits[base + j] - zmax);
        }
        if label == c {
            loss += nan();
        } else {
            loss += log(s) + zmax - logits[base + label];
            correct += select(0.0, 1.0, best == label);
        }
        if (p.flags & WRITE_GRAD) != 0u {
            for (var j = 0u; j < c; j++) {
                var g = exp(logits[base + j] - zmax) / s;
                if j == label {
                    g -= 1.0;
                }
                if label == c {
                    g = nan();
                }
                dlogits[base + j] = g * p.grad_scale;
            }
        }
    }
    sum_loss[tid] = loss;
    sum_correct[tid] = correct;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if tid < half {
            sum_loss[tid] += sum_loss[tid + half];
            sum_correct[tid] += sum_correct[tid + half];
        }
        workgroupBarrier();
    }
    if tid == 0u {
        metrics[p.slot] += sum_loss[0];
        metrics[p.slot + 1u] += sum_correct[0];
        metrics[p.slot + 2u] += f32(p.n);
    }
}
