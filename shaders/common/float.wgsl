// Float helpers every kernel family shares (prepended to the families that
// use them; see src/shaders.rs). NaN and infinity are told apart by their
// bits: drivers may assume float comparisons never see a NaN.

// NaN by its bits.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Neither NaN nor infinity, by the bits.
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
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
