//! The runtime's transfer counters: every host↔device copy is counted with its bytes where it is made,
//! a download is one host wait, and a stream synchronization makes later host access to buffers it
//! covered wait-free (and uncounted).
use dsnpu_runtime::{transfer_stats, Device, HostBuffer};

#[test]
fn copies_and_waits_are_counted_where_they_happen() {
    let dev = Device::new(0).expect("device 0 of the simulator");
    let s = dev.new_stream().unwrap();
    let before = transfer_stats();
    let a = s.upload(&[1.0f32; 100]).unwrap();
    let d = transfer_stats() - before;
    assert_eq!((d.h2d_copies, d.h2d_bytes, d.d2h_bytes), (1, 400, 0));

    // A device-to-device copy crosses nothing; the download is one copy and one wait.
    let mut b = s.alloc::<f32>(100).unwrap();
    s.memcpy_dtod(&a, &mut b).unwrap();
    let before = transfer_stats();
    assert_eq!(b.to_vec().unwrap(), vec![1.0; 100]);
    let d = transfer_stats() - before;
    assert_eq!(
        (d.h2d_bytes, d.d2h_copies, d.d2h_bytes, d.syncs),
        (0, 1, 400, 1)
    );

    // After a stream synchronization, reading a buffer it covered waits for nothing.
    let mut c = s.alloc::<f32>(100).unwrap();
    s.memcpy_dtod(&a, &mut c).unwrap();
    let before = transfer_stats();
    s.synchronize().unwrap();
    assert_eq!(c.to_vec().unwrap(), vec![1.0; 100]);
    let d = transfer_stats() - before;
    assert_eq!((d.d2h_bytes, d.syncs), (400, 1));

    // Queued copies through pinned memory count too, and waiting on the stream is one sync.
    let mut host = HostBuffer::<i32>::new(&dev, 8).unwrap();
    host.as_mut_slice().unwrap().copy_from_slice(&[7; 8]);
    let mut dst = s.alloc::<i32>(8).unwrap();
    let before = transfer_stats();
    s.memcpy_htod(&host, &mut dst).unwrap();
    s.memcpy_dtoh(&dst, &mut host).unwrap();
    s.synchronize().unwrap();
    assert_eq!(host.as_slice().unwrap(), &[7; 8]);
    let d = transfer_stats() - before;
    assert_eq!(
        (
            d.h2d_copies,
            d.h2d_bytes,
            d.d2h_copies,
            d.d2h_bytes,
            d.syncs
        ),
        (1, 32, 1, 32, 1)
    );
}

#[test]
fn another_threads_traffic_is_not_counted_here() {
    let before = transfer_stats();
    std::thread::spawn(|| {
        let dev = Device::new(0).unwrap();
        let s = dev.new_stream().unwrap();
        s.upload(&[0u8; 64]).unwrap().to_vec().unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(transfer_stats() - before, Default::default());
}
