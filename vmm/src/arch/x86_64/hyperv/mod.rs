//! Hyper-V enlightenments for Windows guests: the CPUID leaves at
//! 0x4000_0000.. that tell a guest it runs on a Hyper-V compatible
//! hypervisor, and the per-vCPU KVM capabilities behind them.
//!
//! KVM implements the enlightenments (MSRs, hypercalls, SynIC, synthetic
//! timers); the VMM only chooses which ones the guest sees. Kiln offers one
//! set, what OpenStack Nova turns on for `os_type=windows`
//! ([`Enlightenment::WINDOWS`]): relaxed timing, virtual APIC MSRs,
//! spinlock notification after 8191 retries, VP index, VP runtime, the
//! reference time counter and TSC page (`hv-time`, which synthetic timers
//! need), SynIC, synthetic timers, frequency MSRs, the reset MSR, and
//! hypercall TLB flushes and IPIs.
//!
//! Each enlightenment is a set of bits in the features leaf (0x4000_0003)
//! or the recommendations leaf (0x4000_0004), per Microsoft's Hypervisor
//! Top Level Functional Specification (TLFS). [`leaves`] checks every bit
//! against what this host's KVM reports (`KVM_GET_SUPPORTED_HV_CPUID`) and
//! refuses an enlightenment KVM lacks, rather than promising it to the
//! guest. [`install`] puts the leaves at 0x4000_0000 and moves KVM's own
//! paravirtual leaves (signature "KVMKVMKVM") to 0x4000_0100, where Linux
//! and KVM look for them next, as QEMU does with `hv-*` flags.
//!
//! Per vCPU, [`enable_vcpu`] turns on SynIC (`KVM_CAP_HYPERV_SYNIC2`) and,
//! where KVM has it, `KVM_CAP_HYPERV_ENFORCE_CPUID`, so the guest can use
//! only the MSRs and hypercalls its CPUID names.
//!
//! With SynIC on, KVM exits to the VMM (`KVM_EXIT_HYPERV`) when the guest
//! writes the SynIC control MSRs and for hypercalls it does not handle
//! itself (VMBus messages); [`handle_exit`] answers those.

use kvm_bindings::{kvm_cpuid_entry2, kvm_enable_cap, kvm_run, CpuId};
use kvm_ioctls::{Kvm, VcpuFd};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_mut_ptr;

use super::cpuid::Reg;

/// Vendor and highest Hyper-V leaf.
pub const HV_VENDOR_LEAF: u32 = 0x4000_0000;
/// Interface signature "Hv#1".
pub const HV_INTERFACE_LEAF: u32 = 0x4000_0001;
/// Hypervisor version the guest sees.
pub const HV_VERSION_LEAF: u32 = 0x4000_0002;
/// Partition privileges (EAX, EBX) and feature flags (EDX).
pub const HV_FEATURES_LEAF: u32 = 0x4000_0003;
/// Implementation recommendations (EAX) and spinlock retries (EBX).
pub const HV_RECOMMENDATIONS_LEAF: u32 = 0x4000_0004;
/// Implementation limits (EAX: virtual processors).
pub const HV_LIMITS_LEAF: u32 = 0x4000_0005;
/// Where KVM's own leaves go when the Hyper-V ones take 0x4000_0000.
pub const KVM_LEAVES_MOVED: u32 = 0x4000_0100;
/// How far above 0x4000_0000 KVM's own leaves may reach.
const KVM_LEAF_SPAN: u32 = 0x100;

/// "Microsoft Hv" as EBX, ECX, EDX.
pub const VENDOR: [u8; 12] = *b"Microsoft Hv";
/// "Hv#1" as EAX of the interface leaf.
pub const INTERFACE: u32 = u32::from_le_bytes(*b"Hv#1");
/// What Nova (libvirt `<spinlocks retries=8191>`) asks for.
pub const SPINLOCK_RETRIES: u32 = 8191;
/// Version the guest sees: build 14393 (Windows Server 2016), 10.0, as
/// QEMU reports by default.
const VERSION_BUILD: u32 = 14393;
const VERSION_MAJOR_MINOR: u32 = 10 << 16;

