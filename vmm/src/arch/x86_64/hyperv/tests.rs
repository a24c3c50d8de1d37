//! Unit tests of the Hyper-V leaves, and real-KVM tests: what this host's
//! KVM offers, and a real vCPU reading the leaves with CPUID.

use super::*;

/// A report shaped like Linux 6.x KVM's, with every bit of the Windows set.
fn kvm_like() -> Vec<kvm_cpuid_entry2> {
    vec![
        leaf(HV_FEATURES_LEAF, 0x2fff, 0x30, 0, 0x0009_0100),
        leaf(HV_RECOMMENDATIONS_LEAF, 0x0e2c, 0xfff, 0, 0),
        leaf(HV_LIMITS_LEAF, 4096, 0, 0, 0),
    ]
}

fn get(entries: &[kvm_cpuid_entry2], function: u32) -> kvm_cpuid_entry2 {
    *entries
        .iter()
        .find(|e| e.function == function)
        .unwrap_or_else(|| panic!("no leaf {function:#x}"))
}

#[test]
fn windows_leaves_follow_the_tlfs() {
    let l = leaves(&Enlightenment::WINDOWS, &kvm_like(), SPINLOCK_RETRIES).unwrap();
    let vendor = get(&l, HV_VENDOR_LEAF);
    assert_eq!(vendor.eax, HV_LIMITS_LEAF, "highest leaf");
    let mut sig = Vec::new();
    for r in [vendor.ebx, vendor.ecx, vendor.edx] {
        sig.extend_from_slice(&r.to_le_bytes());
    }
    assert_eq!(sig, b"Microsoft Hv");
    assert_eq!(&get(&l, HV_INTERFACE_LEAF).eax.to_le_bytes(), b"Hv#1");
    let f = get(&l, HV_FEATURES_LEAF);
    // runtime, time ref, SynIC, stimer, APIC MSRs, hypercall, VP index,
    // reset, reference TSC, frequency MSRs.
    assert_eq!(f.eax, 0b1010_1111_1111);
    assert_eq!(f.ebx, POST_MESSAGES | SIGNAL_EVENTS);
    assert_eq!(f.edx, FREQUENCY_MSRS_AVAILABLE);
    let r = get(&l, HV_RECOMMENDATIONS_LEAF);
    assert_eq!(
        r.eax,
        RELAXED_TIMING_RECOMMENDED
            | APIC_ACCESS_RECOMMENDED
            | REMOTE_TLB_FLUSH_RECOMMENDED
            | CLUSTER_IPI_RECOMMENDED
            | EX_PROCESSOR_MASKS_RECOMMENDED
    );
    assert_eq!(r.ebx, 8191);
    assert_eq!(get(&l, HV_LIMITS_LEAF).eax, 4096);
    assert_eq!(get(&l, HV_VERSION_LEAF).ebx >> 16, 10);
}

#[test]
fn only_the_chosen_bits_are_set() {
    let l = leaves(&[Enlightenment::Relaxed], &kvm_like(), 0).unwrap();
    let f = get(&l, HV_FEATURES_LEAF);
    assert_eq!((f.eax, f.ebx, f.edx), (HYPERCALL_AVAILABLE, 0, 0));
    let r = get(&l, HV_RECOMMENDATIONS_LEAF);
    assert_eq!(r.eax, RELAXED_TIMING_RECOMMENDED);
    assert_eq!(r.ebx, u32::MAX, "no spinlock notification");
}

#[test]
fn what_kvm_lacks_is_refused() {
    let mut host = kvm_like();
    host[0].eax &= !SYNTIMERS_AVAILABLE;
    assert!(matches!(
        leaves(&Enlightenment::WINDOWS, &host, SPINLOCK_RETRIES),
        Err(HypervError::Unsupported(Enlightenment::Stimer))
    ));
    let err = leaves(&[Enlightenment::Vapic], &[], 0).unwrap_err();
    assert!(err.to_string().contains("Vapic"), "{err}");
}

#[test]
fn dependencies_are_checked() {
    let err = leaves(
        &[Enlightenment::Stimer, Enlightenment::Synic],
        &kvm_like(),
        0,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            HypervError::Dependency {
                what: Enlightenment::Stimer,
                needs: Enlightenment::Time
            }
        ),
        "{err}"
    );
    assert!(matches!(
        leaves(&[Enlightenment::Ipi], &kvm_like(), 0),
        Err(HypervError::Dependency { .. })
    ));
}

