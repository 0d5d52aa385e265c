//! Writes each kernel's uniform `Params` struct for Rust from its WGSL, so
//! the layout is written once, in the shader.
//!
//! For every `shaders/<stem>.wgsl` that declares `var<uniform> p: Name;`,
//! the struct `Name` is read (fields of `u32`, `i32` or `f32`, one per line,
//! with `//` comments before or after a field) and
//! `$OUT_DIR/<stem>_params.rs` gets a `kernel_params!` invocation declaring
//! the same struct, its comments as docs; `src/shaders.rs` includes it in the
//! shader's module. The unit test `params_mirror_their_wgsl_structs` still
//! checks every generated struct against naga's layout of the WGSL.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-changed=build.rs");
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let mut files: Vec<_> = fs::read_dir("shaders")
        .expect("shaders/ is beside Cargo.toml")
        .map(|e| e.expect("shaders/ is readable").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file names");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let Some(name) = uniform_struct(&text) else {
            continue;
        };
        let rust = params_struct(&text, name).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dest = Path::new(&out).join(format!("{stem}_params.rs"));
        fs::write(&dest, rust).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
    }
}

/// The type of the shader's uniform, if it has one.
fn uniform_struct(text: &str) -> Option<&str> {
    let rest = &text[text.find("var<uniform>")? + "var<uniform>".len()..];
    let decl = &rest[..rest.find(';')?];
    Some(decl.split_once(':')?.1.trim())
}

/// The `kernel_params!` invocation mirroring WGSL struct `name`.
fn params_struct(text: &str, name: &str) -> Result<String, String> {
    let head = format!("struct {name} {{");
    let start = text.find(&head).ok_or(format!("no `{head}`"))? + head.len();
    let body = &text[start
        ..start
            + text[start..]
                .find("\n}")
                .ok_or(format!("`{head}` is not closed"))?];
    let mut s = String::new();
    writeln!(s, "crate::shaders::kernel_params! {{").unwrap();
    writeln!(s, "    SHADER;").unwrap();
    writeln!(
        s,
        "    /// The shader's uniform `{name}`, written by build.rs from the WGSL struct."
    )
    .unwrap();
    writeln!(s, "    pub(crate) struct {name} {{").unwrap();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("//") {
            writeln!(s, "        ///{comment}").unwrap();
            continue;
        }
        let (field, comment) = match line.split_once("//") {
            Some((f, c)) => (f.trim(), Some(c)),
            None => (line, None),
        };
        let (ident, ty) = field
            .trim_end_matches(',')
            .split_once(':')
            .ok_or(format!("`{line}` is not `name: type,`"))?;
        let ty = ty.trim();
        if !matches!(ty, "u32" | "i32" | "f32") {
            return Err(format!("field `{line}`: only u32, i32 and f32 are mirrored"));
        }
        if let Some(c) = comment {
            writeln!(s, "        ///{c}").unwrap();
        }
        writeln!(s, "        {}: {ty},", ident.trim()).unwrap();
    }
    writeln!(s, "    }}\n}}").unwrap();
    Ok(s)
}
