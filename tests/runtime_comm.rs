//! The runtime's HCCL communicators against the simulator: collectives on four in-process ranks,
//! root-info rendezvous between threads, argument checks, traffic counters.
//! (Ranks in separate processes are covered by `sim/tests/hccl_processes.rs` and the EP tests.)

use std::sync::Once;
use std::time::Duration;

use dsnpu_runtime::{Communicator, Device, DeviceBuffer, ReduceOp, RootInfo, RuntimeError, Stream};
use half::bf16;

fn setup() {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        std::env::set_var("DSNPU_SIM_DEVICES", "4");
        std::env::set_var("DSNPU_SIM_MEM_BYTES", "256M");
        std::env::set_var("DSNPU_SIM_HCCL_TIMEOUT_MS", "20000");
    });
}

fn streams(n: i32) -> Vec<Stream> {
    (0..n)
        .map(|d| Device::new(d).unwrap().new_stream().unwrap())
        .collect()
}

#[test]
fn four_ranks_of_one_process_reduce_gather_scatter_broadcast_and_exchange() {
    setup();
    let ss = streams(4);
    let comms = Communicator::init_all(&ss).unwrap();
    assert_eq!(
        comms.iter().map(|c| c.rank()).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let input = |r: usize| -> Vec<f32> { (0..6).map(|i| (r * 10 + i) as f32).collect() };
    // AllReduce (MAX), AllGather, ReduceScatter (SUM), Broadcast from rank 2, all queued first.
    let sends: Vec<DeviceBuffer<f32>> = ss
        .iter()
        .enumerate()
        .map(|(r, s)| s.upload(&input(r)).unwrap())
        .collect();
    let mut maxed: Vec<DeviceBuffer<f32>> = ss.iter().map(|s| s.alloc(6).unwrap()).collect();
    let mut gathered: Vec<DeviceBuffer<f32>> = ss.iter().map(|s| s.alloc(24).unwrap()).collect();
    let mut scattered: Vec<DeviceBuffer<f32>> =
        ss.iter().map(|s| s.alloc(6 / 2).unwrap()).collect();
    for (r, c) in comms.iter().enumerate() {
        c.all_reduce(&sends[r], &mut maxed[r], ReduceOp::Max)
            .unwrap();
        c.all_gather(&sends[r], &mut gathered[r]).unwrap();
    }
    let wide: Vec<DeviceBuffer<f32>> = ss
        .iter()
        .enumerate()
        .map(|(r, s)| {
            s.upload(&(0..12).map(|i| (r + i) as f32).collect::<Vec<_>>())
                .unwrap()
        })
        .collect();
    for (r, c) in comms.iter().enumerate() {
        c.reduce_scatter(&wide[r], &mut scattered[r], ReduceOp::Sum)
            .unwrap();
    }
    let mut bcast: Vec<DeviceBuffer<bf16>> = ss
        .iter()
        .enumerate()
        .map(|(r, s)| s.upload(&[bf16::from_f32(r as f32 + 0.5); 3]).unwrap())
        .collect();
    for (r, c) in comms.iter().enumerate() {
        c.broadcast(&mut bcast[r], 2).unwrap();
    }
    for r in 0..4 {
        assert_eq!(maxed[r].to_vec().unwrap(), input(3));
        let all: Vec<f32> = (0..4).flat_map(input).collect();
        assert_eq!(gathered[r].to_vec().unwrap(), all);
        // Block r (3 elements) of Σ_j (j + i) = 6 + 4i.
        let want: Vec<f32> = (0..3).map(|k| (6 + 4 * (3 * r + k)) as f32).collect();
        assert_eq!(scattered[r].to_vec().unwrap(), want);
        assert_eq!(bcast[r].to_vec().unwrap(), vec![bf16::from_f32(2.5); 3]);
    }
    // AlltoAllV of i32: rank r sends r + j elements to rank j, each equal to 100 r + j.
    let counts = |from: usize, to: usize| (from + to) as u64;
    let mut outs = Vec::new();
    for (r, c) in comms.iter().enumerate() {
        let send_counts: Vec<u64> = (0..4).map(|j| counts(r, j)).collect();
        let recv_counts: Vec<u64> = (0..4).map(|j| counts(j, r)).collect();
        let data: Vec<i32> = (0..4)
            .flat_map(|j| std::iter::repeat_n((100 * r + j) as i32, counts(r, j) as usize))
            .collect();
        let send = ss[r].upload(&data).unwrap();
        let mut recv = ss[r]
            .alloc::<i32>(recv_counts.iter().sum::<u64>() as usize)
            .unwrap();
        let before = c.traffic().unwrap();
        c.all_to_all_v(&send, &send_counts, &mut recv, &recv_counts)
            .unwrap();
        outs.push((send, recv, before));
    }
    for (r, (_, recv, before)) in outs.iter().enumerate() {
        let want: Vec<i32> = (0..4)
            .flat_map(|j| std::iter::repeat_n((100 * j + r) as i32, counts(j, r) as usize))
            .collect();
        assert_eq!(recv.to_vec().unwrap(), want);
        let after = comms[r].traffic().unwrap();
        for j in 0..4 {
            let sent = after.sent[j] - before.sent[j];
            assert_eq!(
                sent,
                if j == r { 0 } else { 4 * counts(r, j) },
                "rank {r} → {j}"
            );
        }
    }
    // Send/Recv between ranks 0 and 3.
    let x = ss[0].upload(&[7i8, -8, 9]).unwrap();
    let mut y = ss[3].alloc::<i8>(3).unwrap();
    comms[0].send(&x, 3).unwrap();
    comms[3].recv(&mut y, 0).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![7, -8, 9]);
}

