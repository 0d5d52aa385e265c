//! The weighted and the sparse NaN-skipping column moments of the host path
//! (`host::column_moments_skip_nan_weighted`,
//! `host::sparse_column_moments_skip_nan`) against an oracle written here in
//! the plainest f64 (the definition: weighted sums, then squared deviations,
//! each value read from the dense matrix), on seeded data: shapes that do
//! and do not divide the blocks, tasks, column tiles and sparse chunks, NaN,
//! zero weights, large offsets, constant columns, and bad input.

use gpuprep::host::{self, Csr};
use gpuprep::{Error, WeightedMoments};
use ndarray::{s, Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

mod common;

use common::HOST_SHAPES as SHAPES;

/// The definition, from the dense matrix (NaN skipped).
fn oracle(x: &Array2<f64>, w: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = x.ncols();
    let (mut weight, mut mean, mut m2) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
    for c in 0..d {
        let vals: Vec<(f64, f64)> = x
            .column(c)
            .iter()
            .zip(w)
            .filter(|(v, _)| !v.is_nan())
            .map(|(&v, &w)| (v, w))
            .collect();
        let wt: f64 = vals.iter().map(|p| p.1).sum();
        weight[c] = wt;
        if wt > 0.0 {
            mean[c] = vals.iter().map(|p| p.1 * p.0).sum::<f64>() / wt;
            m2[c] = vals.iter().map(|p| p.1 * (p.0 - mean[c]).powi(2)).sum();
        }
    }
    (weight, mean, m2)
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Offset + N(0, 1), a share `nan` of NaN, a share `zero` of exact zeros.
fn data(n: usize, d: usize, offset: f64, nan: f64, zero: f64, seed: u64) -> Array2<f64> {
    let mut r = rng(seed);
    Array2::from_shape_simple_fn((n, d), || {
        let u: f64 = r.random();
        let z: f64 = StandardNormal.sample(&mut r);
        if u < nan {
            f64::NAN
        } else if u < nan + zero {
            0.0
        } else {
            offset + z
        }
    })
}

/// Weights in [0, 3), a quarter of them 0.
fn weights(n: usize, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let u: f64 = r.random();
            if u < 0.25 {
                0.0
            } else {
                3.0 * r.random::<f64>()
            }
        })
        .collect()
}

/// A borrowed CSR matrix.
fn csr_of<'a, T, I>(
    shape: (usize, usize),
    indptr: &'a [usize],
    indices: &'a [I],
    data: &'a [T],
) -> Csr<'a, T, I> {
    Csr {
        shape,
        indptr,
        indices,
        data,
    }
}

/// The CSR form of `x` (its zeros unstored).
fn csr(x: &Array2<f64>) -> (Vec<usize>, Vec<i32>, Vec<f64>) {
    let (mut indptr, mut indices, mut data) = (vec![0usize], vec![], vec![]);
    for row in x.rows() {
        for (c, &v) in row.iter().enumerate() {
            if v != 0.0 {
                indices.push(c as i32);
                data.push(v);
            }
        }
        indptr.push(data.len());
    }
    (indptr, indices, data)
}

fn close(got: &WeightedMoments, want: &(Vec<f64>, Vec<f64>, Vec<f64>), offset: f64, what: &str) {
    for c in 0..want.0.len() {
        let (w, m, q) = (want.0[c], want.1[c], want.2[c]);
        assert!(
            (got.weight[c] - w).abs() <= 1e-12 * w.max(1.0),
            "{what} column {c}: weight {} vs {w}",
            got.weight[c]
        );
        let scale = offset.abs().max(1.0);
        assert!(
            (got.mean[c] - m).abs() <= 1e-12 * scale,
            "{what} column {c}: mean {} vs {m}",
            got.mean[c]
        );
        // M2 about the mean: relative to itself (plus the weight's rounding).
        assert!(
            (got.m2[c] - q).abs() <= 1e-9 * q + 1e-12 * w,
            "{what} column {c}: m2 {} vs {q}",
            got.m2[c]
        );
    }
}

