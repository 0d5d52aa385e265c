//! Philox4x32-10, the counter-based generator behind every random initializer,
//! and the rules that turn its bits into uniform and normal numbers.
//!
//! The same generator is written in WGSL in `shaders/init.wgsl`; the two
//! produce bit-identical `u32` streams, so an initialization is reproducible on
//! any device and under any chunking of the work.
//!
//! # Generator
//! Philox4x32 with 10 rounds (Salmon, Moraes, Dror, Shaw, "Parallel random
//! numbers: as easy as 1, 2, 3", SC 2011): multipliers `0xD2511F53`,
//! `0xCD9E8D57`, Weyl key increments `0x9E3779B9`, `0xBB67AE85`. Checked
//! against the known-answer vectors of the Random123 distribution
//! (`tests/kat_vectors`, the three `philox4x32 10` lines).
//!
//! # The stream
//! A [`Philox`] is a `seed` (the 64-bit key, low word first) and a `stream`
//! (a 64-bit subsequence number). Element `i` (a `u64`) of the stream is lane
//! `i % 4` of the block
//!
//! ```text
//! philox4x32_10(counter = [lo(i/4), hi(i/4), lo(stream), hi(stream)],
//!               key     = [lo(seed), hi(seed)])
//! ```
//!
//! Element `i` depends on nothing but `(seed, stream, i)`: filling elements
//! `offset .. offset + n` gives exactly that slice of the whole stream, however
//! the work is split.
//!
//! # Uniform floats
//! `u = (x >> 8) * 2^-24`: the top 24 bits of the word, exact in `f32`, in
//! `[0, 1 - 2^-24]`. The initializers use the centred form
//! `s = 2u - 1 = ((x >> 8) - 2^23) * 2^-23`, also exact in `f32`, in
//! `[-1, 1 - 2^-23]`, and return `center + half_width * s`.
//!
//! # Normal floats (Box-Muller)
//! Elements `4b .. 4b + 4` of the stream are made from block `b`'s four words
//! `(x0, x1, x2, x3)`:
//!
//! ```text
//! r0 = sqrt(-2 ln u1(x0)),  theta0 = 2 pi t(x1)     z[4b]   = r0 cos theta0
//!                                                   z[4b+1] = r0 sin theta0
//! r1 = sqrt(-2 ln u1(x2)),  theta1 = 2 pi t(x3)     z[4b+2] = r1 cos theta1
//!                                                   z[4b+3] = r1 sin theta1
//! ```
//!
//! with `u1(x) = ((x >> 8) + 1) * 2^-24` in `(0, 1]` (never 0, so `ln` is
//! always finite; `u1 = 1` gives `r = 0`) and `t(x) = (x >> 8) * 2^-24` in
//! `[0, 1)`, a fraction of a turn. The radius is at most
//! `sqrt(48 ln 2) = 5.77`: the normal's tails beyond 5.77 standard deviations
//! (probability 8e-9 per draw) are cut off.
//!
//! The reference [`Philox::normal`] evaluates this in `f64` with `std`'s `ln`,
//! `sqrt`, `sin`, `cos`. The shader does not use WGSL's `log`, `sin` and `cos`:
//! they are not correctly rounded, and Vulkan allows `sin`/`cos` an absolute
//! error of 2^-11. It evaluates `ln` by exponent extraction and an `atanh`
//! series, and the sine and cosine of a whole number of 2^-24 turns by an exact
//! quadrant reduction and Taylor polynomials, in `f32` (see
//! [`Philox::normal_f32`], which performs the shader's operations in the same
//! order). GPU and CPU therefore agree on normals to within a few `f32` ulps
//! on every device (the remaining differences: `sqrt` and `/` need not be
//! correctly rounded in Vulkan, and a driver may fuse `a * b + c`), while the
//! `u32` streams and the uniform floats are bit-identical.

/// First Philox multiplier (Salmon et al. 2011).
pub(crate) const PHILOX_M0: u32 = 0xD251_1F53;
/// Second Philox multiplier.
pub(crate) const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of the first key word (golden ratio).
pub(crate) const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of the second key word (sqrt(3) - 1).
pub(crate) const PHILOX_W1: u32 = 0xBB67_AE85;

/// The high and low words of the 64-bit product `a * b`.
#[inline]
pub(crate) fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 block with 10 rounds: `counter` and `key` as in Random123.
#[inline]
pub(crate) fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// 2^-24, the spacing of the uniform grid.
const TWO_M24: f64 = 1.0 / 16_777_216.0;

/// The uniform `u = (x >> 8) * 2^-24` in `[0, 1)`, exact in `f32` and `f64`.
#[inline]
pub(crate) fn uniform_from_bits(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The centred uniform `s = 2u - 1 = ((x >> 8) - 2^23) * 2^-23` in `[-1, 1)`,
/// exact in `f32` and `f64`.
#[inline]
pub(crate) fn centered_from_bits(x: u32) -> f32 {
    ((x >> 8) as i32 - 8_388_608) as f32 * (1.0 / 8_388_608.0)
}

/// A seeded Philox stream: see the module documentation for the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Philox {
    /// The key.
    pub seed: u64,
    /// The subsequence: streams with different numbers are independent.
    pub stream: u64,
}

