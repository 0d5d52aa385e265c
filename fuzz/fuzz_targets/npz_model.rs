//! The model loaders (`PcaModel::load`, `Pipeline::load`: a .npz of named
//! arrays) on any bytes: an `Ok` or an `Err`, never a panic, an abort or a
//! hang. A model they accept must also give its transform matrices, and a
//! pipeline its state's merge with itself, without panicking.
#![no_main]

use gpuprep::{PcaModel, Pipeline};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("npz", data);
    if let Ok(model) = PcaModel::load(&path) {
        let _ = model.transform_parts();
        let _ = model.inverse_parts();
        let _ = model.output_dim();
    }
    if let Ok(p) = Pipeline::load(&path) {
        let _ = p.transform_parts();
        let _ = p.inverse_parts();
        let _ = p.output_dim();
        let mut s = p.state.clone();
        if s.merge(&p.state).is_ok() {
            let _ = Pipeline::from_state(s, &p.options);
        }
    }
});
