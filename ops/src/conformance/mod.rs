//! The conformance harness: tolerances, seeded cases, and suites any backend can be run through.
pub mod cases;
pub mod dense;
pub mod mla;
pub mod moe;
pub mod tolerance;
