//! The cube's Matmul tiling (`TCubeTiling`: `CubeTiling`, generated from `DsnpuCubeTiling` in
//! `include/dsnpu_kernels/tiling.h`) and the system workspace of mix kernels.
//!
//! Contract: [`CubeTiling::new`] turns a per-core problem and base block into the documented
//! `TCubeTiling` fields (asc-devkit `TCubeTiling结构体.md`): L1 steps and depths (K fully loaded in
//! L1 when it fits, else as many base-K steps as fit, L1 double buffered when it fits), L0 double
//! buffering where the buffers allow it, and [`CubeTiling::validate`] checks the documented
//! constraints against the cube core's buffers — L0A/L0B 64 KiB, L0C 128 KiB (f32), L1 512 KiB —
//! returning [`KernelError::CubeBufferOverflow`] rather than a tiling the kernel would fault on. The
//! host Matmul (`lib/matmul_intf.h`) checks the same constraints in `Init` and faults the block.

use crate::{KernelError, Result};

pub use crate::tiling_structs::CubeTiling;

/// L1 buffer of one cube core (910B/910C), bytes.
pub const L1_BYTES: u64 = 512 * 1024;
/// L0A and L0B buffers of one cube core, bytes each.
pub const L0AB_BYTES: u64 = 64 * 1024;
/// L0C (accumulator) buffer of one cube core, bytes.
pub const L0C_BYTES: u64 = 128 * 1024;

/// Bytes at the start of a mix kernel's workspace that belong to the system (`GetSysWorkSpacePtr`);
/// the operator's part (`GetUserWorkspace`) follows. dsnpu's host layer keeps nothing there; this is
/// dsnpu's size, not CANN's `GetLibApiWorkSpaceSize`, which an AI Core build must query instead.
/// Mirrors `kSysWorkspaceBytes` in `dsnpu_host/block.h`.
pub const SYS_WORKSPACE_BYTES: u64 = 1024 * 1024;

/// Base (cube step) sizes for a task of `single_m x single_n` over `k` when the task's rows should stream
/// as few times as the cube's buffers allow (the Matmul API streams A once per base_n columns): base_m
/// the rows (at most 128), base_n as wide as L0C (128 KiB of f32 at base_m rows) and L0B (a 16-deep
/// base of 4-byte inputs: 1024 columns) allow, base_k as deep as L0B then allows (16 to 64). Sized for
/// 4-byte inputs, a bound for every element type; L0B and L0C are then single-buffered at the widest.
pub fn wide_bases(single_m: u64, single_n: u64, k: u64) -> (u64, u64, u64) {
    const FRACTAL: u64 = 16;
    let up = |v: u64| v.div_ceil(FRACTAL) * FRACTAL;
    let base_m = up(single_m).min(128);
    let base_n = up(single_n)
        .min(L0C_BYTES / 4 / base_m / FRACTAL * FRACTAL)
        .min(L0AB_BYTES / (FRACTAL * 4));
    let base_k = (L0AB_BYTES / (base_n * 4) / FRACTAL * FRACTAL)
        .clamp(FRACTAL, 64)
        .min(up(k));
    (base_m, base_n, base_k)
}

/// One cube core's problem: `C[m, n] = A[m, k] * B[k, n]` out of the original `[M, Ka] x [Kb, N]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CubeProblem {
    pub org_m: u64,
    pub org_n: u64,
    pub org_k: u64,
    pub single_m: u64,
    pub single_n: u64,
    pub single_k: u64,
    pub used_cores: u64,
    /// The base block `baseM x baseN x baseK` (multiples of 16).
    pub base: (u64, u64, u64),
    /// Element bytes of A and B.
    pub a_bytes: u64,
    pub b_bytes: u64,
    /// Whether the Matmul adds an f32 bias row.
    pub bias: bool,
}

fn int(kernel: &'static str, what: &str, v: u64) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::InvalidShape {
        kernel,
        reason: format!("{what} = {v} exceeds TCubeTiling's int32"),
    })
}

impl CubeTiling {
    /// The tiling of one core's `single` block (`m, n, k`) of the `org` problem on `used_cores` cores,
    /// with A and B of `elem` bytes and no bias: [`Self::new`] of that [`CubeProblem`].
    pub fn without_bias(
        kernel: &'static str,
        org: (u64, u64, u64),
        single: (u64, u64, u64),
        base: (u64, u64, u64),
        used_cores: u64,
        elem: u64,
    ) -> Result<Self> {
        Self::new(
            kernel,
            CubeProblem {
                org_m: org.0,
                org_n: org.1,
                org_k: org.2,
                single_m: single.0,
                single_n: single.1,
                single_k: single.2,
                used_cores,
                base,
                a_bytes: elem,
                b_bytes: elem,
                bias: false,
            },
        )
    }

