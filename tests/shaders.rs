//! Every shader in gpuprep's list parses and validates with naga (the version
//! wgpu uses), and every file in shaders/ is in that list.

#[test]
fn every_shader_validates() {
    let mut failures = Vec::new();
    for s in gpuprep::shaders::ALL {
        let path = format!("shaders/{}.wgsl", s.name);
        let module = match naga::front::wgsl::parse_str(s.source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(e.emit_to_string_with_path(s.source, &path));
                continue;
            }
        };
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        if let Err(e) = v.validate(&module) {
            failures.push(e.emit_to_string_with_path(s.source, &path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_file_in_shaders_is_listed() {
    let listed: Vec<&str> = gpuprep::shaders::ALL.iter().map(|s| s.name).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "wgsl") {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(
                listed.contains(&stem.as_str()),
                "shaders/{stem}.wgsl is not in gpuprep::shaders::ALL"
            );
        }
    }
}

#[test]
fn every_shared_prelude_is_used() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/common");
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            gpuprep::shaders::ALL.iter().any(|s| s.source.contains(&text)),
            "{} is prepended to no shader in gpuprep::shaders::ALL",
            p.display()
        );
    }
}
