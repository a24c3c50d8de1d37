//! CPUID for each vCPU: what KVM supports (`KVM_GET_SUPPORTED_CPUID`), with
//! Kiln's topology written in and a CPU template's mask applied.
//!
//! Templates:
//! - `host`: everything KVM supports.
//! - `x86-64-v2`: the x86-64-v2 baseline; AVX and later hidden (a common
//!   denominator for moving images between hosts).
//! - `kvm-nested`: `x86-64-v2` less what the instruction emulator of nested
//!   KVM on our test machines cannot run (testbed.md): the XSAVE family,
//!   CMPXCHG16B, RDRAND/RDSEED, and the ARCH_CAPABILITIES MSR.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuidError {
    #[error("unknown CPU template {0:?} (known: host, x86-64-v2, kvm-nested)")]
    UnknownTemplate(String),
}

/// A register of a CPUID leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Reg {
    /// This register's value in CPUID entry `e`.
    pub fn of(self, e: &kvm_cpuid_entry2) -> u32 {
        match self {
            Reg::Eax => e.eax,
            Reg::Ebx => e.ebx,
            Reg::Ecx => e.ecx,
            Reg::Edx => e.edx,
        }
    }

    /// This register in CPUID entry `e`, to change.
    pub fn of_mut(self, e: &mut kvm_cpuid_entry2) -> &mut u32 {
        match self {
            Reg::Eax => &mut e.eax,
            Reg::Ebx => &mut e.ebx,
            Reg::Ecx => &mut e.ecx,
            Reg::Edx => &mut e.edx,
        }
    }
}

/// Bits to clear in one register of one leaf (all sub-leaves).
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    pub function: u32,
    pub reg: Reg,
    pub clear: u32,
}

const fn m(function: u32, reg: Reg, clear: u32) -> Mask {
    Mask {
        function,
        reg,
        clear,
    }
}

// Leaf 1 ECX.
const FMA: u32 = 1 << 12;
const CX16: u32 = 1 << 13;
const MOVBE: u32 = 1 << 22;
const XSAVE: u32 = 1 << 26;
const OSXSAVE: u32 = 1 << 27;
const AVX: u32 = 1 << 28;
const F16C: u32 = 1 << 29;
const RDRAND: u32 = 1 << 30;
const HYPERVISOR: u32 = 1 << 31;
// Leaf 1 EDX.
const HTT: u32 = 1 << 28;
// Leaf 7.0 EBX.
const BMI1: u32 = 1 << 3;
const AVX2: u32 = 1 << 5;
const BMI2: u32 = 1 << 8;
const RDSEED: u32 = 1 << 18;
const AVX512_EBX: u32 =
    (1 << 16) | (1 << 17) | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31);
// Leaf 7.0 ECX: AVX512_VBMI, AVX512_VBMI2, GFNI, VAES, VPCLMULQDQ, VNNI, BITALG, VPOPCNTDQ.
const AVX512_ECX: u32 =
    (1 << 1) | (1 << 6) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
// Leaf 7.0 EDX: AVX512_4VNNIW, AVX512_4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8.
const AVX512_EDX: u32 =
    (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25);
const ARCH_CAPABILITIES: u32 = 1 << 29;
// Leaf 0x8000_0001 ECX: XOP, FMA4, TBM.
const AMD_AVX_ECX: u32 = (1 << 11) | (1 << 16) | (1 << 21);

const X86_64_V2: &[Mask] = &[
    m(1, Reg::Ecx, FMA | MOVBE | AVX | F16C | OSXSAVE),
    m(7, Reg::Ebx, BMI1 | AVX2 | BMI2 | AVX512_EBX),
    m(7, Reg::Ecx, AVX512_ECX),
    m(7, Reg::Edx, AVX512_EDX),
    m(0x8000_0001, Reg::Ecx, AMD_AVX_ECX),
];

const KVM_NESTED_EXTRA: &[Mask] = &[
    m(1, Reg::Ecx, XSAVE | OSXSAVE | CX16 | RDRAND),
    m(7, Reg::Ebx, RDSEED),
    m(7, Reg::Edx, ARCH_CAPABILITIES),
];

/// The masks of a named template, and whether leaf 0xD (XSAVE state) is
/// removed altogether.
pub fn template(name: &str) -> Result<(Vec<Mask>, bool), CpuidError> {
    match name {
        "host" => Ok((Vec::new(), false)),
        "x86-64-v2" => Ok((X86_64_V2.to_vec(), false)),
        "kvm-nested" => Ok(([X86_64_V2, KVM_NESTED_EXTRA].concat(), true)),
        other => Err(CpuidError::UnknownTemplate(other.to_string())),
    }
}

/// Apply a template to the supported CPUID (shared by all vCPUs).
pub fn apply_template(cpuid: &mut CpuId, name: &str) -> Result<(), CpuidError> {
    let (masks, drop_xsave_leaf) = template(name)?;
    let mut entries: Vec<kvm_cpuid_entry2> = cpuid.as_slice().to_vec();
    if drop_xsave_leaf {
        entries.retain(|e| e.function != 0xd);
    }
    for e in entries.iter_mut() {
        let function = e.function;
        for mask in masks.iter().filter(|mk| mk.function == function) {
            *mask.reg.of_mut(e) &= !mask.clear;
        }
    }
    *cpuid = CpuId::from_entries(&entries).expect("fewer entries than before");
    Ok(())
}