// Features leaf EAX (partition privileges, low half).
pub const VP_RUNTIME_AVAILABLE: u32 = 1 << 0;
pub const TIME_REF_COUNT_AVAILABLE: u32 = 1 << 1;
pub const SYNIC_AVAILABLE: u32 = 1 << 2;
pub const SYNTIMERS_AVAILABLE: u32 = 1 << 3;
pub const APIC_ACCESS_AVAILABLE: u32 = 1 << 4;
pub const HYPERCALL_AVAILABLE: u32 = 1 << 5;
pub const VP_INDEX_AVAILABLE: u32 = 1 << 6;
pub const RESET_AVAILABLE: u32 = 1 << 7;
pub const REFERENCE_TSC_AVAILABLE: u32 = 1 << 9;
pub const ACCESS_FREQUENCY_MSRS: u32 = 1 << 11;
// Features leaf EBX (partition privileges, high half).
pub const POST_MESSAGES: u32 = 1 << 4;
pub const SIGNAL_EVENTS: u32 = 1 << 5;
// Features leaf EDX.
pub const FREQUENCY_MSRS_AVAILABLE: u32 = 1 << 8;
// Recommendations leaf EAX.
pub const REMOTE_TLB_FLUSH_RECOMMENDED: u32 = 1 << 2;
pub const APIC_ACCESS_RECOMMENDED: u32 = 1 << 3;
pub const RELAXED_TIMING_RECOMMENDED: u32 = 1 << 5;
pub const CLUSTER_IPI_RECOMMENDED: u32 = 1 << 10;
pub const EX_PROCESSOR_MASKS_RECOMMENDED: u32 = 1 << 11;

/// `KVM_GET_SUPPORTED_HV_CPUID`: `_IOWR(KVMIO, 0xc1, struct kvm_cpuid2)`,
/// on the system fd (with `KVM_CAP_SYS_HYPERV_CPUID`) or a vCPU fd.
const KVMIO: u32 = 0xae;
vmm_sys_util::ioctl_iowr_nr!(
    KVM_GET_SUPPORTED_HV_CPUID,
    KVMIO,
    0xc1,
    kvm_bindings::kvm_cpuid2
);

#[derive(Debug, thiserror::Error)]
pub enum HypervError {
    #[error("this host's KVM has no Hyper-V emulation to report (no KVM_CAP_HYPERV_CPUID)")]
    NoKvmSupport,
    #[error("KVM refused to report its Hyper-V CPUID (KVM_GET_SUPPORTED_HV_CPUID)")]
    Query(#[source] errno::Error),
    #[error("this host's KVM lacks the Hyper-V enlightenment {0:?}")]
    Unsupported(Enlightenment),
    #[error("the Hyper-V enlightenment {what:?} needs {needs:?}")]
    Dependency {
        what: Enlightenment,
        needs: Enlightenment,
    },
    #[error("KVM refused to enable {what} on a vCPU")]
    Cap {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("the CPUID has too many entries with the Hyper-V leaves added")]
    TooManyEntries,
}

/// One Hyper-V enlightenment (QEMU's `hv-NAME`, libvirt's `<hyperv>` child).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enlightenment {
    Relaxed,
    Vapic,
    Spinlocks,
    Vpindex,
    Runtime,
    Time,
    Synic,
    Stimer,
    Frequencies,
    Reset,
    Tlbflush,
    Ipi,
}

/// Bits an enlightenment sets in one register of one leaf.
struct Bits {
    leaf: u32,
    reg: Reg,
    bits: u32,
}

const fn b(leaf: u32, reg: Reg, bits: u32) -> Bits {
    Bits { leaf, reg, bits }
}

impl Enlightenment {
    /// What Kiln turns on for a Windows guest (`--hyperv`).
    pub const WINDOWS: [Enlightenment; 12] = [
        Enlightenment::Relaxed,
        Enlightenment::Vapic,
        Enlightenment::Spinlocks,
        Enlightenment::Vpindex,
        Enlightenment::Runtime,
        Enlightenment::Time,
        Enlightenment::Synic,
        Enlightenment::Stimer,
        Enlightenment::Frequencies,
        Enlightenment::Reset,
        Enlightenment::Tlbflush,
        Enlightenment::Ipi,
    ];

