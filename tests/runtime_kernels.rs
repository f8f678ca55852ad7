//! Kernel binaries on the simulator: load from file and bytes, look up, launch with block indices,
//! tiling uploads, and faults reported with the kernel's name.
//! The kernels are the simulator's test kernels (`sim/testdata/test_kernels.c`).

use dsnpu_ffi::sys;
use dsnpu_runtime::{Device, DeviceRepr, Module, RuntimeError};

/// `{ uint64_t n; }`, the tiling struct of the test kernels.
#[repr(C)]
#[derive(Clone, Copy)]
struct Tiling {
    n: u64,
}
// SAFETY: one u64: no padding, every bit pattern valid.
unsafe impl DeviceRepr for Tiling {}

fn setup() -> (Device, Module) {
    let d = Device::new(0).unwrap();
    let m = Module::load_file(&d, dsnpu_sim::TEST_KERNELS_PATH).unwrap();
    (d, m)
}

#[test]
fn vec_add_covers_every_element_across_uneven_blocks() {
    let (d, m) = setup();
    let s = d.new_stream().unwrap();
    let f = m.function("vec_add").unwrap();
    assert_eq!(f.name(), "vec_add");
    let n = 1001; // 8 blocks of ceil(1001/8) = 126, the last one 119
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..n).map(|i| 2.0 * i as f32 + 1.0).collect();
    let xd = s.upload(&x).unwrap();
    let yd = s.upload(&y).unwrap();
    let mut zd = s.alloc_zeroed::<f32>(n).unwrap();
    // SAFETY: vec_add(x, y, z, tiling{n}) reads n floats of x and y and writes n floats of z.
    unsafe {
        f.builder(&s)
            .arg(&xd)
            .arg(&yd)
            .arg_mut(&mut zd)
            .tiling(&Tiling { n: n as u64 })
            .launch(8)
            .unwrap();
    }
    let z = zd.to_vec().unwrap();
    for (i, v) in z.iter().enumerate() {
        assert_eq!(*v, 3.0 * i as f32 + 1.0, "z[{i}]");
    }
}

#[test]
fn every_block_sees_its_index_and_the_block_count() {
    let (d, m) = setup();
    let s = d.new_stream().unwrap();
    let f = m.function("write_block_idx").unwrap();
    let blocks = 6u32;
    let mut out = s.alloc_zeroed::<u32>(2 * blocks as usize).unwrap();
    // SAFETY: write_block_idx(out, tiling{n}) writes out[2b], out[2b+1] for each block b < 6 < n/2.
    unsafe {
        f.builder(&s)
            .arg_mut(&mut out)
            .tiling(&Tiling {
                n: 2 * blocks as u64,
            })
            .launch(blocks)
            .unwrap();
    }
    let expected: Vec<u32> = (0..blocks).flat_map(|b| [b, blocks]).collect();
    assert_eq!(out.to_vec().unwrap(), expected);
}

#[test]
fn back_to_back_launches_each_see_their_own_tiling() {
    let (d, m) = setup();
    let s = d.new_stream().unwrap();
    let f = m.function("vec_add").unwrap();
    let len = 64;
    let x = s.upload(&vec![1.0f32; len]).unwrap();
    let y = s.upload(&vec![2.0f32; len]).unwrap();
    let mut outs = Vec::new();
    for k in 0..20 {
        outs.push((k + 10, s.alloc_zeroed::<f32>(len).unwrap()));
    }
    // 20 launches queued without a sync: more than the staging slots, so slots are recycled.
    for (n, z) in outs.iter_mut() {
        // SAFETY: vec_add with tiling n <= len stays inside the 64-element buffers.
        unsafe {
            f.builder(&s)
                .arg(&x)
                .arg(&y)
                .arg_mut(z)
                .tiling(&Tiling { n: *n as u64 })
                .launch(3)
                .unwrap()
        };
    }
    for (n, z) in &outs {
        let v = z.to_vec().unwrap();
        assert!(v[..*n].iter().all(|&e| e == 3.0), "n = {n}: {v:?}");
        assert!(v[*n..].iter().all(|&e| e == 0.0), "n = {n}: {v:?}");
    }
}

