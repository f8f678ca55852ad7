//! The crate's one error type, [`FfiError`], and the structs it wraps.

use std::fmt;
use std::path::PathBuf;

use crate::sys;

/// Every way a call through this crate can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FfiError {
    /// No library could be loaded (AscendCL, or HCCL for an HCCL call).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loaded library does not export a symbol that this call needs (an older CANN).
    #[error("`{symbol}` is not exported by the loaded library {library}")]
    Unsupported {
        symbol: &'static str,
        library: PathBuf,
    },
    /// An AscendCL call returned a non-zero `aclError`.
    #[error(transparent)]
    Acl(#[from] AclError),
    /// An HCCL call returned a non-zero `HcclResult`.
    #[error(transparent)]
    Hccl(#[from] HcclError),
}

impl FfiError {
    /// The AscendCL error code, when this is an AscendCL failure.
    pub fn acl_code(&self) -> Option<sys::aclError> {
        match self {
            FfiError::Acl(e) => Some(e.code),
            _ => None,
        }
    }
}

/// A failed AscendCL call: the code, its name in the headers, and the runtime's own explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// The C function that failed.
    pub function: &'static str,
    /// The returned `aclError`.
    pub code: sys::aclError,
    /// The code's name from the headers (`ACL_ERROR_RT_MEMORY_ALLOCATION`), if it has one.
    pub name: Option<&'static str>,
    /// The text of `aclGetRecentErrMsg` read right after the failure, if any.
    pub message: Option<String>,
}

impl AclError {
    /// Builds the error for `code`, looking its name up in the generated table.
    pub fn new(function: &'static str, code: sys::aclError, message: Option<String>) -> Self {
        AclError {
            function,
            code,
            name: sys::acl_error_name(code),
            message,
        }
    }
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} ({})",
            self.function,
            self.name.unwrap_or("unknown AscendCL error"),
            self.code
        )?;
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, ": {}", m.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for AclError {}

/// A failed HCCL call, with `HcclGetErrorString`'s text when the library provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HcclError {
    pub function: &'static str,
    pub code: sys::HcclResult::Type,
    pub name: Option<&'static str>,
    pub message: Option<String>,
}

impl HcclError {
    pub fn new(
        function: &'static str,
        code: sys::HcclResult::Type,
        message: Option<String>,
    ) -> Self {
        HcclError {
            function,
            code,
            name: hccl_result_name(code),
            message,
        }
    }
}

impl fmt::Display for HcclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} ({})",
            self.function,
            self.name.unwrap_or("unknown HCCL error"),
            self.code
        )?;
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, ": {}", m.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for HcclError {}

/// The header name of an `HcclResult` value.
pub fn hccl_result_name(code: sys::HcclResult::Type) -> Option<&'static str> {
    use sys::HcclResult::*;
    Some(match code {
        HCCL_SUCCESS => "HCCL_SUCCESS",
        HCCL_E_PARA => "HCCL_E_PARA",
        HCCL_E_PTR => "HCCL_E_PTR",
        HCCL_E_MEMORY => "HCCL_E_MEMORY",
        HCCL_E_INTERNAL => "HCCL_E_INTERNAL",
        HCCL_E_NOT_SUPPORT => "HCCL_E_NOT_SUPPORT",
        HCCL_E_NOT_FOUND => "HCCL_E_NOT_FOUND",
        HCCL_E_UNAVAIL => "HCCL_E_UNAVAIL",
        HCCL_E_SYSCALL => "HCCL_E_SYSCALL",
        HCCL_E_TIMEOUT => "HCCL_E_TIMEOUT",
        HCCL_E_OPEN_FILE_FAILURE => "HCCL_E_OPEN_FILE_FAILURE",
        HCCL_E_TCP_CONNECT => "HCCL_E_TCP_CONNECT",
        HCCL_E_ROCE_CONNECT => "HCCL_E_ROCE_CONNECT",
        HCCL_E_TCP_TRANSFER => "HCCL_E_TCP_TRANSFER",
        HCCL_E_ROCE_TRANSFER => "HCCL_E_ROCE_TRANSFER",
        HCCL_E_RUNTIME => "HCCL_E_RUNTIME",
        HCCL_E_DRV => "HCCL_E_DRV",
        HCCL_E_PROFILING => "HCCL_E_PROFILING",
        HCCL_E_CCE => "HCCL_E_CCE",
        HCCL_E_NETWORK => "HCCL_E_NETWORK",
        HCCL_E_AGAIN => "HCCL_E_AGAIN",
        HCCL_E_REMOTE => "HCCL_E_REMOTE",
        HCCL_E_SUSPENDING => "HCCL_E_SUSPENDING",
        HCCL_E_OPRETRY_FAIL => "HCCL_E_OPRETRY_FAIL",
        HCCL_E_OOM => "HCCL_E_OOM",
        _ => return None,
    })
}