#[test]
fn weighted_dense_moments_equal_the_definition() {
    for (i, &(n, d)) in SHAPES.iter().enumerate() {
        for offset in [0.0, 1e4] {
            let x = data(n, d, offset, 0.1, 0.0, i as u64);
            let w = weights(n, 100 + i as u64);
            let want = oracle(&x, &w);
            let wv = Array1::from(w.clone());
            let got = host::column_moments_skip_nan_weighted(x.view(), wv.view()).unwrap();
            close(&got, &want, offset, &format!("f64 {n} x {d} offset {offset}"));
            // f32 input: the same sums of its (widened) values.
            let x32 = x.mapv(|v| v as f32);
            let got = host::column_moments_skip_nan_weighted(x32.view(), wv.view()).unwrap();
            close(
                &got,
                &oracle(&x32.mapv(|v| v as f64), &w),
                offset,
                &format!("f32 {n} x {d}"),
            );
            // Not in standard layout: the transpose of a transpose's copy.
            let t = x.t().to_owned();
            let got = host::column_moments_skip_nan_weighted(t.t(), wv.view()).unwrap();
            close(&got, &want, offset, &format!("transposed {n} x {d}"));
        }
    }
}

#[test]
fn unit_weights_equal_the_nan_skipping_moments() {
    let x = data(4099, 70, 1e3, 0.05, 0.0, 7);
    let ones = Array1::from_elem(4099, 1.0);
    let a = host::column_moments_skip_nan_weighted(x.view(), ones.view()).unwrap();
    let b = host::column_moments_skip_nan(x.view());
    for c in 0..70 {
        assert_eq!(a.weight[c], b.count[c] as f64);
        assert!((a.mean[c] - b.mean[c]).abs() <= 1e-12 * 1e3, "column {c}");
        assert!((a.m2[c] - b.m2[c]).abs() <= 1e-9 * b.m2[c], "column {c}");
    }
}

#[test]
fn sparse_moments_equal_the_definition_with_and_without_weights() {
    for (i, &(n, d)) in SHAPES.iter().chain(&[(300_000, 3), (50, 40_000)]).enumerate() {
        for offset in [0.0, 1e4] {
            // Mostly zeros, some NaN stored, values about the offset.
            let x = data(n, d, offset, 0.02, 0.8, 40 + i as u64);
            let (indptr, indices, vals) = csr(&x);
            let m = csr_of((n, d), &indptr, &indices, &vals);
            let ones = vec![1.0; n];
            let got = host::sparse_column_moments_skip_nan(m, None).unwrap();
            close(
                &got,
                &oracle(&x, &ones),
                offset,
                &format!("sparse {n} x {d} offset {offset}"),
            );
            let w = weights(n, 90 + i as u64);
            let wv = Array1::from(w.clone());
            let got = host::sparse_column_moments_skip_nan(m, Some(wv.view())).unwrap();
            close(
                &got,
                &oracle(&x, &w),
                offset,
                &format!("weighted sparse {n} x {d}"),
            );
            // f32 values and i64 indices.
            let v32: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
            let i64s: Vec<i64> = indices.iter().map(|&c| c as i64).collect();
            let m32 = csr_of((n, d), &indptr, &i64s, &v32);
            let got = host::sparse_column_moments_skip_nan(m32, Some(wv.view())).unwrap();
            let x32 = x.mapv(|v| v as f32 as f64);
            close(&got, &oracle(&x32, &w), offset, &format!("f32 sparse {n} x {d}"));
        }
    }
}

#[test]
fn sparse_and_dense_moments_agree_on_a_fully_stored_matrix() {
    // Every value stored (no zeros): the sparse path's zero correction must
    // add nothing, exactly, even where the weights' two sums round apart.
    let x = data(5000, 30, 1e4, 0.0, 0.0, 3);
    let (indptr, indices, vals) = csr(&x);
    let w = Array1::from(weights(5000, 4).iter().map(|v| v + 0.1).collect::<Vec<_>>());
    let m = csr_of((5000, 30), &indptr, &indices, &vals);
    let a = host::sparse_column_moments_skip_nan(m, Some(w.view())).unwrap();
    let b = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap();
    for c in 0..30 {
        assert!((a.mean[c] - b.mean[c]).abs() <= 1e-12 * 1e4);
        assert!((a.m2[c] - b.m2[c]).abs() <= 1e-9 * b.m2[c]);
    }
}