impl Philox {
    /// Stream 0 of `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, stream: 0 }
    }

    /// Subsequence `stream` of `seed`.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        Self { seed, stream }
    }

    /// The two key words, low first.
    pub fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// Block `b`: the four words of elements `4b .. 4b + 4`.
    #[inline]
    pub fn block(&self, b: u64) -> [u32; 4] {
        philox4x32_10(
            [
                b as u32,
                (b >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ],
            self.key(),
        )
    }

    /// Element `i` of the `u32` stream.
    #[inline]
    pub fn bits(&self, i: u64) -> u32 {
        self.block(i / 4)[(i % 4) as usize]
    }

    /// Elements `offset .. offset + out.len()` of the `u32` stream (wrapping
    /// past `u64::MAX`, as the shader does).
    pub fn fill_bits(&self, offset: u64, out: &mut [u32]) {
        let mut i = offset;
        let mut k = 0;
        while k < out.len() {
            let block = self.block(i / 4);
            let lane = (i % 4) as usize;
            let take = (4 - lane).min(out.len() - k);
            out[k..k + take].copy_from_slice(&block[lane..lane + take]);
            k += take;
            i = i.wrapping_add(take as u64);
        }
    }

    /// Element `i` as a uniform in `[0, 1)` (see `uniform_from_bits`).
    pub fn uniform(&self, i: u64) -> f32 {
        uniform_from_bits(self.bits(i))
    }

    /// Element `i` of the normal stream, Box-Muller evaluated in `f64`:
    /// the reference the shader is held to.
    pub fn normal(&self, i: u64) -> f64 {
        box_muller_lane(self.block(i / 4), i % 4, radius_f64, cos_sin_turns_f64)
    }

    /// The four `f64` normals of block `b` (elements `4b .. 4b + 4`).
    pub(crate) fn normal_block(&self, b: u64) -> [f64; 4] {
        let x = self.block(b);
        let r0 = radius_f64(x[0]);
        let (c0, s0) = cos_sin_turns_f64(x[1]);
        let r1 = radius_f64(x[2]);
        let (c1, s1) = cos_sin_turns_f64(x[3]);
        [r0 * c0, r0 * s0, r1 * c1, r1 * s1]
    }

    /// Element `i` of the normal stream computed exactly as the shader does,
    /// operation by operation in `f32`: within a few ulps of [`Philox::normal`].
    pub fn normal_f32(&self, i: u64) -> f32 {
        box_muller_lane(self.block(i / 4), i % 4, radius_f32, cos_sin_turns_f32)
    }
}

/// `u1(x) = ((x >> 8) + 1) * 2^-24`, in `(0, 1]`.
#[inline]
pub(crate) fn box_muller_u1(x: u32) -> f64 {
    f64::from((x >> 8) + 1) * TWO_M24
}

/// Box-Muller radius `sqrt(-2 ln u1(x))` in `f64`.
#[inline]
pub(crate) fn radius_f64(x: u32) -> f64 {
    (-2.0 * box_muller_u1(x).ln()).sqrt()
}

/// Quadrant and remainder of the angle `t(x) = (x >> 8) * 2^-24` turns:
/// `t = (q + f) / 4` with `q` in `0..4` and `f` in `[-1/2, 1/2)`, exactly.
#[inline]
fn quarter_turns(x: u32) -> (u32, i32) {
    let j = (x >> 8) + 0x20_0000; // + 2^21 rounds to the nearest quarter turn
    let q = (j >> 22) & 3;
    let f = (j & 0x3F_FFFF) as i32 - 0x20_0000; // f * 2^22
    (q, f)
}

/// Rotate `(cos, sin)` of the remainder by `q` quarter turns.
#[inline]
fn rotate_quadrant<T: std::ops::Neg<Output = T>>(q: u32, c: T, s: T) -> (T, T) {
    match q {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    }
}

/// `(cos 2 pi t, sin 2 pi t)` for `t = (x >> 8) * 2^-24`, in `f64`, with the
/// same exact quadrant reduction as the shader (so exact zeros stay zeros).
#[inline]
pub(crate) fn cos_sin_turns_f64(x: u32) -> (f64, f64) {
    let (q, f) = quarter_turns(x);
    let a = f64::from(f) * (1.0 / 4_194_304.0) * std::f64::consts::FRAC_PI_2;
    rotate_quadrant(q, a.cos(), a.sin())
}

// The shader's constants. The test `shader_constants_match` checks that
// shaders/init.wgsl spells every one of them the same way, and
// `polynomial_coefficients` that each is the f32 rounding of its formula.

