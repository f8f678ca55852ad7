//! The simulator's configuration, read from the environment once, at `aclInit`.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DSNPU_SIM_DEVICES` | number of virtual devices, 1..=64 | 1 |
//! | `DSNPU_SIM_MEM_BYTES` | device memory per device: bytes, or with a `K`/`M`/`G`/`T` suffix (binary, optional `iB`/`B`) | 64 GiB |
//! | `DSNPU_SIM_HOST_MEM_BYTES` | host memory all devices and pinned buffers may commit together (same syntax) | estimated at `aclInit` from `MemAvailable` and the memory cgroup, see `memory::host` |
//! | `DSNPU_SIM_AICORE_NUM` | cores per device: `C` (cube C, vector 2C) or `C,V` | 24,48 |
//! | `DSNPU_SIM_HCCL_TIMEOUT_MS` | how long a collective waits for its other ranks | 120000 |
//! | `DSNPU_SIM_CHECK` | kernel sanitizer checks: comma-separated `mem`, `race`, `init`, `sync`, or `all`, no spaces (read by the host kernel layer at each block; validated here) | `mem` |
//!
//! A set but malformed variable makes `aclInit` fail with `ACL_ERROR_INVALID_PARAM` naming it.
use std::time::Duration;

use crate::error::SimError;

/// Unified Buffer bytes per block (192 KiB on 910B/910C), given to every block in its context.
pub const UB_CAPACITY: u32 = 196_608;

/// Per-process simulator settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub devices: u32,
    pub mem_bytes: u64,
    /// `None`: estimated from the host at `aclInit`.
    pub host_mem_bytes: Option<u64>,
    pub cube_cores: u32,
    pub vector_cores: u32,
    pub hccl_timeout: Duration,
    /// `init` is among the `DSNPU_SIM_CHECK` checks: device allocations start poisoned and kernel
    /// reads of GM bytes nothing wrote are findings (see `memory::written`).
    pub init_check: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            devices: 1,
            mem_bytes: 64 << 30,
            host_mem_bytes: None,
            cube_cores: 24,
            vector_cores: 48,
            hccl_timeout: Duration::from_secs(120),
            init_check: false,
        }
    }
}

impl SimConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SimError> {
        Self::from_lookup(|key| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Builds the configuration from a variable lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SimError> {
        let mut cfg = SimConfig::default();
        let bad = |key: &str, value: &str, want: &str| {
            SimError::InvalidParam(format!(
                "environment variable {key}={value:?} is invalid: expected {want}"
            ))
        };
        if let Some(v) = get("DSNPU_SIM_DEVICES") {
            cfg.devices = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| bad("DSNPU_SIM_DEVICES", &v, "a device count from 1 to 64"))?;
        }
        if let Some(v) = get("DSNPU_SIM_MEM_BYTES") {
            cfg.mem_bytes = parse_bytes(&v)
                .filter(|&b| b > 0 && b <= isize::MAX as u64)
                .ok_or_else(|| {
                    bad(
                        "DSNPU_SIM_MEM_BYTES",
                        &v,
                        "a positive byte count such as 68719476736 or 64G",
                    )
                })?;
        }
        if let Some(v) = get("DSNPU_SIM_HOST_MEM_BYTES") {
            cfg.host_mem_bytes = Some(
                parse_bytes(&v)
                    .filter(|&b| b > 0 && b <= isize::MAX as u64)
                    .ok_or_else(|| {
                        bad(
                            "DSNPU_SIM_HOST_MEM_BYTES",
                            &v,
                            "a positive byte count such as 17179869184 or 16G",
                        )
                    })?,
            );
        }
        if let Some(v) = get("DSNPU_SIM_AICORE_NUM") {
            (cfg.cube_cores, cfg.vector_cores) = parse_cores(&v).ok_or_else(|| {
                bad(
                    "DSNPU_SIM_AICORE_NUM",
                    &v,
                    "CUBE or CUBE,VECTOR core counts from 1 to 1024",
                )
            })?;
        }
        if let Some(v) = get("DSNPU_SIM_HCCL_TIMEOUT_MS") {
            let ms = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or_else(|| {
                    bad(
                        "DSNPU_SIM_HCCL_TIMEOUT_MS",
                        &v,
                        "a positive number of milliseconds",
                    )
                })?;
            cfg.hccl_timeout = Duration::from_millis(ms);
        }
        if let Some(v) = get("DSNPU_SIM_CHECK") {
            // Words exactly as the host kernel layer reads them (`parse_checks` in pipeline.h, at each
            // block): it does not trim, so " race" would pass here and leave the race check off there.
            let known = ["mem", "race", "init", "sync", "all"];
            if v.split(',').any(|w| !known.contains(&w)) {
                return Err(bad(
                    "DSNPU_SIM_CHECK",
                    &v,
                    "a comma-separated list of mem, race, init, sync, all, without spaces",
                ));
            }
            cfg.init_check = v.split(',').any(|w| matches!(w, "init" | "all"));
        }
        Ok(cfg)
    }

