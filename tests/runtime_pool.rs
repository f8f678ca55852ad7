//! The stream-ordered caching allocator against the simulator, on one 64 MiB device so that
//! out-of-memory is reachable. Tests run one at a time (they measure device memory).

use std::sync::{Mutex, MutexGuard, Once};

use dsnpu_ffi::sys;
use dsnpu_runtime::{Device, HostBuffer, MemPool, PoolStats, RuntimeError};

const MIB: usize = 1 << 20;

fn setup() -> (Device, MutexGuard<'static, ()>) {
    static ENV: Once = Once::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    ENV.call_once(|| {
        std::env::set_var("DSNPU_SIM_DEVICES", "1");
        std::env::set_var("DSNPU_SIM_MEM_BYTES", "64M");
    });
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    (Device::new(0).unwrap(), guard)
}

/// What the simulator charges for `aclrtMalloc(size)` (its documented rule, like the real one).
fn charge(size: usize) -> usize {
    size.next_multiple_of(32) + 32
}

#[test]
fn same_stream_reuse_and_statistics() {
    let (d, _g) = setup();
    let pool = MemPool::new(&d);
    let s = d.new_stream().unwrap();
    let a = pool.alloc::<u8>(&s, 1000).unwrap();
    let pa = a.device_ptr();
    drop(a);
    // 900 bytes rounds to the same 1024-byte block: served from the cache without a device call.
    let b = pool.alloc::<u8>(&s, 900).unwrap();
    assert_eq!(b.device_ptr(), pa);
    assert_eq!(
        pool.stats(),
        PoolStats {
            allocated: 1024,
            reserved: 1024,
            peak_allocated: 1024,
            peak_reserved: 1024,
            hits: 1,
            misses: 1,
            oom_flushes: 0,
        }
    );
    let c = pool.alloc::<f32>(&s, 1024).unwrap(); // 4096 bytes
    let e = pool.alloc::<f32>(&s, 1).unwrap(); // 512 bytes (the 1024 block is taken)
    drop((b, c, e));
    let st = pool.stats();
    assert_eq!(
        (st.allocated, st.reserved, st.cached()),
        (0, 1024 + 4096 + 512, 5632)
    );
    assert_eq!((st.peak_allocated, st.hits, st.misses), (5632, 1, 3));
    assert_eq!(pool.empty_cache(), 5632);
    assert_eq!(pool.stats().reserved, 0);
}

#[test]
fn a_much_larger_block_is_not_used_for_a_small_request() {
    let (d, _g) = setup();
    let pool = MemPool::new(&d);
    let s = d.new_stream().unwrap();
    drop(pool.alloc::<u8>(&s, 8192).unwrap());
    let small = pool.alloc::<u8>(&s, 100).unwrap();
    let st = pool.stats();
    assert_eq!((st.hits, st.misses, st.reserved), (0, 2, 8192 + 512));
    drop(small);
}

#[test]
fn cross_stream_reuse_waits_for_the_previous_stream() {
    let (d, _g) = setup();
    let pool = MemPool::new(&d);
    let s1 = d.new_stream().unwrap();
    let s2 = d.new_stream().unwrap();
    let n = 4 * MIB; // 16 MiB of u32
    let ones = HostBuffer::from_slice(&d, &vec![1u32; n]).unwrap();
    let mut a = pool.alloc::<u32>(&s1, n).unwrap();
    let pa = a.device_ptr();
    s1.memcpy_htod(&ones, &mut a).unwrap();
    drop(a); // back to the cache while the copy may still run on s1
    let mut b = pool.alloc::<u32>(&s2, n).unwrap();
    assert_eq!(
        b.device_ptr(),
        pa,
        "the cached block is reused across streams"
    );
    // If s2 did not wait for s1, the copy of ones could land after this fill.
    s2.memset_zeros(&mut b).unwrap();
    assert!(b.to_vec().unwrap().iter().all(|&v| v == 0));
    assert_eq!(pool.stats().hits, 1);
}