/// sqrt(2) rounded to f32 (which rounds down): the split point of the log's
/// mantissa. The shader spells it 1.4142135.
pub(crate) const SQRT2_F32: f32 = std::f32::consts::SQRT_2;
/// ln 2, high part with 16 significant bits (times an exponent |e| <= 24 is exact).
pub(crate) const LN2_HI: f32 = 0.693_145_75;
/// ln 2 - LN2_HI.
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;
/// atanh series: ln y = 2s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9), s = (y-1)/(y+1).
pub(crate) const ATANH_C3: f32 = 0.333_333_34;
/// 1/5.
pub(crate) const ATANH_C5: f32 = 0.2;
/// 1/7.
pub(crate) const ATANH_C7: f32 = 0.142_857_15;
/// 1/9.
pub(crate) const ATANH_C9: f32 = 0.111_111_11;
/// sin(pi/2 f) = f (S1 + f^2 (S3 + f^2 (S5 + f^2 (S7 + f^2 S9)))), S_k = ±(pi/2)^k / k!.
pub(crate) const SIN_S1: f32 = 1.570_796_4;
/// -(pi/2)^3 / 3!.
pub(crate) const SIN_S3: f32 = -0.645_964_1;
/// (pi/2)^5 / 5!.
pub(crate) const SIN_S5: f32 = 0.079_692_625;
/// -(pi/2)^7 / 7!.
pub(crate) const SIN_S7: f32 = -0.004_681_754;
/// (pi/2)^9 / 9!.
pub(crate) const SIN_S9: f32 = 0.000_160_441_18;
/// cos(pi/2 f) = 1 + f^2 (C2 + f^2 (C4 + f^2 (C6 + f^2 (C8 + f^2 C10)))).
pub(crate) const COS_C2: f32 = -1.233_700_5;
/// (pi/2)^4 / 4!.
pub(crate) const COS_C4: f32 = 0.253_669_5;
/// -(pi/2)^6 / 6!.
pub(crate) const COS_C6: f32 = -0.020_863_48;
/// (pi/2)^8 / 8!.
pub(crate) const COS_C8: f32 = 0.000_919_260_26;
/// -(pi/2)^10 / 10!.
pub(crate) const COS_C10: f32 = -2.520_204_2e-5;

/// Lane `lane` (0 to 3) of a block's two Box-Muller pairs: the radius of
/// word `2p` times the cosine (even lanes) or sine (odd lanes) of word `2p + 1`,
/// `p = lane / 2`.
fn box_muller_lane<T: std::ops::Mul<Output = T> + Copy>(
    x: [u32; 4],
    lane: u64,
    radius: impl Fn(u32) -> T,
    cos_sin: impl Fn(u32) -> (T, T),
) -> T {
    let pair = (lane / 2) as usize;
    let r = radius(x[2 * pair]);
    let (c, s) = cos_sin(x[2 * pair + 1]);
    if lane.is_multiple_of(2) {
        r * c
    } else {
        r * s
    }
}

/// Box-Muller radius in `f32`, operation for operation as `bm_radius` in the
/// shader: `u1 = y * 2^e` with `y` in `[sqrt(1/2), sqrt(2)]` taken from the
/// float's bits, `ln u1 = e ln 2 + 2 atanh((y - 1)/(y + 1))`.
#[inline]
pub(crate) fn radius_f32(x: u32) -> f32 {
    let m = (x >> 8) + 1; // 1 ..= 2^24, exact in f32
    (-2.0 * ln_times_pow2_f32(m as f32, -24)).sqrt()
}

/// `(cos 2 pi t, sin 2 pi t)` in `f32`, operation for operation as
/// `cos_sin_turns` in the shader.
#[inline]
pub(crate) fn cos_sin_turns_f32(x: u32) -> (f32, f32) {
    let (q, fi) = quarter_turns(x);
    let f = fi as f32 * (1.0 / 4_194_304.0);
    let f2 = f * f;
    let s = f * (SIN_S1 + f2 * (SIN_S3 + f2 * (SIN_S5 + f2 * (SIN_S7 + f2 * SIN_S9))));
    let c = 1.0 + f2 * (COS_C2 + f2 * (COS_C4 + f2 * (COS_C6 + f2 * (COS_C8 + f2 * COS_C10))));
    rotate_quadrant(q, c, s)
}

// The truncated normal (see `TruncNormalPlan`): the
// inverse normal CDF below 1/2, Wichura's AS241 (PPND16). Numerators and
// denominators as coefficient lists, constant term first; the shader holds
// the f32 roundings of the same lists (checked by `shader_constants_match`).
// The digits are Wichura's, as published (more than f64 holds).