    /// The tiling of `p` for `kernel` (named in errors); see the module docs.
    pub fn new(kernel: &'static str, p: CubeProblem) -> Result<Self> {
        let (bm, bn, bk) = p.base;
        if bm == 0 || bn == 0 || bk == 0 || p.single_m == 0 || p.single_n == 0 || p.single_k == 0 {
            return Err(KernelError::InvalidShape {
                kernel,
                reason: format!(
                    "empty cube block: single {}x{}x{}, base {bm}x{bn}x{bk}",
                    p.single_m, p.single_n, p.single_k
                ),
            });
        }
        let a_blk = bm * bk * p.a_bytes;
        let b_blk = bn * bk * p.b_bytes;
        let bias_row = if p.bias { bn * 4 } else { 0 };
        // K steps held in L1: all of single_k if it fits (double buffered when that fits too), else
        // the most base-K steps that fit single buffered, at least one.
        let k_steps = p.single_k.div_ceil(bk);
        let fits = |steps: u64, db: u64| (a_blk + b_blk) * steps * db + bias_row <= L1_BYTES;
        let (step_k, db_l1) = if fits(k_steps, 2) {
            (k_steps, 2)
        } else if fits(k_steps, 1) {
            (k_steps, 1)
        } else {
            (
                (L1_BYTES.saturating_sub(bias_row) / (a_blk + b_blk)).max(1),
                1,
            )
        };
        let db = |blk: u64, cap: u64| if 2 * blk <= cap { 2 } else { 1 };
        let t = CubeTiling {
            usedCoreNum: int(kernel, "used cores", p.used_cores)?,
            M: int(kernel, "M", p.org_m)?,
            N: int(kernel, "N", p.org_n)?,
            Ka: int(kernel, "K", p.org_k)?,
            Kb: int(kernel, "K", p.org_k)?,
            singleCoreM: int(kernel, "singleCoreM", p.single_m)?,
            singleCoreN: int(kernel, "singleCoreN", p.single_n)?,
            singleCoreK: int(kernel, "singleCoreK", p.single_k)?,
            baseM: int(kernel, "baseM", bm)?,
            baseN: int(kernel, "baseN", bn)?,
            baseK: int(kernel, "baseK", bk)?,
            depthA1: int(kernel, "depthA1", step_k * db_l1)?,
            depthB1: int(kernel, "depthB1", step_k * db_l1)?,
            stepM: 1,
            stepN: 1,
            isBias: i32::from(p.bias),
            stepKa: int(kernel, "stepKa", step_k)?,
            stepKb: int(kernel, "stepKb", step_k)?,
            dbL0A: db(a_blk, L0AB_BYTES),
            dbL0B: db(b_blk, L0AB_BYTES),
            dbL0C: db(bm * bn * 4, L0C_BYTES),
            ..CubeTiling::default()
        };
        t.validate(kernel, p.a_bytes, p.b_bytes)?;
        Ok(t)
    }

