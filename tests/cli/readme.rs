//! The README's quick-start commands run as written, on data of their names.

use super::{bin, succeeded, tmpdir};

#[test]
fn the_readmes_quick_start_commands_run() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("## Quick start").expect("a Quick start section");
    let section = &readme[start..];
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in the Quick start");
    let dir = tmpdir("readme");
    for name in ["train.npy", "test.npy"] {
        let x = crate::common::normal(500, 12, 3.0, 2.0, name.len() as u64);
        ndarray_npy::write_npy(dir.join(name), &x).unwrap();
    }
    let mut ran = 0;
    for line in block.lines() {
        let command = line.split("  #").next().unwrap().trim();
        let Some(args) = command.strip_prefix("gpuprep ") else {
            continue;
        };
        succeeded(bin().current_dir(&dir).args(args.split_whitespace()), command);
        ran += 1;
    }
    assert!(ran >= 4, "{ran} commands in the quick start");
    for made in ["model.npz", "test-zca.npy", "w.npy"] {
        assert!(dir.join(made).exists(), "{made}");
    }
}