/// AS241 central region (|p - 1/2| <= 0.425): numerator in `r = 0.180625 - q^2`.
#[allow(clippy::excessive_precision)]
pub(crate) const PPND_A: [f64; 8] = [
    3.387_132_872_796_366_608,
    133.141_667_891_784_377_45,
    1_971.590_950_306_551_442_7,
    13_731.693_765_509_461_125,
    45_921.953_931_549_871_457,
    67_265.770_927_008_700_853,
    33_430.575_583_588_128_105,
    2_509.080_928_730_122_672_7,
];
/// AS241 central region: denominator.
#[allow(clippy::excessive_precision)]
pub(crate) const PPND_B: [f64; 8] = [
    1.0,
    42.313_330_701_600_911_252,
    687.187_007_492_057_908_3,
    5_394.196_021_424_751_107_7,
    21_213.794_301_586_595_867,
    39_307.895_800_092_710_61,
    28_729.085_735_721_942_674,
    5_226.495_278_852_854_561,
];
/// AS241 intermediate tail (`r = sqrt(-ln p) <= 5`): numerator in `r - 1.6`.
#[allow(clippy::excessive_precision)]
pub(crate) const PPND_C: [f64; 8] = [
    1.423_437_110_749_683_577_34,
    4.630_337_846_156_545_295_9,
    5.769_497_221_460_691_405_5,
    3.647_848_324_763_204_605_04,
    1.270_458_252_452_368_382_58,
    0.241_780_725_177_450_611_77,
    0.022_723_844_989_269_184_583_3,
    7.745_450_142_783_414_076_4e-4,
];
/// AS241 intermediate tail: denominator.
#[allow(clippy::excessive_precision)]
pub(crate) const PPND_D: [f64; 8] = [
    1.0,
    2.053_191_626_637_758_821_87,
    1.676_384_830_183_803_849_4,
    0.689_767_334_985_100_004_55,
    0.148_103_976_427_480_074_59,
    0.015_198_666_563_616_457_196_6,
    5.475_938_084_995_344_946e-4,
    1.050_750_071_644_416_843_24e-9,
];
/// AS241 far tail (`r > 5`): numerator in `r - 5`.
#[allow(clippy::excessive_precision)]
pub(crate) const PPND_E: [f64; 8] = [
    6.657_904_643_501_103_777_2,
    5.463_784_911_164_114_369_9,
    1.784_826_539_917_291_335_8,
    0.296_560_571_828_504_891_23,
    0.026_532_189_526_576_123_093,
    0.001_242_660_947_388_078_438_6,
    2.711_555_568_743_487_578_15e-5,
    2.010_334_399_292_288_132_65e-7,
];
/// AS241 far tail: denominator.
#[allow(clippy::excessive_precision)]
pub(crate) const PPND_F: [f64; 8] = [
    1.0,
    0.599_832_206_555_887_937_69,
    0.136_929_880_922_735_805_31,
    0.014_875_361_290_850_614_852_5,
    7.868_691_311_456_132_591e-4,
    1.846_318_317_510_054_681_8e-5,
    1.421_511_758_316_445_888_7e-7,
    2.044_263_103_389_939_785_64e-15,
];

/// The uniform of a truncated-normal draw: `u = (2 (x >> 9) + 1) * 2^-24`,
/// the midpoint of one of 2^23 cells, so `0 < u < 1`; `u` and `1 - u` are
/// exact in f32.
#[inline]
pub(crate) fn trunc_uniform_f32(x: u32) -> (f32, f32) {
    let k = 2 * (x >> 9) + 1; // odd, < 2^24
    (
        k as f32 * (1.0 / 16_777_216.0),
        (16_777_216 - k) as f32 * (1.0 / 16_777_216.0),
    )
}

/// The arithmetic AS241's quantile takes, in f64 (the twin's) and in f32
/// (the shader's, operation for operation), so the algorithm is written once.
trait Ppnd:
    Copy
    + PartialOrd
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// A constant (each of AS241's is exact or nearest in both types).
    fn lit(v: f64) -> Self;
    /// The polynomial with coefficients `c` (lowest first) at `r`.
    fn horner(c: &[f64; 8], r: Self) -> Self;
    /// `sqrt(-ln p)`.
    fn tail_radius(p: Self) -> Self;
}

impl Ppnd for f64 {
    fn lit(v: f64) -> f64 {
        v
    }
    fn horner(c: &[f64; 8], r: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * r + k)
    }
    fn tail_radius(p: f64) -> f64 {
        (-p.ln()).sqrt()
    }
}

impl Ppnd for f32 {
    fn lit(v: f64) -> f32 {
        v as f32
    }
    fn horner(c: &[f64; 8], r: f32) -> f32 {
        let mut acc = c[7] as f32;
        for &k in c[..7].iter().rev() {
            acc = acc * r + k as f32;
        }
        acc
    }
    fn tail_radius(p: f32) -> f32 {
        (-ln_f32(p)).sqrt()
    }
}

/// `Phi^-1(p)` for `0 < p <= 1/2` (AS241's lower half).
fn norm_ppf_lower<T: Ppnd>(p: T) -> T {
    let q = p - T::lit(0.5);
    if q >= T::lit(-0.425) {
        let r = T::lit(0.180_625) - q * q;
        return q * T::horner(&PPND_A, r) / T::horner(&PPND_B, r);
    }
    let r = T::tail_radius(p);
    if r <= T::lit(5.0) {
        let r = r - T::lit(1.6);
        -(T::horner(&PPND_C, r) / T::horner(&PPND_D, r))
    } else {
        let r = r - T::lit(5.0);
        -(T::horner(&PPND_E, r) / T::horner(&PPND_F, r))
    }
}

