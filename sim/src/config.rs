//! The simulator's configuration, read from the environment once, at `aclInit`.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DSNPU_SIM_DEVICES` | number of virtual devices, 1..=64 | 1 |
//! | `DSNPU_SIM_MEM_BYTES` | device memory per device: bytes, or with a `K`/`M`/`G`/`T` suffix (binary, optional `iB`/`B`) | 64 GiB |
//! | `DSNPU_SIM_AICORE_NUM` | cores per device: `C` (cube C, vector 2C) or `C,V` | 24,48 |
//! | `DSNPU_SIM_HCCL_TIMEOUT_MS` | how long a collective waits for its other ranks | 120000 |
//! | `DSNPU_SIM_CHECK` | kernel sanitizer checks: comma-separated `mem`, `race`, `init`, `sync`, or `all` (read by the host kernel layer at each block; validated here) | `mem` |
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
    pub cube_cores: u32,
    pub vector_cores: u32,
    pub hccl_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            devices: 1,
            mem_bytes: 64 << 30,
            cube_cores: 24,
            vector_cores: 48,
            hccl_timeout: Duration::from_secs(120),
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
            let known = ["mem", "race", "init", "sync", "all"];
            if v.split(',').any(|w| !known.contains(&w.trim())) {
                return Err(bad(
                    "DSNPU_SIM_CHECK",
                    &v,
                    "a comma-separated list of mem, race, init, sync, all",
                ));
            }
        }
        Ok(cfg)
    }

    /// How many blocks of one launch run at once: the larger core count. Launches with more
    /// blocks run in waves, as on the hardware.
    pub fn resident_blocks(&self) -> u32 {
        self.cube_cores.max(self.vector_cores).max(1)
    }
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
    fn bad_variables_name_themselves() {
        let err = cfg(&[("DSNPU_SIM_DEVICES", "0")]).unwrap_err();
        assert_eq!(err.acl_code(), 100000);
        assert!(err.to_string().contains("DSNPU_SIM_DEVICES=\"0\""), "{err}");
        assert!(cfg(&[("DSNPU_SIM_MEM_BYTES", "lots")]).is_err());
        assert!(cfg(&[("DSNPU_SIM_CHECK", "mem,racy")]).is_err());
        assert!(cfg(&[("DSNPU_SIM_CHECK", "mem,race,init,sync")]).is_ok());
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
