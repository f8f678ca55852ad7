//! Kernel benchmarking shared by `dsnpu bench` and the criterion benches: [`cases`] (the launches at
//! DeepSeek-V3 shapes, with each operator's minimal traffic and work), [`measure`] (counters and
//! modelled time on the simulator, event-timed medians on a device) and [`plot`] (the roofline PNG).
pub mod cases;
pub mod glyphs;
pub mod measure;
pub mod plot;