/// One place the loader looked, and why it was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// A path, or a bare file name handed to the system loader.
    pub path: PathBuf,
    /// Which rule of the search produced it (`DSNPU_ACL_LIB`, `system loader`, ...).
    pub origin: String,
    /// The loader's reason (`dlerror` text, or "no such file").
    pub reason: String,
}

/// No library could be loaded. Lists every path tried and the environment it consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// `"AscendCL"` or `"HCCL"`.
    pub library: &'static str,
    pub attempts: Vec<Attempt>,
    /// Each environment variable the search reads, with its value then (None: unset).
    pub env: Vec<(&'static str, Option<String>)>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "could not load the {} library; tried:", self.library)?;
        if self.attempts.is_empty() {
            writeln!(f, "  (no candidate paths)")?;
        }
        for a in &self.attempts {
            writeln!(f, "  {} [{}]: {}", a.path.display(), a.origin, a.reason)?;
        }
        write!(f, "environment consulted:")?;
        for (name, value) in &self.env {
            match value {
                Some(v) => write!(f, "\n  {name}={v}")?,
                None => write!(f, "\n  {name} (unset)")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_error_carries_header_name_and_message() {
        let e = AclError::new("aclrtMalloc", 207001, Some("capacity exceeded\n".into()));
        assert_eq!(e.name, Some("ACL_ERROR_RT_MEMORY_ALLOCATION"));
        assert_eq!(
            e.to_string(),
            "aclrtMalloc failed: ACL_ERROR_RT_MEMORY_ALLOCATION (207001): capacity exceeded"
        );
        let unknown = AclError::new("aclInit", 123, None);
        assert_eq!(
            unknown.to_string(),
            "aclInit failed: unknown AscendCL error (123)"
        );
    }

    #[test]
    fn hccl_names_follow_the_header_numbering() {
        assert_eq!(hccl_result_name(1), Some("HCCL_E_PARA"));
        assert_eq!(hccl_result_name(9), Some("HCCL_E_TIMEOUT"));
        assert_eq!(hccl_result_name(24), Some("HCCL_E_OOM"));
        assert_eq!(hccl_result_name(99), None);
    }

    #[test]
    fn load_error_lists_paths_and_variables() {
        let e = LoadError {
            library: "AscendCL",
            attempts: vec![Attempt {
                path: "/nope/libascendcl.so".into(),
                origin: "DSNPU_ACL_LIB".into(),
                reason: "no such file".into(),
            }],
            env: vec![
                ("DSNPU_ACL_LIB", Some("/nope/libascendcl.so".into())),
                ("ASCEND_HOME_PATH", None),
            ],
        };
        let s = e.to_string();
        assert!(
            s.contains("/nope/libascendcl.so [DSNPU_ACL_LIB]: no such file"),
            "{s}"
        );
        assert!(s.contains("ASCEND_HOME_PATH (unset)"), "{s}");
    }
}
