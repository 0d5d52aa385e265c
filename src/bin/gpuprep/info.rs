//! `gpuprep info`: the adapters found, the one chosen, its limits and features.

use gpuprep::Gpu;

/// The adapters found, the one chosen, its limits and features.
#[derive(clap::Args)]
pub struct InfoArgs {}

/// Prints every adapter wgpu finds, then the chosen one's limits and the features gpuprep uses.
pub fn run(_: InfoArgs) -> gpuprep::Result<()> {
    let all = gpuprep::gpu::enumerate_adapters();
    outln!("adapters found: {}", all.len());
    for a in &all {
        outln!(
            "  {} ({:?}, {:?}, driver {:?})",
            a.name,
            a.backend,
            a.device_type,
            a.driver_info
        );
    }
    let gpu = Gpu::new()?;
    print_limits(&gpu);
    print_paths(&gpu);
    print_cooperative_matrices(&gpu);
    Ok(())
}

/// The chosen adapter, its limits, subgroup sizes and the features used.
fn print_limits(gpu: &Gpu) {
    let i = gpu.adapter_info();
    let l = gpu.limits();
    outln!("chosen: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
    outln!("  max_buffer_size                    {}", l.max_buffer_size);
    outln!(
        "  min_storage_buffer_offset_align    {}",
        l.min_storage_buffer_offset_alignment
    );
    outln!(
        "  max_storage_buffer_binding_size    {}",
        l.max_storage_buffer_binding_size
    );
    outln!(
        "  max_compute_workgroup_storage_size {}",
        l.max_compute_workgroup_storage_size
    );
    outln!(
        "  max_compute_invocations_per_wg     {}",
        l.max_compute_invocations_per_workgroup
    );
    outln!(
        "  max_compute_workgroups_per_dim     {}",
        l.max_compute_workgroups_per_dimension
    );
    outln!(
        "  subgroup size                      {}..{}",
        i.subgroup_min_size,
        i.subgroup_max_size
    );
    outln!(
        "  features used: {:?}",
        gpu.features() & gpuprep::gpu::wanted_features()
    );
}

/// Which kernels the adapter gets: norm rows on subgroups, and the loop limit.
fn print_paths(gpu: &Gpu) {
    match gpu.subgroup_sizes() {
        Some((min, max)) => outln!(
            "  {:<35}rows of up to {} elements (subgroups of {min}..{max})",
            "norm rows on subgroups",
            16 * min
        ),
        None => outln!("  {:<35}no (workgroup memory)", "norm rows on subgroups"),
    }
    match gpu.loop_limit() {
        Some(l) => outln!(
            "  {:<35}{l} iterations per invocation (a CPU adapter: work is cut to stay under half)",
            "loop limit"
        ),
        None => outln!("  {:<35}none known", "loop limit"),
    }
}

/// The cooperative-matrix shapes the chosen adapter offers.
fn print_cooperative_matrices(gpu: &Gpu) {
    let i = gpu.adapter_info();
    for (a, configs) in gpuprep::gpu::cooperative_matrix_configs() {
        if a.name != i.name || a.backend != i.backend {
            continue;
        }
        if configs.is_empty() {
            outln!("  {:<35}none offered", "cooperative matrices");
        }
        for c in configs {
            outln!(
                "  {:<35}{}x{}x{} {:?} x {:?} -> {:?}",
                "cooperative matrix",
                c.m_size,
                c.n_size,
                c.k_size,
                c.ab_type,
                c.ab_type,
                c.cr_type
            );
        }
    }
}