    /// How many blocks of one launch run at once: the larger core count. Launches with more
    /// blocks run in waves, as on the hardware.
    pub fn resident_blocks(&self) -> u32 {
        self.cube_cores.max(self.vector_cores).max(1)
    }
}

/// The largest `aclInit` configuration file CANN reads (`MAX_CONFIG_FILE_BYTE`).
pub const MAX_INIT_FILE_BYTES: u64 = 10 << 20;
/// The deepest nesting of `{` (and, separately, `[`) CANN accepts in it.
pub const MAX_INIT_FILE_DEPTH: usize = 10;

/// Checks the `aclInit` configuration file the way CANN does (hicann/runtime
/// `src/acl/common/json_parser.cpp`, `GetConfigStrFromFile` and `ParseJson`): it must exist and be
/// a regular file after following symlinks (a directory or a FIFO is `ACL_ERROR_INVALID_FILE`,
/// checked before opening, so a FIFO never blocks), of at most 10 MiB; an empty file is accepted;
/// otherwise it must be JSON nested at most 10 levels deep (`ACL_ERROR_PARSE_FILE`). The settings
/// themselves (dump, profiling) do not apply to the simulator and are ignored.
pub fn check_init_file(path: &str) -> Result<(), SimError> {
    let invalid = |reason: String| SimError::ConfigFile {
        path: path.to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| invalid(e.to_string()))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(invalid(format!("it is {what}")));
    }
    if meta.len() > MAX_INIT_FILE_BYTES {
        return Err(invalid(format!(
            "it holds {} bytes, more than the {MAX_INIT_FILE_BYTES} allowed",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    if bytes.is_empty() {
        return Ok(());
    }
    let parse = |reason: String| SimError::ConfigParse {
        path: path.to_string(),
        reason,
    };
    let (objects, arrays) = json_depths(&bytes);
    if objects > MAX_INIT_FILE_DEPTH || arrays > MAX_INIT_FILE_DEPTH {
        return Err(parse(format!(
            "objects nest {objects} deep and arrays {arrays} deep; at most {MAX_INIT_FILE_DEPTH} each"
        )));
    }
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .map(drop)
        .map_err(|e| parse(format!("not JSON: {e}")))
}

/// The deepest nesting of objects and of arrays in JSON text (brackets inside strings ignored).
fn json_depths(bytes: &[u8]) -> (usize, usize) {
    let (mut obj, mut arr, mut max_obj, mut max_arr) = (0usize, 0usize, 0, 0);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => {
                obj += 1;
                max_obj = max_obj.max(obj);
            }
            b'}' => obj = obj.saturating_sub(1),
            b'[' => {
                arr += 1;
                max_arr = max_arr.max(arr);
            }
            b']' => arr = arr.saturating_sub(1),
            _ => {}
        }
    }
    (max_obj, max_arr)
}

/// Parses "1024", "512M", "64G", "64GiB", "1t" (binary multiples).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let n: u64 = num.parse().ok()?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Parses "24" (24 cube, 48 vector) or "20,40" / "20/40" / "20:40".
pub fn parse_cores(s: &str) -> Option<(u32, u32)> {
    let ok = |n: u32| (1..=1024).contains(&n).then_some(n);
    let mut parts = s.trim().split([',', '/', ':']);
    let cube = ok(parts.next()?.trim().parse().ok()?)?;
    let vector = match parts.next() {
        Some(v) => ok(v.trim().parse().ok()?)?,
        None => cube.checked_mul(2)?,
    };
    parts.next().is_none().then_some((cube, vector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<SimConfig, SimError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SimConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_one_64gib_910b_device() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.devices, 1);
        assert_eq!(c.mem_bytes, 68_719_476_736);
        assert_eq!((c.cube_cores, c.vector_cores), (24, 48));
        assert_eq!(c.resident_blocks(), 48);
    }

    #[test]
    fn parses_sizes_and_cores() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("512M"), Some(536_870_912));
        assert_eq!(parse_bytes("64GiB"), Some(68_719_476_736));
        assert_eq!(parse_bytes(" 2k "), Some(2048));
        assert_eq!(parse_bytes("1.5G"), None);
        assert_eq!(parse_bytes("G"), None);
        assert_eq!(parse_bytes("99999999999T"), None, "overflow is rejected");
        assert_eq!(parse_cores("20"), Some((20, 40)));
        assert_eq!(parse_cores("20,40"), Some((20, 40)));
        assert_eq!(parse_cores("1/3"), Some((1, 3)));
        assert_eq!(parse_cores("0"), None);
        assert_eq!(parse_cores("1,2,3"), None);
    }

    #[test]
    fn init_files_are_regular_json_files() {
        let dir = std::env::temp_dir().join(format!("dsnpu-sim-init-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        };
        let code = |p: &str| check_init_file(p).err().map(|e| e.acl_code());
        assert_eq!(
            code(&file("ok.json", r#"{"max_opqueue_num": "10000"}"#)),
            None
        );
        assert_eq!(
            code(&file("empty.json", "")),
            None,
            "CANN accepts an empty file"
        );
        assert_eq!(code(&file("text.json", "not json")), Some(100006));
        assert_eq!(code(&file("cut.json", r#"{"a": ["#)), Some(100006));
        let deep = format!("{}{}", "{\"a\":".repeat(11), "1}".repeat(11));
        assert_eq!(json_depths(deep.as_bytes()), (11, 0));
        assert_eq!(code(&file("deep.json", &deep)), Some(100006));
        let text = r#"{"s": "{{{{[[[[ \" {{{{"}"#;
        assert_eq!(json_depths(text.as_bytes()), (1, 0), "brackets in strings");
        assert_eq!(code(&dir.to_string_lossy()), Some(100003), "a directory");
        assert_eq!(code("/nonexistent/acl.json"), Some(100003));
        let e = check_init_file(&dir.to_string_lossy()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_variables_name_themselves() {
        let err = cfg(&[("DSNPU_SIM_DEVICES", "0")]).unwrap_err();
        assert_eq!(err.acl_code(), 100000);
        assert!(err.to_string().contains("DSNPU_SIM_DEVICES=\"0\""), "{err}");
        assert!(cfg(&[("DSNPU_SIM_MEM_BYTES", "lots")]).is_err());
        assert!(cfg(&[("DSNPU_SIM_HOST_MEM_BYTES", "0")]).is_err());
        assert_eq!(
            cfg(&[("DSNPU_SIM_HOST_MEM_BYTES", "2G")])
                .unwrap()
                .host_mem_bytes,
            Some(2 << 30)
        );
        assert!(cfg(&[("DSNPU_SIM_CHECK", "mem,racy")]).is_err());
        assert!(cfg(&[("DSNPU_SIM_CHECK", "mem,race,init,sync")]).is_ok());
        assert!(cfg(&[("DSNPU_SIM_CHECK", "mem,init")]).unwrap().init_check);
        assert!(cfg(&[("DSNPU_SIM_CHECK", "all")]).unwrap().init_check);
        assert!(!cfg(&[("DSNPU_SIM_CHECK", "mem,race")]).unwrap().init_check);
        // The kernel layer reads the words untrimmed: a padded word would be a check silently off.
        for padded in ["mem, race", " init", "sync ", "mem,\trace"] {
            let err = cfg(&[("DSNPU_SIM_CHECK", padded)]).unwrap_err();
            assert_eq!(err.acl_code(), 100000, "{padded:?}");
            assert!(err.to_string().contains("without spaces"), "{err}");
        }
        let c = cfg(&[
            ("DSNPU_SIM_DEVICES", "4"),
            ("DSNPU_SIM_MEM_BYTES", "1G"),
            ("DSNPU_SIM_AICORE_NUM", "8"),
        ])
        .unwrap();
        assert_eq!(
            (c.devices, c.mem_bytes, c.cube_cores, c.vector_cores),
            (4, 1 << 30, 8, 16)
        );
    }
}