#[test]
fn kvm_leaves_move_up_and_keep_their_shape() {
    let kvm_sig = regs3(b"KVMKVMKVM\0\0\0");
    let mut cpuid = CpuId::from_entries(&[
        leaf(0, 0x10, 0, 0, 0),
        leaf(
            HV_VENDOR_LEAF,
            0x4000_0001,
            kvm_sig[0],
            kvm_sig[1],
            kvm_sig[2],
        ),
        leaf(0x4000_0001, 0x0100_7afb, 0, 0, 0),
        leaf(0x8000_0000, 0x8000_0021, 0, 0, 0),
    ])
    .unwrap();
    let hv = leaves(&Enlightenment::WINDOWS, &kvm_like(), SPINLOCK_RETRIES).unwrap();
    install(&mut cpuid, &hv).unwrap();
    let all = cpuid.as_slice();
    let moved = get(all, KVM_LEAVES_MOVED);
    assert_eq!(moved.eax, KVM_LEAVES_MOVED + 1);
    assert_eq!([moved.ebx, moved.ecx, moved.edx], kvm_sig);
    assert_eq!(get(all, KVM_LEAVES_MOVED + 1).eax, 0x0100_7afb);
    assert_eq!(get(all, HV_VENDOR_LEAF).ebx, regs3(&VENDOR)[0]);
    assert_eq!(get(all, HV_INTERFACE_LEAF).eax, INTERFACE);
    assert_eq!(get(all, 0).eax, 0x10, "basic leaves untouched");
    assert_eq!(get(all, 0x8000_0000).eax, 0x8000_0021);
    let n = |f: u32| all.iter().filter(|e| e.function == f).count();
    assert_eq!((n(HV_VENDOR_LEAF), n(HV_INTERFACE_LEAF)), (1, 1));

    // A kernel that reports EAX 0 in its signature leaf.
    let mut old = CpuId::from_entries(&[leaf(HV_VENDOR_LEAF, 0, 1, 2, 3)]).unwrap();
    install(&mut old, &hv).unwrap();
    assert_eq!(
        get(old.as_slice(), KVM_LEAVES_MOVED).eax,
        KVM_LEAVES_MOVED + 1
    );
    // No KVM leaves at all: only the Hyper-V ones.
    let mut none = CpuId::from_entries(&[leaf(0, 0x10, 0, 0, 0)]).unwrap();
    install(&mut none, &hv).unwrap();
    assert_eq!(none.as_slice().len(), 1 + hv.len());
}

fn hyperv_exit(type_: u32) -> kvm_run {
    // SAFETY: kvm_run is plain data; all zeroes is a valid value.
    let mut run: kvm_run = unsafe { std::mem::zeroed() };
    run.exit_reason = kvm_bindings::KVM_EXIT_HYPERV;
    run.__bindgen_anon_1.hyperv.type_ = type_;
    run
}

#[test]
fn exits_are_answered() {
    let mut run = hyperv_exit(kvm_bindings::KVM_EXIT_HYPERV_HCALL);
    run.__bindgen_anon_1.hyperv.u.hcall.input = 0x5c;
    assert_eq!(handle_exit(&mut run), HvExit::Hypercall { input: 0x5c });
    // SAFETY: the hcall member was written above.
    let result = unsafe { run.__bindgen_anon_1.hyperv.u.hcall.result };
    assert_eq!(result, HV_STATUS_INVALID_HYPERCALL_CODE);

    let mut run = hyperv_exit(kvm_bindings::KVM_EXIT_HYPERV_SYNIC);
    run.__bindgen_anon_1.hyperv.u.synic.msr = 0x4000_0080;
    run.__bindgen_anon_1.hyperv.u.synic.control = 1;
    assert_eq!(
        handle_exit(&mut run),
        HvExit::Synic {
            msr: 0x4000_0080,
            control: 1
        }
    );
    assert_eq!(
        handle_exit(&mut hyperv_exit(99)),
        HvExit::Other { kind: 99 }
    );
}

/// The Hyper-V capabilities of this host's KVM, as `KVM_CHECK_EXTENSION`
/// reports them.
fn kvm_hyperv_caps(kvm: &Kvm) -> Vec<(&'static str, i32)> {
    [
        ("HYPERV", kvm_bindings::KVM_CAP_HYPERV),
        ("HYPERV_CPUID", kvm_bindings::KVM_CAP_HYPERV_CPUID),
        ("SYS_HYPERV_CPUID", kvm_bindings::KVM_CAP_SYS_HYPERV_CPUID),
        ("HYPERV_SYNIC2", kvm_bindings::KVM_CAP_HYPERV_SYNIC2),
        (
            "HYPERV_ENFORCE_CPUID",
            kvm_bindings::KVM_CAP_HYPERV_ENFORCE_CPUID,
        ),
    ]
    .into_iter()
    .map(|(name, cap)| (name, kvm.check_extension_raw(u64::from(cap))))
    .collect()
}

