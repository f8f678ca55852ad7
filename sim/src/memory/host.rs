//! How much memory the host can back: the budget every simulated allocation is charged against.
//!
//! Device memory is host memory committed lazily (see `backing`), so the simulated device can
//! only deliver what the host can commit when the memory is finally written. The budget is taken
//! once, at `aclInit`: `MemAvailable` from `/proc/meminfo`, lowered to the room left under the
//! process's memory cgroup limit when there is one, minus a headroom for the process's own host
//! memory (one eighth, at most 4 GiB). Swap is not counted: memory that only fits in swap stalls
//! rather than fails. Other processes that allocate later are not seen; `DSNPU_SIM_HOST_MEM_BYTES`
//! overrides the estimate.
use std::fs;

const GIB: u64 = 1 << 30;

/// The budget when nothing can be read (not Linux, no /proc): 8 GiB.
const FALLBACK_BYTES: u64 = 8 * GIB;

/// Bytes of host memory the simulator may commit, estimated now.
pub(crate) fn backable_bytes() -> u64 {
    let available = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_field(&t, "MemAvailable"));
    let Some(mut room) = available else {
        return FALLBACK_BYTES;
    };
    if let Some(cg) = cgroup_room() {
        room = room.min(cg);
    }
    // Whole pages: the budget is charged in multiples of 32 bytes.
    (room - headroom(room)) & !4095
}

/// What is kept back for the process itself.
pub(crate) fn headroom(room: u64) -> u64 {
    (room / 8).min(4 * GIB)
}

/// A `/proc/meminfo` field in bytes (`Name:   123 kB`).
pub(crate) fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// A `memory.stat` field (`name value`).
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// Room left under the memory cgroup's limit (reclaimable file cache counted as free), when the
/// process's cgroup has a limit.
fn cgroup_room() -> Option<u64> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // cgroup v2: "0::/path".
    let v2_path = own.lines().find_map(|l| l.strip_prefix("0::"));
    let mut v2_dirs = vec!["/sys/fs/cgroup".to_string()];
    if let Some(p) = v2_path {
        v2_dirs.insert(0, format!("/sys/fs/cgroup{}", p.trim_end_matches('/')));
    }
    for dir in &v2_dirs {
        if let Ok(max) = fs::read_to_string(format!("{dir}/memory.max")) {
            let max: u64 = max.trim().parse().ok()?; // "max": no limit
            let current: u64 = fs::read_to_string(format!("{dir}/memory.current"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let inactive = fs::read_to_string(format!("{dir}/memory.stat"))
                .ok()
                .and_then(|t| stat_field(&t, "inactive_file"))
                .unwrap_or(0);
            return Some(max.saturating_sub(current.saturating_sub(inactive)));
        }
    }
    // cgroup v1: "N:memory:/path" (or a combined controller list).
    let v1_path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let mut v1_dirs = vec!["/sys/fs/cgroup/memory".to_string()];
    if let Some(p) = v1_path {
        v1_dirs.insert(
            0,
            format!("/sys/fs/cgroup/memory{}", p.trim_end_matches('/')),
        );
    }
    for dir in &v1_dirs {
        if let Ok(limit) = fs::read_to_string(format!("{dir}/memory.limit_in_bytes")) {
            let limit: u64 = limit.trim().parse().ok()?;
            // An unlimited v1 cgroup reports a number near i64::MAX.
            if limit >= 1 << 60 {
                return None;
            }
            let usage: u64 = fs::read_to_string(format!("{dir}/memory.usage_in_bytes"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let inactive = fs::read_to_string(format!("{dir}/memory.stat"))
                .ok()
                .and_then(|t| stat_field(&t, "total_inactive_file"))
                .unwrap_or(0);
            return Some(limit.saturating_sub(usage.saturating_sub(inactive)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let text = "MemTotal:       24683664 kB\nMemFree:  100 kB\nMemAvailable:   23645772 kB\n";
        assert_eq!(meminfo_field(text, "MemAvailable"), Some(23_645_772 * 1024));
        assert_eq!(meminfo_field(text, "MemFree"), Some(102_400));
        assert_eq!(meminfo_field(text, "Mem"), None, "whole names only");
        assert_eq!(meminfo_field(text, "SwapFree"), None);
    }

    #[test]
    fn stat_fields_and_headroom() {
        let stat = "cache 10\ninactive_file 4096\nactive_file 1\n";
        assert_eq!(stat_field(stat, "inactive_file"), Some(4096));
        assert_eq!(stat_field(stat, "file"), None);
        assert_eq!(headroom(8 * GIB), GIB);
        assert_eq!(headroom(100 * GIB), 4 * GIB);
    }

    #[test]
    fn the_budget_is_below_what_the_host_reports_available() {
        let text = fs::read_to_string("/proc/meminfo").unwrap();
        let available = meminfo_field(&text, "MemAvailable").unwrap();
        let budget = backable_bytes();
        assert!(budget > 0);
        // Other processes may free memory between the two reads: allow a little slack.
        assert!(
            budget <= available + available / 16,
            "{budget} > {available}"
        );
    }
}
