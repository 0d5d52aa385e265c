// Float helpers every kernel family shares (prepended to the families that
// use them; see src/shaders.rs). NaN and infinity are told apart by their
// bits: drivers may assume float comparisons never see a NaN.

// An f32's bits without its sign; those of +inf, -inf and the quiet NaN
// the kernels write.
const ABS: u32 = 0x7fffffffu;
const INF_BITS: u32 = 0x7f800000u;
const NEG_INF_BITS: u32 = 0xff800000u;
const NAN_BITS: u32 = 0x7fc00000u;

// NaN by its bits.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & ABS) > INF_BITS;
}

// Neither NaN nor infinity, by the bits.
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & INF_BITS) != INF_BITS;
}

fn sign_bit(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x80000000u) != 0u;
}

// A positive quiet NaN (made from a runtime value, so that no const-expression
// is NaN).
fn quiet_nan(like: f32) -> f32 {
    return bitcast<f32>((bitcast<u32>(like) & 0x003fffffu) | 0x7fc00000u);
}

// 2^p for p in [-126, 127], from its bits (exact; no pow() rounding).
fn pow2(p: i32) -> f32 {
    return bitcast<f32>(u32(p + 127) << 23u);
}

fn pow2_4(p: vec4<i32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(p + 127) << vec4<u32>(23u));
}

// The bits of v * 2^p (v finite, p in [-252, 252]; the power applied as two
// exact halves): +-inf past f32's range, v's own bits for +-0.
fn scaled_bits(v: f32, p: i32) -> u32 {
    let b = bitcast<u32>(v);
    let a = b & ABS;
    if (a == 0u) {
        return b;
    }
    if (i32(a >> 23u) - 127 + p > 127) {
        return (b & 0x80000000u) | INF_BITS;
    }
    let h = p / 2;
    return bitcast<u32>(v * pow2(h) * pow2(p - h));
}