/// `Phi^-1(p)` for `0 < p <= 1/2` in f64 (AS241's lower half).
pub fn norm_ppf_lower_f64(p: f64) -> f64 {
    norm_ppf_lower(p)
}

/// `ln v` of a positive normal f32, as the shader computes it: `v = y * 2^e`
/// with `y` in `[sqrt(1/2), sqrt(2)]` from the float's bits, `ln v = e ln 2 +
/// 2 atanh((y - 1) / (y + 1))` (the series of [`radius_f32`]).
#[inline]
pub(crate) fn ln_f32(v: f32) -> f32 {
    ln_times_pow2_f32(v, 0)
}

/// `ln (v * 2^p)` of a positive normal f32 `v`: [`ln_f32`]'s series with
/// `p` added to the exponent before it is multiplied by `ln 2` (so
/// [`radius_f32`]'s `ln (m 2^-24)` rounds as the shader's does).
#[inline]
fn ln_times_pow2_f32(v: f32, p: i32) -> f32 {
    let bits = v.to_bits();
    let mut e = (bits >> 23) as i32 - 127 + p;
    let mut y = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    if y > SQRT2_F32 {
        y *= 0.5;
        e += 1;
    }
    let s = (y - 1.0) / (y + 1.0);
    let s2 = s * s;
    let q = s2 * (ATANH_C3 + s2 * (ATANH_C5 + s2 * (ATANH_C7 + s2 * ATANH_C9)));
    let two_s = 2.0 * s;
    let ln_y = two_s + two_s * q;
    let ef = e as f32;
    ef * LN2_HI + (ef * LN2_LO + ln_y)
}

/// [`norm_ppf_lower_f64`] in f32, operation for operation as the shader.
pub fn norm_ppf_lower_f32(p: f32) -> f32 {
    norm_ppf_lower(p)
}

/// A truncated-normal value from the stream word `x` in f64 (the CPU twin's;
/// see [`TruncNormalPlan`] for the rule).
pub(crate) fn trunc_normal_f64(x: u32, plan: &TruncNormalPlan) -> f64 {
    let (u, v) = trunc_uniform_f32(x);
    let (u, v) = (f64::from(u), f64::from(v));
    let p = plan.cdf_low + u * plan.mass;
    let q = plan.sf_high + v * plan.mass;
    let z = if p <= q {
        norm_ppf_lower_f64(p)
    } else {
        -norm_ppf_lower_f64(q)
    };
    (plan.mean + plan.std * z).clamp(plan.low, plan.high)
}

/// `trunc_normal_f64` in f32, operation for operation as the shader, from
/// the plan's values rounded to f32.
pub fn trunc_normal_f32(x: u32, plan: &TruncNormalPlan) -> f32 {
    let (u, v) = trunc_uniform_f32(x);
    let p = plan.cdf_low as f32 + u * plan.mass as f32;
    let q = plan.sf_high as f32 + v * plan.mass as f32;
    let z = if p <= q {
        norm_ppf_lower_f32(p)
    } else {
        -norm_ppf_lower_f32(q)
    };
    (plan.mean as f32 + plan.std as f32 * z).clamp(plan.low as f32, plan.high as f32)
}

/// The distance in units in the last place between two `f32`s (0 for
/// `+0` vs `-0`; `u32::MAX` if either is NaN).
pub fn ulp_distance(a: f32, b: f32) -> u32 {
    if a.is_nan() || b.is_nan() {
        return u32::MAX;
    }
    fn ordered(v: f32) -> i64 {
        let b = v.to_bits() as i32;
        if b < 0 {
            -i64::from(b & 0x7FFF_FFFF)
        } else {
            i64::from(b)
        }
    }
    (ordered(a) - ordered(b)).unsigned_abs().min(u64::from(u32::MAX)) as u32
}

