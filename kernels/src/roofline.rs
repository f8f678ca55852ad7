//! The roofline model the benchmarks report kernels against: what a launch's simulator counters
//! (GM bytes, cube multiply-adds, vector element operations) would cost on one 910B2 die, and what
//! the operator itself must cost at least.
//!
//! # The model (one 910B2 die)
//! - HBM: ~1.6 TB/s (a third-party figure) → `t_mem = GM bytes / 1.6e12 s`.
//! - Cube: 24 cube cores at 1.8 GHz, each a 16×16×16 multiply-accumulate per cycle →
//!   24 · 4096 · 1.8e9 ≈ 1.77e14 MAC/s (≈ 354 TFLOPS) → `t_cube = MACs / 1.77e14 s`.
//! - Vector: 48 vector cores at 1.8 GHz, each 256 bytes per repeat per cycle. The kernels do their
//!   vector math in f32, so an element operation is 4 bytes: 48 · 64 · 1.8e9 ≈ 5.53e12 element
//!   operations/s → `t_vec = vector element ops / 5.53e12 s`.
//! - Modelled time = max(t_mem, t_cube, t_vec): perfect overlap of the three units, no launch
//!   overhead, no L2 reuse, every core busy. It is a bound, not a prediction.
//! - With the L2 model's counters ([`Machine::times_l2`]): `t_mem` = HBM bytes (L2 misses and
//!   write-backs) / 1.6e12 s, and every GM byte also passes the L2: `t_l2` = GM bytes / 5.53e12 s
//!   (GUESS, the figure of the host layer's `cost.h`: 24 AI Cores × 128 B/cycle × 1.8 GHz; no L2
//!   bandwidth is published). Modelled time = max(t_mem, t_l2, t_cube, t_vec).
//! - Roofline time of an operator = max(minimal bytes / HBM, necessary MACs / cube): what any kernel
//!   must spend. The ratio of the two times is what the kernel's extra traffic and work cost.

/// Peak rates of one die.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    pub hbm_bytes_per_s: f64,
    /// GUESS (see the module docs): L2 bytes per second over all cores.
    pub l2_bytes_per_s: f64,
    pub cube_macs_per_s: f64,
    pub vector_elems_per_s: f64,
}

/// One 910B2 die (see the module docs).
pub const ASCEND_910B2: Machine = Machine {
    hbm_bytes_per_s: 1.6e12,
    l2_bytes_per_s: 24.0 * 128.0 * 1.8e9,
    cube_macs_per_s: 24.0 * 16.0 * 16.0 * 16.0 * 1.8e9,
    vector_elems_per_s: 48.0 * (256.0 / 4.0) * 1.8e9,
};

/// Which unit bounds a modelled time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Hbm,
    L2,
    Cube,
    Vector,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::Hbm => "HBM",
            Bound::L2 => "L2",
            Bound::Cube => "cube",
            Bound::Vector => "vector",
        }
    }
}

/// The time of each unit for some traffic and work, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Times {
    pub mem: f64,
    /// GM traffic through the L2 (0 from [`Machine::times`], which charges all of it to `mem`).
    pub l2: f64,
    pub cube: f64,
    pub vector: f64,
}

impl Times {
    /// The slowest unit's time: the modelled time under perfect overlap.
    pub fn modelled(&self) -> f64 {
        self.mem.max(self.l2).max(self.cube).max(self.vector)
    }

    /// The unit that sets [`Times::modelled`] (memory first on ties).
    pub fn bound(&self) -> Bound {
        let t = self.modelled();
        if t == self.mem {
            Bound::Hbm
        } else if t == self.l2 {
            Bound::L2
        } else if t == self.cube {
            Bound::Cube
        } else {
            Bound::Vector
        }
    }
}

impl Machine {
    /// The units' times for `bytes` of GM traffic, `macs` cube multiply-adds and `vector_ops` vector
    /// element operations (a launch's counters).
    pub fn times(&self, bytes: u64, macs: u64, vector_ops: u64) -> Times {
        Times {
            mem: bytes as f64 / self.hbm_bytes_per_s,
            l2: 0.0,
            cube: macs as f64 / self.cube_macs_per_s,
            vector: vector_ops as f64 / self.vector_elems_per_s,
        }
    }

    /// The units' times with the L2 model's counters: `hbm_bytes` of HBM traffic out of `gm_bytes` of
    /// GM traffic (every GM byte passes the L2).
    pub fn times_l2(&self, gm_bytes: u64, hbm_bytes: u64, macs: u64, vector_ops: u64) -> Times {
        Times {
            l2: gm_bytes as f64 / self.l2_bytes_per_s,
            ..self.times(hbm_bytes, macs, vector_ops)
        }
    }

    /// The roofline time of an operator that must move `min_bytes` and do `min_macs` multiply-adds.
    pub fn roofline(&self, min_bytes: u64, min_macs: u64) -> f64 {
        self.times(min_bytes, min_macs, 0).modelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_910b2_rates() {
        let m = ASCEND_910B2;
        // 24 cores x 4096 MAC x 1.8 GHz and 48 cores x 64 f32 lanes x 1.8 GHz.
        assert_eq!(m.cube_macs_per_s, 176_947_200_000_000.0);
        assert_eq!(m.vector_elems_per_s, 5_529_600_000_000.0);
        // 3.2 MB at 1.6 TB/s is 2 µs; 1.769472e8 MACs is 1 µs.
        let t = m.times(3_200_000, 176_947_200, 0);
        assert!((t.mem - 2e-6).abs() < 1e-15 && (t.cube - 1e-6).abs() < 1e-15);
        assert_eq!((t.modelled(), t.bound()), (t.mem, Bound::Hbm));
        let t = m.times(0, 0, 5_529_600);
        assert_eq!(t.bound(), Bound::Vector);
        assert!((t.modelled() - 1e-6).abs() < 1e-15);
        assert_eq!(
            m.roofline(1_600_000, 176_947_200 * 3),
            m.times(0, 176_947_200 * 3, 0).cube
        );
        assert_eq!(Bound::Cube.name(), "cube");
        // 5.5296e12 B/s of L2: 5.5296 MB of GM traffic is 1 µs of L2, 1.6 MB of HBM 1 µs of HBM.
        let t = m.times_l2(5_529_600 * 2, 1_600_000, 0, 0);
        assert!((t.l2 - 2e-6).abs() < 1e-15 && (t.mem - 1e-6).abs() < 1e-15);
        assert_eq!(
            (t.modelled(), t.bound(), t.bound().name()),
            (t.l2, Bound::L2, "L2")
        );
        assert_eq!(m.times(1, 0, 0).l2, 0.0);
    }
}