/// Number of bits needed to hold APIC ids 0..n-1.
fn id_bits(n: u32) -> u32 {
    u32::BITS - n.saturating_sub(1).leading_zeros()
}

/// Write the topology of vCPU `id` of `count` (one socket, `count` cores,
/// one thread per core) into its copy of the CPUID.
pub fn set_topology(cpuid: &mut CpuId, id: u8, count: u8) {
    let count = u32::from(count.max(1));
    let id = u32::from(id);
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                // Initial APIC id, logical processors per package, CLFLUSH size 8.
                e.ebx = (id << 24) | (count << 16) | (8 << 8);
                e.ecx |= HYPERVISOR;
                if count > 1 {
                    e.edx |= HTT;
                } else {
                    e.edx &= !HTT;
                }
            }
            // Deterministic cache parameters (Intel): cores sharing, cores per package.
            4 => {
                let cache_level = (e.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 { count } else { 1 };
                e.eax = (e.eax & 0x3ff) | ((sharing - 1) << 14) | ((count - 1) << 26);
            }
            // Extended topology: sub-leaf 0 threads (1 each), 1 cores.
            0xb | 0x1f => {
                let (shift, number, level_type) = match e.index {
                    0 => (0, 1, 1),
                    1 => (id_bits(count), count, 2),
                    _ => (0, 0, 0),
                };
                e.eax = shift;
                e.ebx = number;
                e.ecx = (level_type << 8) | (e.index & 0xff);
                e.edx = id;
            }
            // AMD: number of cores - 1 and the APIC id size.
            0x8000_0008 => {
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1);
            }
            // AMD extended APIC id, one thread per core, one node.
            0x8000_001e => {
                e.eax = id;
                e.ebx = id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0),
            entry(1, 0),
            entry(7, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xd, 0),
            entry(0xd, 1),
            entry(0x8000_0001, 0),
            entry(0x8000_0008, 0),
        ])
        .unwrap()
    }

    fn get(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn host_template_changes_nothing() {
        let mut c = sample();
        apply_template(&mut c, "host").unwrap();
        assert_eq!(c.as_slice(), sample().as_slice());
    }

    #[test]
    fn kvm_nested_hides_what_the_emulator_cannot_run() {
        let mut c = sample();
        apply_template(&mut c, "kvm-nested").unwrap();
        let l1 = get(&c, 1, 0);
        for bit in [XSAVE, OSXSAVE, AVX, CX16, RDRAND, FMA, F16C] {
            assert_eq!(l1.ecx & bit, 0, "{bit:#x}");
        }
        assert_ne!(l1.ecx & (1 << 20), 0, "SSE4.2 stays");
        let l7 = get(&c, 7, 0);
        assert_eq!(l7.ebx & (AVX2 | AVX512_EBX | RDSEED | BMI1 | BMI2), 0);
        assert_eq!(l7.edx & ARCH_CAPABILITIES, 0);
        assert!(
            !c.as_slice().iter().any(|e| e.function == 0xd),
            "no XSAVE leaf"
        );
        assert_eq!(get(&c, 0x8000_0001, 0).ecx & AMD_AVX_ECX, 0);
    }

    #[test]
    fn x86_64_v2_keeps_xsave_and_cx16() {
        let mut c = sample();
        apply_template(&mut c, "x86-64-v2").unwrap();
        let l1 = get(&c, 1, 0);
        assert_ne!(l1.ecx & XSAVE, 0);
        assert_ne!(l1.ecx & CX16, 0);
        assert_eq!(l1.ecx & AVX, 0);
        // Windows 11 24H2 and Server 2025 refuse to boot without these.
        assert_ne!(l1.ecx & (1 << 20), 0, "SSE4.2");
        assert_ne!(l1.ecx & (1 << 23), 0, "POPCNT");
        assert!(c.as_slice().iter().any(|e| e.function == 0xd));
    }

    #[test]
    fn unknown_template_is_an_error() {
        assert_eq!(
            apply_template(&mut sample(), "pentium"),
            Err(CpuidError::UnknownTemplate("pentium".into()))
        );
    }

    #[test]
    fn topology_names_each_vcpu() {
        for (id, count) in [(0u8, 1u8), (3, 4), (5, 6)] {
            let mut c = sample();
            set_topology(&mut c, id, count);
            let l1 = get(&c, 1, 0);
            assert_eq!(l1.ebx >> 24, u32::from(id));
            assert_eq!((l1.ebx >> 16) & 0xff, u32::from(count));
            assert_ne!(l1.ecx & HYPERVISOR, 0);
            assert_eq!(l1.edx & HTT != 0, count > 1);
            let b0 = get(&c, 0xb, 0);
            let b1 = get(&c, 0xb, 1);
            assert_eq!((b0.edx, b1.edx), (u32::from(id), u32::from(id)));
            assert_eq!((b0.ebx, b1.ebx), (1, u32::from(count)));
            assert_eq!((b0.ecx >> 8 & 0xff, b1.ecx >> 8 & 0xff), (1, 2));
            assert!(1u32 << b1.eax >= u32::from(count));
            assert_eq!(get(&c, 0x8000_0008, 0).ecx & 0xff, u32::from(count) - 1);
        }
    }
}