/// A truncated normal, ready to sample: `N(mean, std^2)` conditioned on
/// `[low, high]`, by the inverse CDF of the standard normal `Phi`.
///
/// With `alpha = (low - mean) / std`, `beta = (high - mean) / std`, the plan
/// holds `cdf_low = Phi(alpha)`, `sf_high = 1 - Phi(beta) = Phi(-beta)` and
/// `mass = Phi(beta) - Phi(alpha)`, each computed in f64 on its own tail (so
/// none is the difference of two numbers near 1). Element `i` of the stream
/// (a `u32` word `x`) becomes, with `u = (2 (x >> 9) + 1) * 2^-24` (23 bits,
/// the midpoint of a cell: `0 < u < 1`, and `u` and `1 - u` exact in f32):
///
/// ```text
/// p = cdf_low + u * mass          (the lower-tail probability of the value)
/// q = sf_high + (1 - u) * mass    (its upper-tail probability; p + q = 1)
/// z = Phi^-1(p) if p <= q, else -Phi^-1(q)
/// value = clamp(mean + std * z, low, high)
/// ```
///
/// so `Phi^-1` is only evaluated at a probability of at most 1/2, in full
/// relative precision even deep in a tail, by Wichura's AS241 (PPND16,
/// relative error about 1e-16 in f64; the shader evaluates the same rational
/// functions in f32). See `trunc_normal_f64`. PyTorch draws
/// `erfinv` of a uniform instead; the distribution is the same, the numbers
/// (from another generator) are not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruncNormalPlan {
    /// Mean of the untruncated normal.
    pub mean: f64,
    /// Its standard deviation.
    pub std: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// `Phi((low - mean) / std)`.
    pub cdf_low: f64,
    /// `1 - Phi((high - mean) / std)`.
    pub sf_high: f64,
    /// `Phi((high - mean) / std) - Phi((low - mean) / std)`: the probability of `[low, high]`.
    pub mass: f64,
}

/// The standard normal's CDF, `Phi(z) = erfc(-z / sqrt 2) / 2`.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Smallest probability of `[low, high]` a truncated normal accepts: below it
/// the tail probabilities would leave f32's normal range on the GPU.
pub const TRUNC_NORMAL_MIN_MASS: f64 = 1e-20;

impl TruncNormalPlan {
    /// Checks the arguments and computes the tail probabilities.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] unless mean, std, low and high are finite in
    /// f32, `std > 0`, `low < high`, and the interval holds a probability of
    /// at least [`TRUNC_NORMAL_MIN_MASS`] (about 9 standard deviations into a tail).
    pub fn new(mean: f64, std: f64, low: f64, high: f64) -> crate::Result<Self> {
        for (name, v) in [("mean", mean), ("std", std), ("low (a)", low), ("high (b)", high)] {
            if !(v.is_finite() && (v as f32).is_finite()) {
                return Err(crate::Error::invalid(
                    "init",
                    format!("trunc_normal: {name} must be finite in f32, got {v}"),
                ));
            }
        }
        if !(std > 0.0 && (std as f32) > 0.0) {
            return Err(crate::Error::invalid(
                "init",
                format!("trunc_normal: std must be > 0, got {std}"),
            ));
        }
        if low >= high {
            return Err(crate::Error::invalid(
                "init",
                format!("trunc_normal: needs low < high, got {low} >= {high}"),
            ));
        }
        let (alpha, beta) = ((low - mean) / std, (high - mean) / std);
        let cdf_low = norm_cdf(alpha);
        let sf_high = norm_cdf(-beta);
        let mass = if beta <= 0.0 {
            norm_cdf(beta) - cdf_low
        } else if alpha >= 0.0 {
            norm_cdf(-alpha) - sf_high
        } else {
            1.0 - cdf_low - sf_high
        };
        if mass.is_nan() || mass < TRUNC_NORMAL_MIN_MASS {
            return Err(crate::Error::invalid(
                "init",
                format!(
                    "trunc_normal: [{low}, {high}] has probability {mass:e} under N({mean}, {std}^2), \
                 below {TRUNC_NORMAL_MIN_MASS:e}: too far in the tail to sample in f32"
                ),
            ));
        }
        Ok(TruncNormalPlan {
            mean,
            std,
            low,
            high,
            cdf_low,
            sf_high,
            mass,
        })
    }

    /// The distribution's mean and variance (the moments of the truncated
    /// normal): with `Z = mass` and `phi` the standard normal density,
    /// `mean + std * (phi(alpha) - phi(beta)) / Z` and
    /// `std^2 * (1 + (alpha phi(alpha) - beta phi(beta)) / Z - ((phi(alpha) - phi(beta)) / Z)^2)`.
    pub fn moments(&self) -> (f64, f64) {
        let phi = |z: f64| (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let (a, b) = (
            (self.low - self.mean) / self.std,
            (self.high - self.mean) / self.std,
        );
        let z = self.mass;
        let d = (phi(a) - phi(b)) / z;
        (
            self.mean + self.std * d,
            self.std * self.std * (1.0 + (a * phi(a) - b * phi(b)) / z - d * d),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 `tests/kat_vectors`, the `philox4x32 10` lines:
    /// counter (4 words), key (2 words), expected (4 words).
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0, 0, 0, 0],
            [0, 0],
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
        ),
    ];