#[test]
fn loading_from_bytes_works_like_from_file() {
    let d = Device::new(0).unwrap();
    let bytes = std::fs::read(dsnpu_sim::TEST_KERNELS_PATH).unwrap();
    let m = Module::load_bytes(&d, &bytes).unwrap();
    assert_eq!(m.origin(), format!("<{} bytes>", bytes.len()));
    let s = d.new_stream().unwrap();
    let f = m.function("write_block_idx").unwrap();
    let mut out = s.alloc_zeroed::<u32>(4).unwrap();
    // SAFETY: two blocks write out[0..4].
    unsafe {
        f.builder(&s)
            .arg_mut(&mut out)
            .tiling(&Tiling { n: 4 })
            .launch(2)
            .unwrap()
    };
    assert_eq!(out.to_vec().unwrap(), [0, 2, 1, 2]);
}

#[test]
fn lookup_and_load_errors_name_the_kernel_or_binary() {
    let (d, m) = setup();
    let e = m.function("no_such_kernel").unwrap_err();
    assert!(matches!(&e, RuntimeError::Kernel { kernel, .. } if kernel == "no_such_kernel"));
    assert!(e.to_string().contains("no_such_kernel"), "{e}");
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_KERNEL_LOOKUP));

    let e = Module::load_bytes(&d, b"this is not a shared object").unwrap_err();
    assert!(matches!(e, RuntimeError::KernelBinary { .. }), "{e}");
    assert!(e.acl_code().is_some(), "{e}");

    let e = Module::load_file(&d, "/nonexistent/dsnpu/kernels.so").unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent/dsnpu/kernels.so"),
        "{e}"
    );
    assert!(e.acl_code().is_some(), "{e}");
}

#[test]
fn a_faulting_kernel_fails_its_stream_with_the_kernel_named() {
    let (d, m) = setup();
    let f = m.function("oob_read").unwrap();
    // 512 bytes: exactly one pool block, so element n lies past the device allocation. (A shorter
    // buffer would sit inside its rounded-up block, where the simulator cannot see the overrun.)
    let n = 128;

    // Asynchronous: the launch is queued; the fault surfaces at the next synchronization.
    let s = d.new_stream().unwrap();
    s.set_launch_blocking(false);
    let x = s.alloc_zeroed::<f32>(n).unwrap();
    // SAFETY: on the simulator the out-of-bounds read is detected, not performed.
    unsafe {
        f.builder(&s)
            .arg(&x)
            .tiling(&Tiling { n: n as u64 })
            .launch(1)
            .unwrap()
    };
    let e = s.synchronize().unwrap_err();
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_AICORE_EXCEPTION));
    assert!(
        e.to_string().contains("oob_read"),
        "the simulator's message names the kernel: {e}"
    );

    // Launch-blocking: the launch itself reports it, wrapped with the kernel's name.
    let s = d.new_stream().unwrap();
    s.set_launch_blocking(true);
    let x = s.alloc_zeroed::<f32>(n).unwrap();
    // SAFETY: as above.
    let e = unsafe {
        f.builder(&s)
            .arg(&x)
            .tiling(&Tiling { n: n as u64 })
            .launch(1)
    }
    .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Kernel { kernel, .. } if kernel == "oob_read"),
        "{e}"
    );
    assert_eq!(e.acl_code(), Some(sys::ACL_ERROR_RT_AICORE_EXCEPTION));
}

#[test]
fn launch_arguments_are_validated() {
    let (d, m) = setup();
    let s = d.new_stream().unwrap();
    let f = m.function("write_block_idx").unwrap();
    let mut out = s.alloc_zeroed::<u32>(4).unwrap();
    // SAFETY: rejected before anything is queued.
    let e = unsafe {
        f.builder(&s)
            .arg_mut(&mut out)
            .tiling(&Tiling { n: 4 })
            .launch(0)
    }
    .unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Kernel { source, .. } if matches!(**source, RuntimeError::InvalidArgument(_)))
    );
    // Scalars are packed at their alignment after 8-byte addresses.
    let mut args = f.builder(&s);
    args.null().scalar(7u32).scalar(1u64);
    assert_eq!(args.packed().len(), 24);
    assert_eq!(&args.packed()[8..12], &7u32.to_ne_bytes());
}

