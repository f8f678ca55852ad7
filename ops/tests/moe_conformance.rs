//! The MoE conformance suites run against the CPU reference itself: proves the suites' cases are valid
//! inputs, their guards terminate, and the macro expands; device backends run the same macro.
use dsnpu_ops::backend::Cpu;

dsnpu_ops::moe_conformance!(Cpu);