/// Real KVM: where KVM emulates Hyper-V, it reports the Windows set,
/// takes the CPUID with the Hyper-V leaves and enables SynIC on a vCPU.
/// Where it does not (a kernel built without CONFIG_KVM_HYPERV, as on
/// the nested testbed), the set is refused before the guest could be
/// promised MSRs that would fault, and KVM indeed refuses SynIC.
#[test]
fn real_kvm_takes_the_windows_set_or_it_is_refused() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIP real_kvm_takes_the_windows_set_or_it_is_refused: no /dev/kvm");
        return;
    }
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create a VM");
    vm.create_irq_chip()
        .expect("in-kernel irqchip (SynIC needs it)");
    let vcpu = vm.create_vcpu(0).expect("create a vCPU");
    let caps = kvm_hyperv_caps(&kvm);
    eprintln!("KVM Hyper-V capabilities: {caps:?}");
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .expect("supported CPUID");
    let mut hv = Hyperv::windows();
    if caps[1].1 <= 0 && caps[2].1 <= 0 {
        let err = hv.set_cpuid(&kvm, &vcpu, &mut cpuid).unwrap_err();
        assert!(matches!(err, HypervError::NoKvmSupport), "{err}");
        let synic = enable_cap(&vcpu, kvm_bindings::KVM_CAP_HYPERV_SYNIC2, 0, "SynIC");
        assert!(synic.is_err(), "KVM without Hyper-V CPUID enabled SynIC");
        eprintln!("this host's KVM has no Hyper-V emulation: --hyperv is refused");
        return;
    }
    for e in supported(&kvm, &vcpu).expect("KVM_GET_SUPPORTED_HV_CPUID") {
        eprintln!(
            "KVM Hyper-V leaf {:#010x}: eax {:#010x} ebx {:#010x} ecx {:#010x} edx {:#010x}",
            e.function, e.eax, e.ebx, e.ecx, e.edx
        );
    }
    hv.set_cpuid(&kvm, &vcpu, &mut cpuid)
        .expect("the Windows set on this KVM");
    vcpu.set_cpuid2(&cpuid)
        .expect("KVM takes the Hyper-V CPUID");
    hv.enable_vcpu(&kvm, &vcpu).expect("SynIC on the vCPU");
    let back = vcpu
        .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .expect("read the CPUID back");
    let vendor = get(back.as_slice(), HV_VENDOR_LEAF);
    assert_eq!([vendor.ebx, vendor.ecx, vendor.edx], regs3(&VENDOR));
}

/// Real KVM, real guest code: a vCPU given the Hyper-V leaves executes
/// CPUID and sees "Microsoft Hv" and "Hv#1" at 0x4000_0000/1, the
/// features and spinlock retries, and KVM's signature at 0x4000_0100.
/// The leaves come from KVM's report where it emulates Hyper-V, else
/// from a table of what Linux 6.x KVM reports (this checks the leaf
/// layout a guest reads, which needs no Hyper-V emulation).
#[test]
fn real_guest_reads_the_leaves() {
    use crate::memory::{self, Backing};
    use vm_memory::{Bytes, GuestAddress};
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIP real_guest_reads_the_leaves: no /dev/kvm");
        return;
    }
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create a VM");
    let mem = memory::create(1, Backing::default()).expect("guest memory");
    memory::register(&vm, &mem).expect("memory slot");
    // Real mode at 0x1000: cpuid; hlt. No irqchip, so HLT exits here.
    mem.write_slice(&[0x0f, 0xa2, 0xf4], GuestAddress(0x1000))
        .expect("write the code");
    let mut vcpu = vm.create_vcpu(0).expect("create a vCPU");
    let host = supported(&kvm, &vcpu).unwrap_or_else(|_| kvm_like());
    let hv = leaves(&Enlightenment::WINDOWS, &host, SPINLOCK_RETRIES).expect("leaves");
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .expect("supported CPUID");
    install(&mut cpuid, &hv).expect("install");
    vcpu.set_cpuid2(&cpuid).expect("KVM takes the CPUID");
    let mut sregs = vcpu.get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("sregs");
    let mut run_cpuid = |function: u32| -> [u32; 4] {
        let regs = kvm_bindings::kvm_regs {
            rip: 0x1000,
            rflags: 2,
            rax: u64::from(function),
            ..Default::default()
        };
        vcpu.set_regs(&regs).expect("regs");
        match vcpu.run().expect("KVM_RUN") {
            kvm_ioctls::VcpuExit::Hlt => {}
            other => panic!("guest stopped with {other:?}"),
        }
        let r = vcpu.get_regs().expect("regs");
        [r.rax, r.rbx, r.rcx, r.rdx].map(|v| v as u32)
    };
    let v = run_cpuid(HV_VENDOR_LEAF);
    assert_eq!(v[0], HV_LIMITS_LEAF);
    assert_eq!([v[1], v[2], v[3]], regs3(&VENDOR));
    assert_eq!(run_cpuid(HV_INTERFACE_LEAF)[0], INTERFACE);
    let f = run_cpuid(HV_FEATURES_LEAF);
    for bit in [
        HYPERCALL_AVAILABLE,
        SYNIC_AVAILABLE,
        SYNTIMERS_AVAILABLE,
        VP_INDEX_AVAILABLE,
    ] {
        assert_ne!(f[0] & bit, 0, "features {:#x} lack {bit:#x}", f[0]);
    }
    assert_eq!(run_cpuid(HV_RECOMMENDATIONS_LEAF)[1], 8191);
    let k = run_cpuid(KVM_LEAVES_MOVED);
    assert_eq!([k[1], k[2], k[3]], regs3(b"KVMKVMKVM\0\0\0"));
    assert_eq!(k[0], KVM_LEAVES_MOVED + 1);
}
