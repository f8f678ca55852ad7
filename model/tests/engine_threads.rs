//! The device engine moves between threads (the Python extension calls and drops it on any thread):
//! loaded on one thread, then run and dropped on another, it gives the ids it gives on its own thread
//! and hands back all its device memory, since the runtime binds the device's context on whichever
//! thread makes an AscendCL call. One test in a binary of its own: the device's free memory is
//! process-wide, and a parallel test would move it.
mod common;

use common::data_dir;
use dsnpu_model::device::{Engine, EngineOptions};
use dsnpu_runtime::Device;

fn load() -> Engine {
    let opts = EngineOptions {
        num_blocks: 64,
        block_size: 4,
        temperature: 0.8,
        top_p: 0.9,
        seed: 7,
        ..EngineOptions::default()
    };
    Engine::load(data_dir("v3_base"), opts, &mut |_, _| {}).unwrap()
}

fn run(e: &mut Engine) -> Vec<Vec<i32>> {
    e.generate(&[vec![5, 9, 14, 2], vec![3, 1, 4, 1, 5, 9]], 6, &[])
        .unwrap()
}

#[test]
fn an_engine_run_and_dropped_on_another_thread_gives_its_ids_and_frees_its_memory() {
    let device = Device::new(0).unwrap();
    // The pool caches freed blocks: emptied, the device's free memory counts them.
    let free = || {
        device.pool().empty_cache();
        device.mem_info().unwrap().free
    };
    let before = free();

    let mut here = load();
    let want = run(&mut here);
    drop(here);
    assert_eq!(
        free(),
        before,
        "an engine dropped on the thread that loaded it"
    );

    let mut e = load();
    assert!(free() < before, "the engine holds device memory");
    let got = std::thread::spawn(move || {
        let got = run(&mut e);
        drop(e);
        got
    })
    .join()
    .unwrap();
    assert_eq!(got, want);
    assert_eq!(free(), before, "an engine dropped on another thread");
}