#[test]
fn bad_arguments_are_typed_errors_before_any_call() {
    setup();
    let ss = streams(2);
    let comms = Communicator::init_all(&ss).unwrap();
    let a = ss[0].alloc::<f32>(4).unwrap();
    let mut b = ss[0].alloc::<f32>(5).unwrap();
    let mut on_other = ss[1].alloc::<f32>(4).unwrap();
    assert!(matches!(
        comms[0].all_reduce(&a, &mut b, ReduceOp::Sum),
        Err(RuntimeError::SizeMismatch { .. })
    ));
    assert!(matches!(
        comms[0].all_reduce(&a, &mut on_other, ReduceOp::Sum),
        Err(RuntimeError::DeviceMismatch { .. })
    ));
    assert!(matches!(
        comms[0].all_gather(&a, &mut b),
        Err(RuntimeError::SizeMismatch { .. })
    ));
    assert!(matches!(
        comms[0].send(&a, 0),
        Err(RuntimeError::InvalidArgument(_))
    ));
    assert!(matches!(
        comms[0].broadcast(&mut b, 2),
        Err(RuntimeError::InvalidArgument(_))
    ));
    assert!(matches!(
        comms[0].all_to_all_v(&a, &[2, 3], &mut b, &[1, 1]),
        Err(RuntimeError::InvalidArgument(_))
    ));
    assert!(matches!(
        comms[0].all_to_all_v(&a, &[2], &mut b, &[1, 1]),
        Err(RuntimeError::InvalidArgument(_))
    ));
}

#[test]
fn threads_join_through_a_root_info_file_and_its_hex_form_round_trips() {
    setup();
    Device::new(0).unwrap();
    let root = RootInfo::new().unwrap();
    assert_eq!(
        RootInfo::from_hex(&root.to_hex()).unwrap().to_hex(),
        root.to_hex()
    );
    assert!(RootInfo::from_hex("00ff").is_err());
    let dir = std::env::temp_dir().join(format!("dsnpu-rootfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("root");
    root.write_file(&path).unwrap();
    let workers: Vec<_> = (0..2u32)
        .map(|rank| {
            let path = path.clone();
            std::thread::spawn(move || {
                let stream = Device::new(rank as i32 + 2).unwrap().new_stream().unwrap();
                let root = RootInfo::wait_for_file(&path, Duration::from_secs(10)).unwrap();
                let comm = Communicator::init_root(&root, 2, rank, &stream).unwrap();
                let mut buf = stream.upload(&[rank as u64 + 1, 10]).unwrap();
                comm.all_reduce_in_place(&mut buf, ReduceOp::Sum).unwrap();
                buf.to_vec().unwrap()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), vec![3, 20]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