#[test]
fn out_of_memory_is_typed_and_says_requested_free_and_cached() {
    let (d, _g) = setup();
    let pool = MemPool::new(&d);
    let s = d.new_stream().unwrap();
    let keep = pool.alloc::<u8>(&s, 8 * MIB).unwrap();
    drop(pool.alloc::<u8>(&s, 4 * MIB).unwrap()); // cached
    let free_before = d.mem_info().unwrap().free;
    match pool.alloc::<u8>(&s, 100 * MIB) {
        Err(RuntimeError::OutOfMemory {
            device: 0,
            requested,
            free,
            cached,
            allocated,
        }) => {
            assert_eq!(requested, 100 * MIB);
            assert_eq!(cached, 4 * MIB);
            assert_eq!(allocated, 8 * MIB);
            // The cache was released before the retry: its memory is free now.
            assert_eq!(free, free_before + charge(4 * MIB));
        }
        other => panic!("{other:?}"),
    }
    let st = pool.stats();
    assert_eq!((st.oom_flushes, st.reserved), (1, 8 * MIB));
    drop(keep);

    // The same through the raw path: the simulator's out-of-memory code.
    let e = s.alloc_uncached::<u8>(100 * MIB).unwrap_err();
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_MEMORY_ALLOCATION));
}

#[test]
fn out_of_memory_releases_the_cache_and_retries() {
    let (d, _g) = setup();
    let pool = MemPool::new(&d);
    let s = d.new_stream().unwrap();
    drop(pool.alloc::<u8>(&s, 40 * MIB).unwrap());
    assert_eq!(pool.stats().cached(), 40 * MIB);
    // 48 MiB does not fit next to the cached 40 MiB in 64 MiB, nor can it reuse it.
    let big = pool.alloc::<u8>(&s, 48 * MIB).unwrap();
    let st = pool.stats();
    assert_eq!(
        (st.oom_flushes, st.reserved, st.allocated, st.misses),
        (1, 48 * MIB, 48 * MIB, 2)
    );
    assert_eq!(st.peak_reserved, 48 * MIB);
    drop(big);
}

#[test]
fn malloc_and_free_move_device_memory() {
    let (d, _g) = setup();
    let s = d.new_stream().unwrap();
    let before = d.mem_info().unwrap().free;
    let a = s.alloc_uncached::<f32>(MIB).unwrap();
    assert_eq!(d.mem_info().unwrap().free, before - charge(4 * MIB));
    drop(a);
    assert_eq!(d.mem_info().unwrap().free, before);
    // A pool returns its cache to the device when dropped.
    let pool = MemPool::new(&d);
    drop(pool.alloc::<u8>(&s, 3 * MIB).unwrap());
    assert_eq!(d.mem_info().unwrap().free, before - charge(3 * MIB));
    drop(pool);
    assert_eq!(d.mem_info().unwrap().free, before);
}

/// A borrowed stream released by its owner is never reached again by the pool: other threads'
/// allocations that take the blocks it used last (and order themselves after it) while the owner
/// releases and destroys it must neither fail nor touch the destroyed handle. Before
/// `Stream::release`, an allocation that had just upgraded its weak reference recorded an event on
/// the stream its owner destroyed a moment later (`aclrtRecordEvent`: invalid stream handle).
#[test]
fn a_released_borrowed_stream_is_not_reached_by_other_threads_allocations() {
    let (d, _g) = setup();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let borrowers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| -> Result<(), RuntimeError> {
                    d.bind_to_thread()?;
                    for _ in 0..200 {
                        let raw = dsnpu_ffi::result::stream::create()?;
                        // SAFETY: `raw` is live on device 0's default context (bound above) and
                        // destroyed only after its one wrapper is released.
                        let s = unsafe { dsnpu_runtime::Stream::borrow_raw(&d, raw) }?;
                        let mut b = s.alloc::<u32>(4096)?;
                        s.memset_zeros(&mut b)?;
                        drop(b); // cached, its last use on `s`
                        s.release()?;
                        // SAFETY: released above; nothing of this crate reaches it any more.
                        unsafe { dsnpu_ffi::result::stream::destroy(raw) }?;
                    }
                    Ok(())
                })
            })
            .collect();
        let taker = scope.spawn(|| -> Result<usize, RuntimeError> {
            let s = d.new_stream()?;
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut b = s.alloc::<u32>(4096)?;
                s.memset_zeros(&mut b)?;
                s.synchronize()?;
                rounds += 1;
            }
            Ok(rounds)
        });
        // Stop the taker before any assertion, so that a failure cannot leave it running.
        let borrowed: Vec<_> = borrowers.into_iter().map(|b| b.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = taker.join().unwrap();
        for r in borrowed {
            r.expect("a borrower's stream work");
        }
        assert!(rounds.expect("the taker's allocations") > 0);
    });
}