#[test]
fn buffers_can_be_passed_at_an_element_offset() {
    let (d, m) = setup();
    let s = d.new_stream().unwrap();
    let f = m.function("vec_add").unwrap();
    // 128 floats = one 512-byte pool block each, so x's window [120, 128) ends exactly at the
    // allocation's end, where the simulator would see an overrun.
    let len = 128;
    let x: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..len).map(|i| 1000.0 * i as f32).collect();
    let xd = s.upload(&x).unwrap();
    let yd = s.upload(&y).unwrap();
    let mut zd = s.alloc_zeroed::<f32>(len).unwrap();
    // SAFETY: vec_add(x, y, z, tiling{8}) touches 8 floats from each address: x[120..128],
    // y[3..11] and z[5..13], all inside their 128-element buffers.
    unsafe {
        f.builder(&s)
            .arg_at(&xd, 120)
            .arg_at(&yd, 3)
            .arg_mut_at(&mut zd, 5)
            .tiling(&Tiling { n: 8 })
            .launch(3)
            .unwrap();
    }
    let z = zd.to_vec().unwrap();
    // z[5 + i] = x[120 + i] + y[3 + i] = (120 + i) + 1000 (3 + i): 3120, 4121, ..., 10127.
    let mut expected = vec![0.0f32; len];
    for i in 0..8 {
        expected[5 + i] = 3120.0 + 1001.0 * i as f32;
    }
    assert_eq!(z[5], 3120.0);
    assert_eq!(z[12], 10127.0);
    assert_eq!(z, expected);

    // Offset 0 is the buffer itself, and `len` (one past the end) is accepted for a kernel that
    // reads nothing there (n = 0: no block touches memory).
    let mut packed = Vec::new();
    for offset in [0, len] {
        let mut args = f.builder(&s);
        args.arg_at(&xd, offset);
        packed.push(args.packed().to_vec());
    }
    let base = xd.device_ptr() as u64;
    assert_eq!(packed[0], base.to_ne_bytes());
    assert_eq!(packed[1], (base + 4 * len as u64).to_ne_bytes());
    // SAFETY: n = 0: the kernel returns before touching any buffer.
    unsafe {
        f.builder(&s)
            .arg_at(&xd, len)
            .arg(&yd)
            .arg_mut_at(&mut zd, len)
            .tiling(&Tiling { n: 0 })
            .launch(1)
            .unwrap();
    }
    assert_eq!(zd.to_vec().unwrap(), expected);
}

#[test]
fn an_offset_past_the_end_is_an_error_and_launches_nothing() {
    let (d, m) = setup();
    let s = d.new_stream().unwrap();
    let f = m.function("vec_add").unwrap();
    let x = s.upload(&[1.0f32; 16]).unwrap();
    let mut z = s.alloc_zeroed::<f32>(16).unwrap();
    let invalid = |e: &RuntimeError| {
        matches!(e, RuntimeError::Kernel { kernel, source }
            if kernel == "vec_add" && matches!(**source, RuntimeError::InvalidArgument(_)))
    };
    // SAFETY: rejected before anything is queued.
    let e = unsafe {
        f.builder(&s)
            .arg_at(&x, 17)
            .arg(&x)
            .arg_mut(&mut z)
            .tiling(&Tiling { n: 1 })
            .launch(1)
    }
    .unwrap_err();
    assert!(invalid(&e), "{e}");
    assert!(e.to_string().contains("offset 17"), "{e}");
    // SAFETY: as above.
    let e = unsafe {
        f.builder(&s)
            .arg(&x)
            .arg(&x)
            .arg_mut_at(&mut z, usize::MAX)
            .tiling(&Tiling { n: 1 })
            .launch(1)
    }
    .unwrap_err();
    assert!(invalid(&e), "{e}");
    assert!(e.to_string().contains("argument 2"), "{e}");
    s.synchronize().unwrap();
    assert_eq!(z.to_vec().unwrap(), [0.0; 16]);
}