    /// The CPUID bits that advertise it (and that KVM must report).
    /// Spinlocks has none: it is the retry count in the recommendations.
    fn bits(self) -> &'static [Bits] {
        use Enlightenment::*;
        const F: u32 = HV_FEATURES_LEAF;
        const R: u32 = HV_RECOMMENDATIONS_LEAF;
        match self {
            Relaxed => const { &[b(R, Reg::Eax, RELAXED_TIMING_RECOMMENDED)] },
            Vapic => {
                const {
                    &[
                        b(F, Reg::Eax, APIC_ACCESS_AVAILABLE),
                        b(R, Reg::Eax, APIC_ACCESS_RECOMMENDED),
                    ]
                }
            }
            Spinlocks => &[],
            Vpindex => const { &[b(F, Reg::Eax, VP_INDEX_AVAILABLE)] },
            Runtime => const { &[b(F, Reg::Eax, VP_RUNTIME_AVAILABLE)] },
            Time => {
                const {
                    &[b(
                        F,
                        Reg::Eax,
                        TIME_REF_COUNT_AVAILABLE | REFERENCE_TSC_AVAILABLE,
                    )]
                }
            }
            // Posting messages and signalling events are SynIC's hypercalls.
            Synic => {
                const {
                    &[
                        b(F, Reg::Eax, SYNIC_AVAILABLE),
                        b(F, Reg::Ebx, POST_MESSAGES | SIGNAL_EVENTS),
                    ]
                }
            }
            Stimer => const { &[b(F, Reg::Eax, SYNTIMERS_AVAILABLE)] },
            Frequencies => {
                const {
                    &[
                        b(F, Reg::Eax, ACCESS_FREQUENCY_MSRS),
                        b(F, Reg::Edx, FREQUENCY_MSRS_AVAILABLE),
                    ]
                }
            }
            Reset => const { &[b(F, Reg::Eax, RESET_AVAILABLE)] },
            Tlbflush => {
                const {
                    &[b(
                        R,
                        Reg::Eax,
                        REMOTE_TLB_FLUSH_RECOMMENDED | EX_PROCESSOR_MASKS_RECOMMENDED,
                    )]
                }
            }
            Ipi => {
                const {
                    &[b(
                        R,
                        Reg::Eax,
                        CLUSTER_IPI_RECOMMENDED | EX_PROCESSOR_MASKS_RECOMMENDED,
                    )]
                }
            }
        }
    }

    /// Enlightenments this one cannot work without (the TLFS and KVM:
    /// synthetic timers deliver through SynIC and count reference time;
    /// SynIC, TLB flush and IPI hypercalls name processors by VP index).
    fn needs(self) -> &'static [Enlightenment] {
        use Enlightenment::*;
        match self {
            Stimer => &[Synic, Time],
            Synic | Tlbflush | Ipi => &[Vpindex],
            _ => &[],
        }
    }
}

fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

/// Three little-endian registers from 12 bytes.
fn regs3(s: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    [w(0), w(4), w(8)]
}

/// The Hyper-V leaves 0x4000_0000..=0x4000_0005 for `set`, checked against
/// `supported` (KVM's `KVM_GET_SUPPORTED_HV_CPUID`): every bit an
/// enlightenment needs must be there, and its dependencies in `set`.
pub fn leaves(
    set: &[Enlightenment],
    supported: &[kvm_cpuid_entry2],
    spinlock_retries: u32,
) -> Result<Vec<kvm_cpuid_entry2>, HypervError> {
    let host = |function: u32, r: Reg| {
        supported
            .iter()
            .find(|e| e.function == function)
            .map_or(0, |e| r.of(e))
    };
    let mut features = leaf(HV_FEATURES_LEAF, HYPERCALL_AVAILABLE, 0, 0, 0);
    let mut recommendations = leaf(HV_RECOMMENDATIONS_LEAF, 0, u32::MAX, 0, 0);
    for &e in set {
        if let Some(&needs) = e.needs().iter().find(|n| !set.contains(n)) {
            return Err(HypervError::Dependency { what: e, needs });
        }
        for bits in e.bits() {
            if host(bits.leaf, bits.reg) & bits.bits != bits.bits {
                return Err(HypervError::Unsupported(e));
            }
            let target = if bits.leaf == HV_FEATURES_LEAF {
                &mut features
            } else {
                &mut recommendations
            };
            *bits.reg.of_mut(target) |= bits.bits;
        }
        if e == Enlightenment::Spinlocks {
            recommendations.ebx = spinlock_retries;
        }
    }
    // KVM reports its vCPU limit; a guest that finds 0 may assume anything.
    let max_vps = host(HV_LIMITS_LEAF, Reg::Eax).max(1);
    let [vb, vc, vd] = regs3(&VENDOR);
    Ok(vec![
        leaf(HV_VENDOR_LEAF, HV_LIMITS_LEAF, vb, vc, vd),
        leaf(HV_INTERFACE_LEAF, INTERFACE, 0, 0, 0),
        leaf(HV_VERSION_LEAF, VERSION_BUILD, VERSION_MAJOR_MINOR, 0, 0),
        features,
        recommendations,
        leaf(HV_LIMITS_LEAF, max_vps, 0, 0, 0),
    ])
}

