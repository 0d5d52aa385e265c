//! `gpuprep merge`: the model of the union of the data sets several models were
//! fitted on.

use std::path::PathBuf;

use gpuprep::{io, Error, Pipeline};

use crate::steps;

/// Merges models fitted by `gpuprep fit` (with the same steps) on disjoint parts
/// of a data set: their saved states (counts, means, moments, co-moments) merge
/// exactly, and the merged model is fitted from the merged state — the model of
/// the whole data set, to rounding (the all-reduce of a data-parallel job).
#[derive(clap::Args)]
pub struct MergeArgs {
    /// Models (.npz) from `gpuprep fit`.
    #[arg(required = true, num_args = 2..)]
    models: Vec<PathBuf>,
    /// The merged model (.npz).
    #[arg(short, long, value_name = "MODEL.npz")]
    output: PathBuf,
}

pub fn run(a: MergeArgs) -> gpuprep::Result<()> {
    io::check_outputs("merge", &steps::paths(&a.models), &[&a.output])?;
    let models = a
        .models
        .iter()
        .map(|p| Pipeline::load(p))
        .collect::<gpuprep::Result<Vec<_>>>()?;
    let first = &models[0];
    let mut state = first.state.clone();
    for (path, m) in a.models.iter().zip(&models) {
        if m.state.count() == 0 {
            return Err(Error::InvalidArgument {
                op: "merge",
                reason: format!(
                    "{} holds no fitted state (a PCA model saved on its own cannot be merged)",
                    path.display()
                ),
            });
        }
        if m.options != first.options {
            return Err(Error::InvalidArgument {
                op: "merge",
                reason: format!(
                    "{} was fitted with other steps than {}: {}",
                    path.display(),
                    a.models[0].display(),
                    steps::differences(&m.options, &first.options)
                ),
            });
        }
    }
    // One fit in two files (a copy, or a part given twice) would count its rows twice.
    for (j, (pj, mj)) in a.models.iter().zip(&models).enumerate() {
        for (pi, mi) in a.models.iter().zip(&models).take(j) {
            if let Some(id) = mj.state.fit_ids.iter().find(|id| mi.state.fit_ids.contains(id)) {
                return Err(Error::InvalidArgument {
                    op: "merge",
                    reason: format!(
                        "{} and {} hold the same fit ({id:016x}): merged twice, its rows would count twice",
                        pi.display(),
                        pj.display()
                    ),
                });
            }
        }
    }
    for (path, m) in a.models.iter().zip(&models).skip(1) {
        state.merge(&m.state).map_err(|e| Error::InvalidArgument {
            op: "merge",
            reason: format!("{}: {e}", path.display()),
        })?;
    }
    let merged = Pipeline::from_state(state, &first.options)?;
    let mut out = io::OutputSet::new();
    out.write_with(&a.output, |tmp| merged.save(tmp))?;
    out.commit()?;
    crate::output::note(&format!(
        "wrote {}: {}",
        a.output.display(),
        steps::describe(&merged)
    ));
    Ok(())
}