#[test]
fn a_column_of_one_value_has_that_mean_and_no_spread_exactly() {
    for n in [1usize, 7, 100, 70_001] {
        let mut x = data(n, 4, 0.0, 0.0, 0.0, 5);
        x.column_mut(1).fill(1e-10);
        x.column_mut(2).fill(-123.456);
        x.column_mut(3).fill(0.1);
        x[[0, 3]] = f64::NAN;
        let w = Array1::from(weights(n, 6).iter().map(|v| v + 0.5).collect::<Vec<_>>());
        let m = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap();
        for (c, v) in [(1, 1e-10), (2, -123.456)] {
            assert_eq!((m.mean[c], m.m2[c]), (v, 0.0), "n = {n}, column {c}");
        }
        if n > 1 {
            assert_eq!((m.mean[3], m.m2[3]), (0.1, 0.0), "n = {n}");
        }
        // Sparse: a column stored in every row with one value, and a column
        // of zeros and NaN only.
        let mut y = x.clone();
        y.column_mut(0).fill(0.0);
        y[[0, 0]] = f64::NAN;
        let (indptr, indices, vals) = csr(&y);
        let sm = csr_of((n, 4), &indptr, &indices, &vals);
        let m = host::sparse_column_moments_skip_nan(sm, Some(w.view())).unwrap();
        assert_eq!((m.mean[1], m.m2[1]), (1e-10, 0.0), "n = {n}");
        assert_eq!((m.mean[2], m.m2[2]), (-123.456, 0.0), "n = {n}");
        assert_eq!((m.mean[0], m.m2[0]), (0.0, 0.0), "n = {n}");
        assert_eq!(m.weight[0], w.sum() - w[0], "n = {n}");
    }
}

#[test]
fn zero_weights_give_no_share_and_no_overflow() {
    // A huge value at weight 0 would square to infinity; 0 * inf is NaN.
    let x = ndarray::array![[1e300f64, 1.0], [2.0, 3.0], [4.0, f64::NAN]];
    let w = ndarray::array![0.0, 1.0, 1.0];
    let m = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap();
    assert_eq!(m.weight.to_vec(), vec![2.0, 1.0]);
    assert_eq!(m.mean.to_vec(), vec![3.0, 3.0]);
    assert_eq!(m.m2.to_vec(), vec![2.0, 0.0]);
    let (indptr, indices, vals) = csr(&x);
    let sm = csr_of((3, 2), &indptr, &indices, &vals);
    let s = host::sparse_column_moments_skip_nan(sm, Some(w.view())).unwrap();
    assert_eq!(
        (s.weight.to_vec(), s.mean.to_vec(), s.m2.to_vec()),
        (m.weight.to_vec(), m.mean.to_vec(), m.m2.to_vec())
    );
    // All weights 0: weight 0, mean 0 and M2 0.
    let z = Array1::zeros(3);
    let m = host::column_moments_skip_nan_weighted(x.view(), z.view()).unwrap();
    assert_eq!((m.weight.sum(), m.mean.sum(), m.m2.sum()), (0.0, 0.0, 0.0));
}

