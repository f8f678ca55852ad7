//! Runtime benchmarks on the simulator (or a real device, if CANN is installed):
//! - allocation + free latency of the caching allocator against raw `aclrtMalloc`/`aclrtFree`;
//! - asynchronous host-to-device copy throughput from pinned memory.
//!
//! Run: `cargo bench --bench runtime` (add `-- --measurement-time 2` for a quick pass).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dsnpu_ffi::{result, sys};
use dsnpu_runtime::{Device, HostBuffer, MemPool};

fn alloc_free(c: &mut Criterion) {
    let device = Device::new(0).expect("device 0");
    let stream = device.new_stream().expect("stream");
    let pool = MemPool::new(&device);
    let mut group = c.benchmark_group("alloc_free");
    for size in [4usize << 10, 1 << 20, 16 << 20] {
        group.bench_with_input(BenchmarkId::new("pool", size), &size, |b, &size| {
            b.iter(|| {
                let buf = pool.alloc::<u8>(&stream, size).expect("pool alloc");
                black_box(buf.device_ptr());
            })
        });
        group.bench_with_input(BenchmarkId::new("aclrtMalloc", size), &size, |b, &size| {
            device.bind_to_thread().expect("bind");
            b.iter(|| {
                let p = result::memory::malloc(
                    size,
                    sys::aclrtMemMallocPolicy::ACL_MEM_MALLOC_HUGE_FIRST,
                )
                .expect("aclrtMalloc");
                // SAFETY: `p` was just allocated and nothing else uses it.
                unsafe { result::memory::free(black_box(p)) }.expect("aclrtFree");
            })
        });
    }
    group.finish();
}

fn h2d_throughput(c: &mut Criterion) {
    let device = Device::new(0).expect("device 0");
    let stream = device.new_stream().expect("stream");
    let len = 64 << 20;
    let src = HostBuffer::from_slice(&device, &vec![0x5au8; len]).expect("pinned buffer");
    let mut dst = stream.alloc::<u8>(len).expect("device buffer");
    let mut group = c.benchmark_group("memcpy_htod_async");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(20);
    group.bench_function("64MiB", |b| {
        b.iter(|| {
            stream.memcpy_htod(&src, &mut dst).expect("copy");
            stream.synchronize().expect("sync");
        })
    });
    group.finish();
}

criterion_group!(benches, alloc_free, h2d_throughput);
criterion_main!(benches);
