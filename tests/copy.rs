//! copy: bit-exact device copies (the input is its own twin).

mod common;

use common::{gpu, normal, SHAPES};
use gpuprep::{ops, GpuMatrix};
use ndarray::Array2;

/// Special values whose bits a copy must keep: NaN payloads, -0, infinities,
/// subnormals, the extremes.
fn specials(n: usize, d: usize) -> Array2<f32> {
    let bits = [
        0x7fc0_0001u32, // quiet NaN with a payload
        0xffbf_ffff,    // negative NaN, other payload
        0x8000_0000,    // -0.0
        0x7f80_0000,    // +inf
        0xff80_0000,    // -inf
        0x0000_0001,    // smallest subnormal
        0x807f_ffff,    // largest negative subnormal
        0x7f7f_ffff,    // f32::MAX
        0x3f80_0000,    // 1.0
    ];
    Array2::from_shape_fn((n, d), |(i, j)| f32::from_bits(bits[(i * d + j) % bits.len()]))
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn copies_every_bit_on_awkward_shapes() {
    let g = gpu();
    for (i, &(n, d)) in SHAPES
        .iter()
        .chain(&[(1, 3), (3, 1), (5, 4), (7, 12)])
        .enumerate()
    {
        for x in [normal(n, d, 1e4, 1.0, 70 + i as u64), specials(n, d)] {
            let xg = GpuMatrix::upload(g, x.view()).unwrap();
            let out = GpuMatrix::filled(g, n, d, f32::NAN).unwrap();
            let mut enc = g.encoder("test");
            ops::encode_copy_into(g, &mut enc, &xg, &out).unwrap();
            g.submit("test", enc).unwrap();
            assert_eq!(bits(&out.download(g).unwrap()), bits(&x), "{n}x{d}");
            // The convenience form, and the input left alone.
            let y = ops::copy(g, &xg).unwrap();
            assert_eq!(bits(&y.download(g).unwrap()), bits(&x), "{n}x{d} (copy)");
            assert_eq!(bits(&xg.download(g).unwrap()), bits(&x), "{n}x{d} (input)");
        }
    }
}

#[test]
fn empty_matrix_is_a_no_op() {
    let g = gpu();
    let x = GpuMatrix::uninit(g, 0, 5).unwrap();
    assert_eq!(ops::copy(g, &x).unwrap().shape(), (0, 5));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    common::refuses_wrong_and_aliased_outputs(ops::encode_copy_into, 4, 3);
}

#[test]
fn more_elements_than_one_grid_row_holds() {
    // 4097 x 4097 elements, not a multiple of 4: one thread each needs 65568
    // workgroups of 256, past the 65535 of one dispatch dimension, so the
    // grid is 2-D and the tail of its last row idle.
    let g = gpu();
    let (n, d) = (4097, 4097);
    assert!(
        (n * d * 4) as u64 <= g.max_binding_bytes(),
        "adapter bindings too small"
    );
    let x = Array2::from_shape_fn((n, d), |(i, j)| (i * d + j) as f32);
    let xg = GpuMatrix::upload(g, x.view()).unwrap();
    let out = GpuMatrix::filled(g, n, d, f32::NAN).unwrap();
    let mut enc = g.encoder("test");
    ops::encode_copy_into(g, &mut enc, &xg, &out).unwrap();
    g.submit("test", enc).unwrap();
    assert_eq!(bits(&out.download(g).unwrap()), bits(&x));
}
