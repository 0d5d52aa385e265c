/// Writes `data` to a file of this process (in /dev/shm where there is one)
/// and returns its path: the readers under test take paths.
pub fn scratch_file(ext: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("gpuprep-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&path, data).expect("writing the fuzz input");
    path
}
