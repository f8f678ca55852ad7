//! The JSON report every kernel bench writes to `target/bench-reports/<bench>.json`, so results can be
//! compared across runs and plotted without parsing criterion's output:
//!
//! ```json
//! {"bench": "NAME", "device": "910B2 model", "cases": [{"kernel", "shape", "dtype", "gm_read_bytes",
//!  "gm_write_bytes", "minimal_bytes", "ratio", "cube_macs", "vector_ops", "model_us", "roof_us", "bound",
//!  "hbm_read_bytes", "hbm_write_bytes"}]}
//! ```
//!
//! `gm_read_bytes` / `gm_write_bytes` are all GM traffic the launch issued; `hbm_read_bytes` /
//! `hbm_write_bytes` the HBM traffic of it under the host layer's L2 model (32-byte sectors fetched by
//! read misses, dirtied sectors written back; `include/dsnpu_ascendc/dsnpu_host/cost.h`), `null` where
//! a bench has no such count.
//!
//! `ratio` is GM bytes moved over the minimal bytes; `model_us` is the cost model's time for the launch's
//! counters and `roof_us` the operator's roofline time (`crate::roofline`); `bound` names the unit that
//! sets `model_us`.
use std::io;
use std::path::{Path, PathBuf};

/// One benchmarked launch.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchCase {
    pub kernel: String,
    pub shape: String,
    pub dtype: String,
    pub gm_read_bytes: u64,
    pub gm_write_bytes: u64,
    pub minimal_bytes: u64,
    pub cube_macs: u64,
    pub vector_ops: u64,
    pub model_us: f64,
    pub roof_us: f64,
    pub bound: String,
    /// GM bytes read that missed the L2 model (HBM reads), when the bench measured them.
    pub hbm_read_bytes: Option<u64>,
    /// GM bytes written that the L2 model writes back to HBM, when the bench measured them.
    pub hbm_write_bytes: Option<u64>,
}

impl BenchCase {
    /// GM bytes moved over the minimal bytes (0 when the minimum is 0).
    pub fn ratio(&self) -> f64 {
        if self.minimal_bytes == 0 {
            0.0
        } else {
            (self.gm_read_bytes + self.gm_write_bytes) as f64 / self.minimal_bytes as f64
        }
    }

    fn to_json(&self) -> String {
        format!(
            "{{\"kernel\": {}, \"shape\": {}, \"dtype\": {}, \"gm_read_bytes\": {}, \"gm_write_bytes\": {}, \
             \"minimal_bytes\": {}, \"ratio\": {}, \"cube_macs\": {}, \"vector_ops\": {}, \"model_us\": {}, \
             \"roof_us\": {}, \"bound\": {}, \"hbm_read_bytes\": {}, \"hbm_write_bytes\": {}}}",
            json_str(&self.kernel),
            json_str(&self.shape),
            json_str(&self.dtype),
            self.gm_read_bytes,
            self.gm_write_bytes,
            self.minimal_bytes,
            json_num(self.ratio()),
            self.cube_macs,
            self.vector_ops,
            json_num(self.model_us),
            json_num(self.roof_us),
            json_str(&self.bound),
            json_opt(self.hbm_read_bytes),
            json_opt(self.hbm_write_bytes),
        )
    }
}

/// A bench's report: its name, the modelled device and its cases.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub bench: String,
    pub device: String,
    pub cases: Vec<BenchCase>,
}

impl BenchReport {
    /// An empty report for `bench` on the 910B2 model.
    pub fn new(bench: &str) -> BenchReport {
        BenchReport {
            bench: bench.to_string(),
            device: "910B2 model".to_string(),
            cases: Vec::new(),
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let cases: Vec<String> = self
            .cases
            .iter()
            .map(|c| format!("    {}", c.to_json()))
            .collect();
        format!(
            "{{\"bench\": {}, \"device\": {}, \"cases\": [\n{}\n]}}\n",
            json_str(&self.bench),
            json_str(&self.device),
            cases.join(",\n")
        )
    }

    /// Writes `<target>/bench-reports/<bench>.json` and returns its path. `<target>` is
    /// `CARGO_TARGET_DIR` when set, else `target` under `workspace_root`.
    pub fn write(&self, workspace_root: &Path) -> io::Result<PathBuf> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root.join("target"));
        let dir = target.join("bench-reports");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.bench));
        std::fs::write(&path, self.to_json())?;
        Ok(path)
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(x: Option<u64>) -> String {
    x.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// JSON has no NaN or infinity: those become `null`.
fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_json_with_the_documented_fields() {
        let mut r = BenchReport::new("demo");
        r.cases.push(BenchCase {
            kernel: "rms_norm_bf16".into(),
            shape: "[16, 7168] \"x\"".into(),
            dtype: "bf16".into(),
            gm_read_bytes: 300,
            gm_write_bytes: 100,
            minimal_bytes: 200,
            cube_macs: 0,
            vector_ops: 7,
            model_us: 0.5,
            roof_us: f64::NAN,
            bound: "HBM".into(),
            hbm_read_bytes: Some(120),
            hbm_write_bytes: None,
        });
        let j = r.to_json();
        assert!(j.starts_with("{\"bench\": \"demo\", \"device\": \"910B2 model\", \"cases\": ["));
        assert!(j.contains("\"shape\": \"[16, 7168] \\\"x\\\"\""));
        assert!(j.contains("\"ratio\": 2,"));
        assert!(j.contains("\"roof_us\": null"));
        assert!(j.contains("\"hbm_read_bytes\": 120, \"hbm_write_bytes\": null}"));
        assert_eq!(r.cases[0].ratio(), 2.0);
    }
}