    #[test]
    fn philox_known_answers() {
        for (ctr, key, want) in KAT {
            assert_eq!(philox4x32_10(ctr, key), want, "ctr {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn stream_layout_is_the_documented_counter() {
        let p = Philox::with_stream(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        let i: u64 = (5u64 << 34) + 4 * 77 + 3;
        let b = i / 4;
        let want = philox4x32_10(
            [b as u32, (b >> 32) as u32, 0x7654_3210, 0xfedc_ba98],
            [0x89ab_cdef, 0x0123_4567],
        )[3];
        assert_eq!(p.bits(i), want);
    }

    #[test]
    fn any_chunking_gives_the_same_stream() {
        let p = Philox::with_stream(42, 7);
        let mut whole = vec![0u32; 1000];
        p.fill_bits(13, &mut whole);
        for (k, w) in whole.iter().enumerate() {
            assert_eq!(*w, p.bits(13 + k as u64));
        }
        let mut pieces = vec![0u32; 1000];
        let mut start = 0;
        for len in [1usize, 2, 3, 5, 7, 11, 64, 250, 657] {
            p.fill_bits(13 + start as u64, &mut pieces[start..start + len]);
            start += len;
        }
        assert_eq!(start, 1000);
        assert_eq!(whole, pieces);
    }

    /// The shader computes mulhi with 16-bit halves (WGSL has no 64-bit
    /// integers); the same algorithm here, against the u64 product.
    fn mulhilo_16(a: u32, b: u32) -> (u32, u32) {
        let (al, ah, bl, bh) = (a & 0xffff, a >> 16, b & 0xffff, b >> 16);
        let ll = al * bl;
        let lh = al * bh;
        let hl = ah * bl;
        let hh = ah * bh;
        let mid = (ll >> 16) + (lh & 0xffff) + (hl & 0xffff);
        let hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
        (hi, a.wrapping_mul(b))
    }

    #[test]
    fn sixteen_bit_mulhi_matches() {
        let p = Philox::new(3);
        let mut xs = vec![0u32; 200_000];
        p.fill_bits(0, &mut xs);
        xs.extend([0, 1, 0xffff, 0x1_0000, u32::MAX, u32::MAX - 1, 0x8000_0000]);
        for w in xs.windows(2) {
            assert_eq!(mulhilo_16(w[0], w[1]), mulhilo(w[0], w[1]));
        }
        for m in [PHILOX_M0, PHILOX_M1] {
            for &x in &xs {
                assert_eq!(mulhilo_16(m, x), mulhilo(m, x));
            }
        }
    }

    /// shaders/init.wgsl spells every shared constant as this file does.
    #[test]
    fn shader_constants_match() {
        let wgsl = include_str!("../shaders/init.wgsl");
        let lookup = |name: &str| -> f32 {
            let start = format!("const {name}: f32 = ");
            let line = wgsl
                .lines()
                .find_map(|l| l.trim().strip_prefix(start.as_str()))
                .unwrap_or_else(|| panic!("{name} missing from the shader"));
            line.trim_end_matches(';').parse().unwrap()
        };
        let ours = [
            ("SQRT2_F32", SQRT2_F32),
            ("LN2_HI", LN2_HI),
            ("LN2_LO", LN2_LO),
            ("ATANH_C3", ATANH_C3),
            ("ATANH_C5", ATANH_C5),
            ("ATANH_C7", ATANH_C7),
            ("ATANH_C9", ATANH_C9),
            ("SIN_S1", SIN_S1),
            ("SIN_S3", SIN_S3),
            ("SIN_S5", SIN_S5),
            ("SIN_S7", SIN_S7),
            ("SIN_S9", SIN_S9),
            ("COS_C2", COS_C2),
            ("COS_C4", COS_C4),
            ("COS_C6", COS_C6),
            ("COS_C8", COS_C8),
            ("COS_C10", COS_C10),
        ];
        for (name, v) in ours {
            assert_eq!(lookup(name).to_bits(), v.to_bits(), "{name}");
        }
        for (name, v) in [
            ("PHILOX_M0", PHILOX_M0),
            ("PHILOX_M1", PHILOX_M1),
            ("PHILOX_W0", PHILOX_W0),
            ("PHILOX_W1", PHILOX_W1),
            ("SPARSE_TAG", crate::model::init::SPARSE_TAG),
        ] {
            assert!(
                wgsl.contains(&format!("const {name}: u32 = 0x{v:08X}u;")),
                "{name}"
            );
        }
        // AS241's coefficients: the shader's f32 arrays are the f32 roundings of ours
        for (name, c) in [
            ("PPND_A", PPND_A),
            ("PPND_B", PPND_B),
            ("PPND_C", PPND_C),
            ("PPND_D", PPND_D),
            ("PPND_E", PPND_E),
            ("PPND_F", PPND_F),
        ] {
            let start = format!("const {name} = array<f32, 8>(");
            let body = wgsl
                .split(start.as_str())
                .nth(1)
                .and_then(|r| r.split(')').next())
                .unwrap_or_else(|| panic!("{name} missing from the shader"));
            let got: Vec<u32> = body
                .split(',')
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<f32>().unwrap().to_bits())
                .collect();
            let want: Vec<u32> = c.iter().map(|&v| (v as f32).to_bits()).collect();
            assert_eq!(got, want, "{name}");
        }
        let rounds = crate::cpu::init::FEISTEL_ROUNDS;
        assert!(wgsl.contains(&format!("const FEISTEL_ROUNDS: u32 = {rounds}u;")));
    }

    #[test]
    fn polynomial_coefficients() {
        use std::f64::consts::{FRAC_PI_2, LN_2, SQRT_2};
        let fact = |k: i32| (1..=k).map(f64::from).product::<f64>();
        let term = |k: i32, sign: f64| (sign * FRAC_PI_2.powi(k) / fact(k)) as f32;
        assert_eq!(SIN_S1, term(1, 1.0));
        assert_eq!(SIN_S3, term(3, -1.0));
        assert_eq!(SIN_S5, term(5, 1.0));
        assert_eq!(SIN_S7, term(7, -1.0));
        assert_eq!(SIN_S9, term(9, 1.0));
        assert_eq!(COS_C2, term(2, -1.0));
        assert_eq!(COS_C4, term(4, 1.0));
        assert_eq!(COS_C6, term(6, -1.0));
        assert_eq!(COS_C8, term(8, 1.0));
        assert_eq!(COS_C10, term(10, -1.0));
        assert_eq!(ATANH_C3, (1.0f64 / 3.0) as f32);
        assert_eq!(ATANH_C5, (1.0f64 / 5.0) as f32);
        assert_eq!(ATANH_C7, (1.0f64 / 7.0) as f32);
        assert_eq!(ATANH_C9, (1.0f64 / 9.0) as f32);
        assert!(f64::from(SQRT2_F32) < SQRT_2 && f64::from(f32::from_bits(SQRT2_F32.to_bits() + 1)) > SQRT_2);
        assert_eq!(LN2_HI.to_bits() & 0xff, 0, "LN2_HI must have spare low bits");
        assert_eq!(LN2_LO, (LN_2 - f64::from(LN2_HI)) as f32);
    }

    /// Every one of the 2^24 radius inputs and every one of the 2^24 angles
    /// (every 17th in an unoptimized build): the shader's f32 arithmetic
    /// against f64. Measured exhaustively: radius 1 ulp, cos/sin 2 ulp.
    #[test]
    fn f32_transform_is_within_a_few_ulps_exhaustively() {
        let stride = if cfg!(debug_assertions) { 17 } else { 1 };
        let mut worst_r = 0;
        let mut worst_c = 0;
        for k in (0u32..(1 << 24)).step_by(stride) {
            let x = k << 8;
            let r = radius_f32(x);
            let r64 = radius_f64(x);
            worst_r = worst_r.max(ulp_distance(r, r64 as f32));
            let (c, s) = cos_sin_turns_f32(x);
            let (c64, s64) = cos_sin_turns_f64(x);
            worst_c = worst_c
                .max(ulp_distance(c, c64 as f32))
                .max(ulp_distance(s, s64 as f32));
        }
        eprintln!("worst radius error {worst_r} ulp, worst cos/sin error {worst_c} ulp");
        assert!(worst_r <= 2, "radius {worst_r} ulp");
        assert!(worst_c <= 2, "cos/sin {worst_c} ulp");
    }

    #[test]
    fn extremes_of_the_transform() {
        // u1 = 1 (x >> 8 = 2^24 - 1): radius 0. u1 = 2^-24: the largest radius.
        assert_eq!(radius_f32(u32::MAX), 0.0);
        assert_eq!(radius_f64(u32::MAX), 0.0);
        let rmax = (48.0 * std::f64::consts::LN_2).sqrt();
        assert!((radius_f64(0) - rmax).abs() < 1e-12);
        assert!(ulp_distance(radius_f32(0), rmax as f32) <= 1);
        // Quarter turns are exact.
        assert_eq!(cos_sin_turns_f32(0), (1.0, 0.0));
        let (c, s) = cos_sin_turns_f32(1 << 30); // t = 1/4
        assert_eq!((c, s), (-0.0, 1.0));
        assert_eq!(cos_sin_turns_f64(1 << 30), (-0.0, 1.0));
        assert_eq!(cos_sin_turns_f32(2 << 30), (-1.0, -0.0));
        assert_eq!(cos_sin_turns_f32(3 << 30), (0.0, -1.0));
    }

    #[test]
    fn uniform_rule() {
        assert_eq!(uniform_from_bits(0), 0.0);
        assert_eq!(uniform_from_bits(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
        assert_eq!(uniform_from_bits(0x8000_0000), 0.5);
        assert_eq!(centered_from_bits(0), -1.0);
        assert_eq!(centered_from_bits(0x8000_0000), 0.0);
        assert_eq!(centered_from_bits(u32::MAX), 1.0 - 1.0 / 8_388_608.0);
        for x in [1u32, 255, 256, 0x1234_5678, 0xdead_beef, u32::MAX] {
            assert_eq!(centered_from_bits(x), 2.0 * uniform_from_bits(x) - 1.0);
        }
    }

    #[test]
    fn ulp_distance_basics() {
        assert_eq!(ulp_distance(1.0, 1.0), 0);
        assert_eq!(ulp_distance(0.0, -0.0), 0);
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
        assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulp_distance(f32::NAN, 1.0), u32::MAX);
    }
}
