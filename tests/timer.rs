//! GpuTimer: timestamps around recorded work (not a speed test: it checks
//! that the stamps bracket the work and fit inside the host's wall clock).

mod common;

use std::time::Instant;

use common::{gpu, normal};
use gpuprep::{GpuMatrix, GpuTimer};

#[test]
fn stamps_bracket_the_work() {
    let g = gpu();
    let timer = GpuTimer::new(g).unwrap();
    let Some(timer) = timer else {
        // Only a device without TIMESTAMP_QUERY may lack a timer.
        assert!(!g.features().contains(gpuprep::wgpu::Features::TIMESTAMP_QUERY));
        return;
    };
    let x = GpuMatrix::upload(g, normal(4000, 64, 3.0, 1.0, 1).view()).unwrap();
    let mut last = 0.0;
    for reps in [1usize, 8] {
        let mut enc = g.encoder("timed");
        timer.start(&mut enc);
        for _ in 0..reps {
            common::record_stats(g, &mut enc, &x, 0).unwrap();
        }
        timer.stop(&mut enc);
        let t = Instant::now();
        g.submit("timed", enc).unwrap();
        let secs = timer.read_seconds(g).unwrap();
        let wall = t.elapsed().as_secs_f64();
        assert!(secs > 0.0 && secs.is_finite(), "{reps} reps: {secs} s");
        assert!(secs <= wall, "{reps} reps: GPU {secs} s > wall clock {wall} s");
        last = secs;
    }
    // The timer is reusable and an empty stretch is (close to) nothing.
    let mut enc = g.encoder("empty");
    timer.start(&mut enc);
    timer.stop(&mut enc);
    g.submit("empty", enc).unwrap();
    let empty = timer.read_seconds(g).unwrap();
    assert!(empty < last, "empty stretch {empty} s, 8 column_stats {last} s");
}

#[test]
fn time_recorded_with_and_without_timestamps() {
    let g = gpu();
    let x = GpuMatrix::upload(g, normal(2000, 33, 1.0, 1.0, 2).view()).unwrap();
    let timer = GpuTimer::new(g).unwrap();
    for t in [timer.as_ref(), None] {
        let mut calls = 0;
        let per_op = gpuprep::time_recorded(g, t, 3, |enc| {
            calls += 1;
            common::record_stats(g, enc, &x, 0).map(|_| ())
        })
        .unwrap();
        assert_eq!(calls, 3);
        assert!(per_op > 0.0 && per_op.is_finite(), "{per_op}");
    }
    // An error while recording comes back, and nothing is submitted.
    let empty = GpuMatrix::uninit(g, 0, 4).unwrap();
    let r = gpuprep::time_recorded(g, timer.as_ref(), 2, |enc| {
        common::record_stats(g, enc, &empty, 0).map(|_| ())
    });
    assert!(r.is_err());
}