/// Put the Hyper-V leaves `hv` into a vCPU's CPUID: KVM's own leaves at
/// 0x4000_0000.. move up by 0x100 (their signature leaf's EAX, the highest
/// KVM leaf, with them), and `hv` takes their place.
pub fn install(cpuid: &mut CpuId, hv: &[kvm_cpuid_entry2]) -> Result<(), HypervError> {
    let kvm_range = HV_VENDOR_LEAF..HV_VENDOR_LEAF + KVM_LEAF_SPAN;
    let mut entries: Vec<kvm_cpuid_entry2> = cpuid.as_slice().to_vec();
    for e in entries
        .iter_mut()
        .filter(|e| kvm_range.contains(&e.function))
    {
        if e.function == HV_VENDOR_LEAF {
            // Old kernels leave EAX 0, meaning "up to the features leaf".
            e.eax = if kvm_range.contains(&e.eax) {
                e.eax + KVM_LEAF_SPAN
            } else {
                KVM_LEAVES_MOVED + 1
            };
        }
        e.function += KVM_LEAF_SPAN;
    }
    entries.extend_from_slice(hv);
    *cpuid = CpuId::from_entries(&entries).map_err(|_| HypervError::TooManyEntries)?;
    Ok(())
}

fn hv_cpuid_from(fd: &impl std::os::fd::AsRawFd) -> Result<Vec<kvm_cpuid_entry2>, HypervError> {
    // KVM reports about ten leaves and answers E2BIG (without the size it
    // needs) when the buffer is smaller: grow it a few times.
    let mut n = 16;
    loop {
        let mut buf = CpuId::new(n).map_err(|_| HypervError::TooManyEntries)?;
        // SAFETY: `buf` is a kvm_cpuid2 with room for `nent` = n entries,
        // which is all the kernel writes; fd is a KVM system or vCPU fd.
        let ret = unsafe {
            ioctl_with_mut_ptr(
                fd,
                KVM_GET_SUPPORTED_HV_CPUID(),
                buf.as_mut_fam_struct_ptr(),
            )
        };
        if ret >= 0 {
            return Ok(buf.as_slice().to_vec());
        }
        let err = errno::Error::last();
        if err.errno() != libc::E2BIG || n >= 256 {
            return Err(HypervError::Query(err));
        }
        n *= 2;
    }
}

