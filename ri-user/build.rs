//! Builds the eBPF programs of `ri-ebpf` with aya-build; the object is
//! embedded into the `ri` binary.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ri-ebpf",
            root_dir: "../ri-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