#[test]
fn splits_merge_to_the_whole() {
    let x = data(3001, 17, 500.0, 0.1, 0.0, 9);
    let w = Array1::from(weights(3001, 10));
    let whole = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap();
    let mut a = host::column_moments_skip_nan_weighted(x.slice(s![..1234, ..]), w.slice(s![..1234])).unwrap();
    let b = host::column_moments_skip_nan_weighted(x.slice(s![1234.., ..]), w.slice(s![1234..])).unwrap();
    a.merge(&b).unwrap();
    for c in 0..17 {
        assert!((a.weight[c] - whole.weight[c]).abs() <= 1e-12 * whole.weight[c]);
        assert!((a.mean[c] - whole.mean[c]).abs() <= 1e-12 * 500.0);
        assert!((a.m2[c] - whole.m2[c]).abs() <= 1e-9 * whole.m2[c]);
    }
    assert!(matches!(
        a.merge(&WeightedMoments::new(3)),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let x = data(70_000, 33, 10.0, 0.05, 0.5, 11);
    let w = Array1::from(weights(70_000, 12));
    let (indptr, indices, vals) = csr(&x);
    let sm = csr_of((70_000, 33), &indptr, &indices, &vals);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            (
                host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap(),
                host::sparse_column_moments_skip_nan(sm, Some(w.view())).unwrap(),
            )
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn bad_input_is_refused_naming_what_is_wrong() {
    let x = ndarray::array![[1.0f64, 2.0], [3.0, f64::INFINITY]];
    let w = ndarray::array![1.0, 1.0];
    let msg = |e: Error| e.to_string();
    let e = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap_err();
    assert!(msg(e).contains("infinity (row 1, column 1)"));
    for (bad, what) in [(f64::NAN, "NaN"), (-1.0, "-1"), (f64::INFINITY, "inf")] {
        let w = ndarray::array![1.0, bad];
        let e = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap_err();
        assert!(msg(e).contains(&format!("weight of row 1 is {what}")), "{what}");
    }
    let e = host::column_moments_skip_nan_weighted(x.view(), ndarray::array![1.0].view()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }));

    let ok = |indptr: &[usize], indices: &[i64], data: &[f64]| {
        host::sparse_column_moments_skip_nan(
            Csr {
                shape: (2, 3),
                indptr,
                indices,
                data,
            },
            None,
        )
    };
    assert!(ok(&[0, 1, 2], &[0, 2], &[1.0, 2.0]).is_ok());
    assert!(msg(ok(&[0, 1], &[0], &[1.0]).unwrap_err()).contains("indptr of 3 offsets"));
    assert!(msg(ok(&[0, 1, 3], &[0, 2], &[1.0, 2.0]).unwrap_err()).contains("indptr from 0"));
    assert!(msg(ok(&[0, 2, 2], &[0], &[1.0, 2.0]).unwrap_err()).contains("one index per stored value"));
    assert!(msg(ok(&[0, 3, 2], &[0, 1], &[1.0, 2.0]).unwrap_err()).contains("falls at row 1"));
    assert!(msg(ok(&[0, 1, 2], &[0, 3], &[1.0, 2.0]).unwrap_err()).contains("stored value 1 is outside 0..3"));
    assert!(msg(ok(&[0, 1, 2], &[0, -1], &[1.0, 2.0]).unwrap_err()).contains("stored value 1 is outside"));
    assert!(msg(ok(&[0, 2, 2], &[1, 1], &[1.0, 2.0]).unwrap_err()).contains("row 0 stores column 1 twice"));
    assert!(msg(ok(&[0, 3, 3], &[1, 0, 1], &[1.0, 2.0, 3.0]).unwrap_err()).contains("column 1 twice"));
    assert!(
        msg(ok(&[0, 1, 2], &[0, 1], &[1.0, f64::NEG_INFINITY]).unwrap_err())
            .contains("infinity (row 1, column 1)")
    );
    // No rows, no columns.
    let none =
        host::sparse_column_moments_skip_nan(csr_of::<f64, i32>((0, 2), &[0], &[], &[]), None).unwrap();
    assert_eq!(none.weight.to_vec(), vec![0.0, 0.0]);
    let empty = Array2::<f32>::zeros((0, 3));
    let m = host::column_moments_skip_nan_weighted(empty.view(), Array1::zeros(0).view()).unwrap();
    assert_eq!(m.dim(), 3);
}

/// The co-moments of the dense matrix in f64, by definition.
fn dense_comoments(x: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
    let c = x - &mean;
    (mean, c.t().dot(&c))
}

#[test]
fn sparse_comoments_equal_the_dense_definition() {
    for (i, &(n, d)) in SHAPES.iter().take(7).chain(&[(2000, 300), (5, 1)]).enumerate() {
        for offset in [0.0, 30.0] {
            let x = data(n, d, offset, 0.0, 0.85, 200 + i as u64);
            let (indptr, indices, vals) = csr(&x);
            let m = csr_of((n, d), &indptr, &indices, &vals);
            let mom = host::sparse_column_moments(m).unwrap();
            assert!(host::sparse_gram_is_accurate(&mom));
            let co = host::sparse_comoments(m, &mom).unwrap();
            let (mean, want) = dense_comoments(&x);
            let scale = want.diag().iter().fold(1e-300f64, |a, &b| a.max(b));
            let err = (&co.comoment - &want).iter().fold(0.0f64, |a, &b| a.max(b.abs()));
            assert!(
                err <= 1e-11 * scale,
                "{n} x {d} offset {offset}: {err} of {scale}"
            );
            assert!((&co.mean - &mean)
                .iter()
                .all(|v| v.abs() <= 1e-12 * (1.0 + offset)));
            assert_eq!(co.count, n as u64);
            // Symmetric exactly; min and max count the zeros.
            assert_eq!(co.comoment, co.comoment.t());
            for c in 0..d {
                let col = x.column(c);
                assert_eq!(
                    mom.min[c],
                    col.fold(f64::INFINITY, |a, &b| a.min(b)),
                    "min of column {c}"
                );
                assert_eq!(
                    mom.max[c],
                    col.fold(f64::NEG_INFINITY, |a, &b| a.max(b)),
                    "max of column {c}"
                );
            }
            // Unsorted rows (each row reversed), f32 values, i64 indices.
            let mut rev_i: Vec<i64> = Vec::new();
            let mut rev_v: Vec<f32> = Vec::new();
            for r in 0..n {
                for k in (indptr[r]..indptr[r + 1]).rev() {
                    rev_i.push(indices[k] as i64);
                    rev_v.push(vals[k] as f32);
                }
            }
            let m32 = csr_of((n, d), &indptr, &rev_i, &rev_v);
            let mom32 = host::sparse_column_moments(m32).unwrap();
            let co32 = host::sparse_comoments(m32, &mom32).unwrap();
            let (_, want32) = dense_comoments(&x.mapv(|v| v as f32 as f64));
            let err = (&co32.comoment - &want32)
                .iter()
                .fold(0.0f64, |a, &b| a.max(b.abs()));
            assert!(err <= 1e-11 * scale, "unsorted f32 {n} x {d}: {err}");
        }
    }
}

#[test]
fn sparse_comoments_of_a_constant_column_are_zero_and_offsets_are_flagged() {
    // Column 1 stored everywhere with one value; column 2 near a large offset.
    let mut x = data(500, 3, 0.0, 0.0, 0.5, 301);
    x.column_mut(1).fill(7.25);
    let (indptr, indices, vals) = csr(&x);
    let m = csr_of((500, 3), &indptr, &indices, &vals);
    let mom = host::sparse_column_moments(m).unwrap();
    let co = host::sparse_comoments(m, &mom).unwrap();
    assert_eq!((mom.mean[1], mom.m2[1]), (7.25, 0.0));
    assert_eq!(co.comoment.row(1).to_vec(), vec![0.0; 3]);
    assert_eq!(co.comoment.column(1).to_vec(), vec![0.0; 3]);
    assert!(host::sparse_gram_is_accurate(&mom));
    x.column_mut(2).mapv_inplace(|v| 1e4 + 1e-2 * v);
    let (indptr, indices, vals) = csr(&x);
    let m = csr_of((500, 3), &indptr, &indices, &vals);
    assert!(!host::sparse_gram_is_accurate(
        &host::sparse_column_moments(m).unwrap()
    ));
}

#[test]
fn sparse_comoments_do_not_depend_on_the_thread_count_and_refuse_nan() {
    let x = data(3000, 90, 1.0, 0.0, 0.9, 302);
    let (indptr, indices, vals) = csr(&x);
    let m = csr_of((3000, 90), &indptr, &indices, &vals);
    let mom = host::sparse_column_moments(m).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| host::sparse_comoments(m, &mom).unwrap())
    };
    assert_eq!(run(1), run(3));
    // Rows in any column order: the same sums, to the bit.
    let (mut rev_i, mut rev_v) = (indices.clone(), vals.clone());
    for r in 0..3000 {
        rev_i[indptr[r]..indptr[r + 1]].reverse();
        rev_v[indptr[r]..indptr[r + 1]].reverse();
    }
    let rev = csr_of((3000, 90), &indptr, &rev_i, &rev_v);
    assert_eq!(host::sparse_comoments(rev, &mom).unwrap(), run(2));
    let mut bad = vals.clone();
    bad[indptr[17]] = f64::NAN;
    let b = csr_of((3000, 90), &indptr, &indices, &bad);
    let e = host::sparse_column_moments(b).unwrap_err().to_string();
    assert!(
        e.contains(&format!("NaN (row 17, column {})", indices[indptr[17]])),
        "{e}"
    );
    let other = host::sparse_column_moments(csr_of((3000, 90), &indptr, &indices, &vals[..])).unwrap();
    let mut short = other.clone();
    short.count = 2;
    assert!(matches!(
        host::sparse_comoments(m, &short),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn zero_weight_rows_leave_no_rounding_behind_in_sparse_moments() {
    // The unstored zero sits in a row of weight 0: the column's only value
    // of any weight is 10.69..., so it has no spread, exactly (the
    // difference of the weight sums would round to about 1e-16 and give the
    // zeros that weight).
    let x = ndarray::array![
        [f64::NAN, f64::NAN],
        [0.0, f64::NAN],
        [f64::NAN, f64::NAN],
        [f64::NAN, f64::NAN],
        [10.69653365, f64::NAN]
    ];
    let w = ndarray::array![699.49093669, 0.0, 781.34244665, 0.0, 625.95822767];
    let (indptr, indices, vals) = csr(&x);
    let sm = csr_of((5, 2), &indptr, &indices, &vals);
    let m = host::sparse_column_moments_skip_nan(sm, Some(w.view())).unwrap();
    let dense = host::column_moments_skip_nan_weighted(x.view(), w.view()).unwrap();
    // As the dense path: the one value's weight and mean, no spread to
    // speak of (the zero is in a row of weight 0).
    assert_eq!((m.weight[0], m.mean[0]), (dense.weight[0], dense.mean[0]));
    assert_eq!(m.weight[0], 625.95822767);
    assert!((m.mean[0] - 10.69653365).abs() <= 2e-15 * 10.7);
    assert!(
        m.m2[0] <= 1e-25 && dense.m2[0] <= 1e-25,
        "{} {}",
        m.m2[0],
        dense.m2[0]
    );
    // All NaN: weight exactly 0 (not the rounding of two weight sums).
    assert_eq!((m.weight[1], m.mean[1], m.m2[1]), (0.0, 0.0, 0.0));
    assert_eq!(dense.weight[1], 0.0);
}

#[test]
fn shapes_beyond_memory_are_refused_not_aborted() {
    let e = host::sparse_column_moments_skip_nan(csr_of::<f64, i32>((0, 1 << 62), &[0], &[], &[]), None);
    assert!(matches!(e, Err(Error::ExceedsLimit { .. })), "{e:?}");
    let e = host::sparse_column_moments_skip_nan(csr_of::<f64, i32>((usize::MAX, 3), &[], &[], &[]), None);
    assert!(e.is_err());
}

#[test]
fn a_pipeline_state_takes_sparse_rows_as_their_dense_form() {
    use gpuprep::pipeline::Device;
    use gpuprep::PipelineState;
    let x = data(3000, 40, 2.0, 0.0, 0.9, 400);
    let (indptr, indices, vals) = csr(&x);
    let m = csr_of((3000, 40), &indptr, &indices, &vals);
    let mut dense = PipelineState::new(40, true);
    dense.partial_fit(x.view()).unwrap();
    // Sparse rows stay sparse: the Gram path.
    let mut s = PipelineState::new(40, true);
    assert!(s.partial_fit_sparse(m, Device::Cpu).unwrap());
    close_to(&s, &dense, "gram");
    // A column on an offset far above its spread: dense blocks.
    let mut y = x.clone();
    y.column_mut(3).mapv_inplace(|v| 1e4 + 1e-3 * v);
    let (indptr, indices, vals) = csr(&y);
    let my = csr_of((3000, 40), &indptr, &indices, &vals);
    dense = PipelineState::new(40, true);
    dense.partial_fit(y.view()).unwrap();
    let mut s = PipelineState::new(40, true);
    assert!(!s.partial_fit_sparse(my, Device::Cpu).unwrap());
    close_to(&s, &dense, "dense blocks");
    // Without a PCA step: the moments alone. A bad matrix leaves the state.
    let mut t = PipelineState::new(40, false);
    assert!(t.partial_fit_sparse(m, Device::Cpu).unwrap());
    assert_eq!(t.moments.count, 3000);
    let mut bad = vals.clone();
    bad[0] = f64::NAN;
    let before = s.clone();
    assert!(s
        .partial_fit_sparse(csr_of((3000, 40), &indptr, &indices, &bad), Device::Cpu)
        .is_err());
    assert_eq!(s, before);
    assert!(s
        .partial_fit_sparse(csr_of((3000, 41), &indptr, &indices, &vals), Device::Cpu)
        .is_err());
}

fn close_to(s: &gpuprep::PipelineState, dense: &gpuprep::PipelineState, what: &str) {
    let (a, b) = (s.comoments.as_ref().unwrap(), dense.comoments.as_ref().unwrap());
    let scale = b.comoment.diag().iter().fold(0.0f64, |a, &v| a.max(v));
    let err = (&a.comoment - &b.comoment)
        .iter()
        .fold(0.0f64, |a, &v| a.max(v.abs()));
    assert!(err <= 1e-9 * scale, "{what}: {err}");
    assert_eq!(
        (s.moments.count, s.moments.min.clone(), s.moments.max.clone()),
        (
            dense.moments.count,
            dense.moments.min.clone(),
            dense.moments.max.clone()
        ),
        "{what}"
    );
}
