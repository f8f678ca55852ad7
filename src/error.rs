//! The CLI's error type.

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Load(#[from] dsnpu_ffi::LoadError),
    #[error(transparent)]
    Runtime(#[from] dsnpu_runtime::RuntimeError),
    #[error(transparent)]
    Model(#[from] dsnpu_model::ModelError),
    #[error(transparent)]
    Ops(#[from] dsnpu_ops::OpsError),
    #[error(transparent)]
    Kernel(#[from] dsnpu_kernels::KernelError),
    #[error(transparent)]
    BenchCase(#[from] crate::bench::cases::CaseError),
    #[error(transparent)]
    Bench(#[from] crate::bench::measure::MeasureError),
    #[error(transparent)]
    Plot(#[from] crate::bench::plot::PlotError),
    #[error("{0}")]
    Usage(String),
    /// A check the command ran did not pass (`dsnpu verify`).
    #[error("{0}")]
    Failed(String),
    /// An output path that cannot be written, found before the work that would fill it.
    #[error("{flag} {}: {reason}", .path.display())]
    OutputPath {
        flag: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    /// An input file that is not a regular file (a FIFO, a device, a directory), found with `stat`
    /// before it is opened: a FIFO would block the read and `/dev/zero` never ends it.
    #[error("{what} {}: {reason}", .path.display())]
    InputPath {
        what: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
