//! `stats --json`: NaN and +/-inf are told apart (the strings "NaN", "Infinity",
//! "-Infinity"), and the output stays strict JSON.

use super::{bin, tmpdir};

#[test]
fn stats_json_writes_nan_and_infinities_distinguishably() {
    let dir = tmpdir("json-nonfinite");
    let x = dir.join("x.npy");
    // Column 0 holds a NaN, column 1 +inf, column 2 -inf, column 3 is plain.
    let a = ndarray::arr2(&[
        [1.0f32, 1.0, f32::NEG_INFINITY, 1.0],
        [f32::NAN, f32::INFINITY, 0.0, 2.0],
        [3.0, 2.0, 1.0, 3.0],
    ]);
    ndarray_npy::write_npy(&x, &a).unwrap();
    for device in ["cpu", "gpu"] {
        let out = bin()
            .arg("stats")
            .arg(&x)
            .args(["--json", "--device", device])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // serde_json is strict: bare NaN / Infinity tokens would not parse.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let field = |name: &str, c: usize| v[name][c].clone();
        // Every entry is a number or one of the three names.
        for name in ["mean", "var", "std", "min", "max"] {
            for e in v[name].as_array().unwrap() {
                assert!(
                    e.is_number() || ["NaN", "Infinity", "-Infinity"].contains(&e.as_str().unwrap_or("")),
                    "{device} {name}: {e}"
                );
            }
            assert!(field(name, 3).is_number(), "{device} {name}: {}", field(name, 3));
        }
        assert_eq!(field("mean", 0), "NaN", "{device}");
        assert_eq!(field("max", 1), "Infinity", "{device}");
        assert_eq!(field("min", 2), "-Infinity", "{device}");
        if device == "cpu" {
            // numpy's means; the GPU's Welford merge gives NaN here (inf - inf),
            // a library matter outside this test.
            assert_eq!(field("mean", 1), "Infinity");
            assert_eq!(field("mean", 2), "-Infinity");
        }
        assert_eq!(field("mean", 3).as_f64(), Some(2.0), "{device}");
    }
}
