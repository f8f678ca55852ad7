//! The pipe-level cost model's figures for a launch, next to the roofline (`crate::roofline`).
//!
//! The host Ascend C layer times every block on its pipes (`include/dsnpu_ascendc/dsnpu_host/cost.h`
//! holds the per-instruction table and says which numbers are guesses): each pipe is an in-order server,
//! instructions are issued in program order by the scalar unit, and pipes wait for each other only where
//! the kernel synchronizes. The simulator reports the busiest core's cycles (its blocks one after another)
//! and the per-pipe busy fractions of the longest block. This module turns them into microseconds (plus
//! a launch latency) and names what bounds the launch.
//!
//! Unlike the roofline, the model sees the scalar unit, vector repeat granularity, cube fractal padding,
//! per-transfer GM latency, barriers, whether double buffering really overlaps, and L2 reuse: every GM
//! transfer is looked up in an L2 model (192 MiB, 512-byte lines, fully associative LRU, write-back;
//! cost.h) and
//! its hits cost L2 bandwidth, its misses (and the first write of each dirtied line) the block's share
//! of HBM. To stay deterministic the timing looks each block up in a private slice (192 MiB /
//! concurrent blocks, shared by a mix block's cores), empty at the start of every block: data shared
//! between blocks or between launches misses once per block there (pessimistic for such data), except
//! that after a `SyncAll` what any block wrote before it is a hit (`LaunchL2`, `dsnpu_host/sync.h`). A
//! `SyncAll` lets every block go on at the latest block's arrival. The launch's counters
//! `hbm_read_bytes` / `hbm_write_bytes` come from replaying every core's lookups, in a fixed order,
//! through one L2 of the die's size (`dsnpu_host/l2_die.h`): shared data misses once per launch; nothing
//! is carried between launches. It does not see register-only scalar work between API calls (loops,
//! address arithmetic), bank conflicts, or the HBM bandwidth a block could take over from blocks that
//! have finished (each keeps its fixed share: pessimistic for unbalanced launches).

/// AI Core clock of the 910B2 (the roofline's figure).
pub const CLOCK_HZ: f64 = 1.8e9;

/// Time from a launch being issued to its blocks starting, microseconds. GUESS (not published);
/// order of magnitude of a device-side kernel launch.
pub const LAUNCH_LATENCY_US: f64 = 3.0;

/// Pipes in the order of the simulator's `pipe_busy_q8` bytes.
pub const PIPES: [&str; 7] = ["S", "V", "M", "MTE1", "MTE2", "MTE3", "FIX"];

/// Below this busy fraction of its busiest pipe, a launch is bound by latency and waiting
/// (synchronization, GM latency, launch overhead), not by any unit's throughput.
pub const LATENCY_BOUND_BELOW: f64 = 0.5;

/// The model's view of one launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipeModel {
    /// Cycles of the busiest core.
    pub cycles: u64,
    /// Busy fraction of each pipe of the longest block, in [`PIPES`] order.
    pub pipe_busy: [f64; 7],
}

impl PipeModel {
    /// Modelled launch time in microseconds: the busiest core plus the launch latency.
    pub fn model_us(&self) -> f64 {
        self.cycles as f64 / CLOCK_HZ * 1e6 + LAUNCH_LATENCY_US
    }

    /// What bounds the launch: the busiest pipe's name ("S" for the scalar unit, "V", "M", "MTE2", ...),
    /// or "latency" when no pipe is busy at least [`LATENCY_BOUND_BELOW`] of the time.
    pub fn bound(&self) -> &'static str {
        let (i, f) = self
            .pipe_busy
            .iter()
            .enumerate()
            .fold((0, 0.0), |b, (i, &f)| if f > b.1 { (i, f) } else { b });
        if f < LATENCY_BOUND_BELOW {
            "latency"
        } else {
            PIPES[i]
        }
    }

    /// "V 0.83 MTE2 0.41 ..." for the pipes busy at least 5 % of the time.
    pub fn busy_summary(&self) -> String {
        PIPES
            .iter()
            .zip(self.pipe_busy)
            .filter(|(_, f)| *f >= 0.05)
            .map(|(p, f)| format!("{p} {f:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_and_bound() {
        let m = PipeModel {
            cycles: 1_800_000,
            pipe_busy: [0.1, 0.9, 0.0, 0.0, 0.6, 0.2, 0.0],
        };
        assert!((m.model_us() - (1000.0 + LAUNCH_LATENCY_US)).abs() < 1e-9);
        assert_eq!(m.bound(), "V");
        assert_eq!(m.busy_summary(), "S 0.10 V 0.90 MTE2 0.60 MTE3 0.20");
        let idle = PipeModel {
            cycles: 10,
            pipe_busy: [0.2, 0.3, 0.0, 0.0, 0.1, 0.0, 0.0],
        };
        assert_eq!(idle.bound(), "latency");
    }
}