    /// The documented constraints (module docs) for A and B elements of `a_bytes` and `b_bytes`.
    pub fn validate(&self, kernel: &'static str, a_bytes: u64, b_bytes: u64) -> Result<()> {
        let invalid = |reason: String| Err(KernelError::InvalidShape { kernel, reason });
        let pos = |v: i32| u64::try_from(v).ok().filter(|&v| v > 0);
        let fields = [
            self.baseM,
            self.baseN,
            self.baseK,
            self.depthA1,
            self.depthB1,
            self.stepM,
            self.stepN,
            self.stepKa,
            self.stepKb,
        ];
        if fields.iter().any(|&v| pos(v).is_none()) {
            return invalid(format!("non-positive base, depth or step in {self:?}"));
        }
        let v = |x: i32| x as u64; // positive, checked above
        if [self.dbL0A, self.dbL0B, self.dbL0C]
            .iter()
            .any(|&d| d != 1 && d != 2)
        {
            return invalid("dbL0A/B/C must be 1 or 2".into());
        }
        let (a_steps, b_steps) = (
            v(self.stepM) * v(self.stepKa),
            v(self.stepN) * v(self.stepKb),
        );
        if v(self.depthA1) != a_steps && v(self.depthA1) != 2 * a_steps {
            return invalid(format!(
                "depthA1 {} is neither stepM * stepKa = {a_steps} nor twice it",
                self.depthA1
            ));
        }
        if v(self.depthB1) != b_steps && v(self.depthB1) != 2 * b_steps {
            return invalid(format!(
                "depthB1 {} is neither stepN * stepKb = {b_steps} nor twice it",
                self.depthB1
            ));
        }
        if v(self.baseM) % 16 != 0 || v(self.baseN) % 16 != 0 || v(self.baseK) % 16 != 0 {
            return invalid(format!(
                "base block {}x{}x{} is not in whole 16-element fractals",
                self.baseM, self.baseN, self.baseK
            ));
        }
        let a_blk = v(self.baseM) * v(self.baseK) * a_bytes;
        let b_blk = v(self.baseN) * v(self.baseK) * b_bytes;
        let bias = if self.isBias != 0 {
            v(self.baseN) * 4
        } else {
            0
        };
        let checks = [
            ("L0A", a_blk * v(self.dbL0A), L0AB_BYTES),
            ("L0B", b_blk * v(self.dbL0B), L0AB_BYTES),
            (
                "L0C",
                v(self.baseM) * v(self.baseN) * 4 * v(self.dbL0C),
                L0C_BYTES,
            ),
            (
                "L1",
                a_blk * v(self.depthA1) + b_blk * v(self.depthB1) + bias,
                L1_BYTES,
            ),
        ];
        for (buffer, needed, available) in checks {
            if needed > available {
                return Err(KernelError::CubeBufferOverflow {
                    kernel,
                    buffer,
                    needed,
                    available,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(base: (u64, u64, u64), k: u64, bytes: u64) -> CubeProblem {
        CubeProblem {
            org_m: 64,
            org_n: 512,
            org_k: k,
            single_m: 64,
            single_n: 256,
            single_k: k,
            used_cores: 2,
            base,
            a_bytes: bytes,
            b_bytes: bytes,
            bias: false,
        }
    }

    #[test]
    fn short_k_is_fully_loaded_and_double_buffered() {
        // 64x64 A blocks (8 KiB) + 256x64 B blocks (32 KiB) in bf16: 4 K steps x 2 = 320 KiB of L1.
        let t = CubeTiling::new("t", problem((64, 256, 64), 256, 2)).unwrap();
        assert_eq!((t.stepKa, t.depthA1, t.depthB1), (4, 8, 8));
        // L0A 8 KiB x 2, L0B 32 KiB x 2 = 64 KiB (fits exactly), L0C 64 KiB x 2.
        assert_eq!((t.dbL0A, t.dbL0B, t.dbL0C), (2, 2, 2));
    }

    #[test]
    fn long_k_takes_the_steps_that_fit() {
        // 112 K steps of 40 KiB cannot all be in L1: 512 KiB / 40 KiB = 12 single-buffered steps.
        let t = CubeTiling::new("t", problem((64, 256, 64), 7168, 2)).unwrap();
        assert_eq!((t.stepKa, t.depthA1), (12, 12));
        assert_eq!(t.validate("t", 2, 2), Ok(()));
    }

    #[test]
    fn overflowing_buffers_are_typed_errors() {
        // 256 x 256 f32 accumulators: 256 KiB of L0C.
        let e = CubeTiling::new("t", problem((256, 256, 16), 64, 4)).unwrap_err();
        assert_eq!(
            e,
            KernelError::CubeBufferOverflow {
                kernel: "t",
                buffer: "L0C",
                needed: 256 * 256 * 4,
                available: L0C_BYTES,
            }
        );
        // A hand-made depth that overflows L1: 16 x (8 KiB + 32 KiB) = 640 KiB.
        let mut t = CubeTiling::new("t", problem((64, 256, 64), 256, 2)).unwrap();
        t.stepKa = 8;
        t.stepKb = 8;
        t.depthA1 = 16;
        t.depthB1 = 16;
        assert_eq!(
            t.validate("t", 2, 2),
            Err(KernelError::CubeBufferOverflow {
                kernel: "t",
                buffer: "L1",
                needed: 16 * (64 * 64 * 2 + 256 * 64 * 2),
                available: L1_BYTES,
            })
        );
        t.depthA1 = 12;
        assert!(matches!(
            t.validate("t", 2, 2),
            Err(KernelError::InvalidShape { .. })
        ));
    }
}
