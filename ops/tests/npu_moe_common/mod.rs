//! What the MoE acceptance tests on the device share: the comparisons with the CPU reference. They run
//! on `npu_backend::checked_npu`, whose every launch is checked.
#![allow(dead_code)]