/// What this host's KVM can emulate of Hyper-V: through the system fd
/// where KVM has `KVM_CAP_SYS_HYPERV_CPUID` (Linux 5.11+), else through a
/// vCPU.
pub fn supported(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Vec<kvm_cpuid_entry2>, HypervError> {
    let has = |cap: u32| kvm.check_extension_raw(u64::from(cap)) > 0;
    if has(kvm_bindings::KVM_CAP_SYS_HYPERV_CPUID) {
        hv_cpuid_from(kvm)
    } else if has(kvm_bindings::KVM_CAP_HYPERV_CPUID) {
        hv_cpuid_from(vcpu)
    } else {
        Err(HypervError::NoKvmSupport)
    }
}

fn enable_cap(vcpu: &VcpuFd, cap: u32, arg0: u64, what: &'static str) -> Result<(), HypervError> {
    let mut c = kvm_enable_cap {
        cap,
        ..Default::default()
    };
    c.args[0] = arg0;
    vcpu.enable_cap(&c)
        .map_err(|source| HypervError::Cap { what, source })
}

/// Per-vCPU KVM state behind the enlightenments, after its CPUID is set:
/// SynIC (SYNIC2 where KVM has it: it leaves the message and event pages
/// alone when SynIC is enabled) and CPUID enforcement where KVM has it.
pub fn enable_vcpu(kvm: &Kvm, vcpu: &VcpuFd, set: &[Enlightenment]) -> Result<(), HypervError> {
    let has = |cap: u32| kvm.check_extension_raw(u64::from(cap)) > 0;
    if set.contains(&Enlightenment::Synic) {
        if has(kvm_bindings::KVM_CAP_HYPERV_SYNIC2) {
            enable_cap(
                vcpu,
                kvm_bindings::KVM_CAP_HYPERV_SYNIC2,
                0,
                "Hyper-V SynIC",
            )?;
        } else {
            enable_cap(vcpu, kvm_bindings::KVM_CAP_HYPERV_SYNIC, 0, "Hyper-V SynIC")?;
        }
    }
    if has(kvm_bindings::KVM_CAP_HYPERV_ENFORCE_CPUID) {
        enable_cap(
            vcpu,
            kvm_bindings::KVM_CAP_HYPERV_ENFORCE_CPUID,
            1,
            "Hyper-V CPUID enforcement",
        )?;
    }
    Ok(())
}

/// Hyper-V state shared by the vCPUs of one VM while they are built: the
/// enlightenments and, once the first vCPU has asked KVM, the leaves.
pub struct Hyperv {
    set: Vec<Enlightenment>,
    leaves: Option<Vec<kvm_cpuid_entry2>>,
}

impl Hyperv {
    pub fn new(set: &[Enlightenment]) -> Hyperv {
        Hyperv {
            set: set.to_vec(),
            leaves: None,
        }
    }

    /// The Windows set ([`Enlightenment::WINDOWS`]).
    pub fn windows() -> Hyperv {
        Hyperv::new(&Enlightenment::WINDOWS)
    }

    /// Add the Hyper-V leaves to `cpuid`, the CPUID `vcpu` is about to get.
    pub fn set_cpuid(
        &mut self,
        kvm: &Kvm,
        vcpu: &VcpuFd,
        cpuid: &mut CpuId,
    ) -> Result<(), HypervError> {
        if self.leaves.is_none() {
            let host = supported(kvm, vcpu)?;
            self.leaves = Some(leaves(&self.set, &host, SPINLOCK_RETRIES)?);
        }
        install(cpuid, self.leaves.as_deref().unwrap_or_default())
    }

    /// [`enable_vcpu`] with this set; call after `KVM_SET_CPUID2`.
    pub fn enable_vcpu(&self, kvm: &Kvm, vcpu: &VcpuFd) -> Result<(), HypervError> {
        enable_vcpu(kvm, vcpu, &self.set)
    }
}

/// TLFS status for a hypercall the partition does not offer.
pub const HV_STATUS_INVALID_HYPERCALL_CODE: u64 = 2;

/// What a `KVM_EXIT_HYPERV` was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvExit {
    /// The guest wrote a SynIC control MSR (SCONTROL, SIEFP, SIMP); KVM has
    /// done it, the VMM (no VMBus) only hears of it.
    Synic { msr: u32, control: u64 },
    /// A hypercall KVM leaves to the VMM (VMBus post message / signal
    /// event); answered "invalid hypercall code", as there is no VMBus.
    Hypercall { input: u64 },
    /// Synthetic debugger MSRs or a type this VMM does not know: ignored.
    Other { kind: u32 },
}

/// Handle a `KVM_EXIT_HYPERV` (`VcpuExit::Hyperv`) in `run`, the vCPU's
/// `kvm_run` (`VcpuFd::get_kvm_run`): answers hypercalls, so the vCPU can
/// simply run again. Returns what it was, for the log.
pub fn handle_exit(run: &mut kvm_run) -> HvExit {
    // SAFETY: after KVM_EXIT_HYPERV the kernel filled the `hyperv` member
    // of the exit union; every bit pattern is valid for these plain
    // integer fields.
    let hv = unsafe { &mut run.__bindgen_anon_1.hyperv };
    match hv.type_ {
        kvm_bindings::KVM_EXIT_HYPERV_SYNIC => {
            // SAFETY: `type_` says the `synic` member is the one filled.
            let s = unsafe { hv.u.synic };
            HvExit::Synic {
                msr: s.msr,
                control: s.control,
            }
        }
        kvm_bindings::KVM_EXIT_HYPERV_HCALL => {
            // SAFETY: `type_` says the `hcall` member is the one filled;
            // KVM reads `result` back into the guest's RAX.
            let hcall = unsafe { &mut hv.u.hcall };
            hcall.result = HV_STATUS_INVALID_HYPERCALL_CODE;
            HvExit::Hypercall { input: hcall.input }
        }
        kind => HvExit::Other { kind },
    }
}

#[cfg(test)]
mod tests;
