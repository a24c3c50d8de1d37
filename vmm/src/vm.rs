//! Build a VM from its [`VmConfig`]: KVM VM, guest memory (registered
//! before any vCPU exists), in-kernel irqchip and PIT, devices, ACPI tables,
//! the kernel, and the vCPUs with their CPUID and boot state.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use kiln_api::vm::VmConfig;
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use log::info;

use crate::arch::x86_64::regs::{self, EntryMode};
use crate::arch::x86_64::{acpi, boot, cpuid, firmware, hyperv, irq, smbios};
use crate::console::{Clients, ConsoleOutput};
use crate::device_manager::{DeviceContext, DeviceError, DeviceManager, VirtioModels};
use crate::memory::{self, Backing, GuestMemoryMmap, MemoryError};
use crate::vcpu::{Vcpu, VmShared};

/// KVM's identity-map page and TSS (three pages), below the IOAPIC and
/// clear of RAM, the PCI windows and the firmware, where QEMU puts them.
const KVM_IDENTITY_MAP_START: u64 = 0xfeff_c000;
const KVM_TSS_START: usize = 0xfeff_d000;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("KVM refused to {what}")]
    KvmOp {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest memory")]
    Memory(#[from] MemoryError),
    #[error("devices")]
    Devices(#[from] DeviceError),
    #[error("display")]
    Display(#[from] crate::device_manager::display::DisplayError),
    #[error("ACPI tables")]
    Acpi(#[from] acpi::AcpiError),
    #[error("virtio devices")]
    Virtio(#[from] crate::device_manager::WiringError),
    #[error("the AHCI controller's drives")]
    Ahci(#[from] crate::device_manager::ahci::AhciError),
    #[error("loading the firmware")]
    Firmware(#[from] firmware::FirmwareError),
    #[error("the firmware variable store's flash")]
    Flash(#[from] crate::device_manager::firmware::FlashError),
    #[error("booting the kernel")]
    Boot(#[from] boot::BootError),
    #[error("writing the SMBIOS tables")]
    Smbios(#[from] smbios::SmbiosError),
    #[error("CPUID")]
    Cpuid(#[from] cpuid::CpuidError),
    #[error("Hyper-V enlightenments")]
    Hyperv(#[from] hyperv::HypervError),
    #[error("setting up vCPU {id}")]
    Regs {
        id: u8,
        #[source]
        source: regs::RegsError,
    },
    #[error("opening the console")]
    Console(#[source] std::io::Error),
    #[error("starting a vCPU thread")]
    Thread(#[source] std::io::Error),
    #[error("installing the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

fn kvm_op(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::KvmOp { what, source }
}

/// A VM, built and ready to run, or running.
pub struct Vm {
    pub config: VmConfig,
    pub fd: VmFd,
    pub mem: GuestMemoryMmap,
    pub devices: DeviceManager,
    pub shared: Arc<VmShared>,
    pub console_clients: Clients,
    vcpus: Vec<Vcpu>,
    /// Firmware boot: the firmware's memory, mapped into the guest.
    _firmware: Option<firmware::Firmware>,
    pub threads: Vec<JoinHandle<()>>,
    /// How long building took, for the log.
    pub build_time: std::time::Duration,
}

impl Vm {
    /// `tpm`: the TPM's swtpm, connected (and initialised) before this.
    pub fn build(
        config: &VmConfig,
        start: Instant,
        tpm: Option<crate::tpm::Swtpm>,
    ) -> Result<Vm, VmError> {
        let t0 = Instant::now();
        // Disks and taps first: one that cannot be opened fails the VM
        // before /dev/kvm is.
        let mut models = VirtioModels::open(
            &config.disks,
            &config.nets,
            config.rng.then_some(config.rng_transitional),
        )?;
        models.add_agent(config.agent.as_ref())?;
        if config.display.as_ref().is_some_and(|d| d.tablet) {
            models.add_tablet()?;
        }
        let ahci = crate::device_manager::ahci::AhciDrives::open(config)?;
        let display_rom = crate::device_manager::display::open_rom(config)?;
        let kvm = Kvm::new().map_err(VmError::Kvm)?;
        let fd = kvm.create_vm().map_err(kvm_op("create a VM"))?;
        let mem_size = config.memory.size_mib << 20;
        let mem = memory::create(
            config.memory.size_mib,
            Backing {
                shared: config.memory.shared,
                hugepages: config.memory.hugepages,
                vga_hole: config.display.is_some(),
            },
        )?;
        memory::register(&fd, &mem)?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(kvm_op("set the identity map address"))?;
        fd.set_tss_address(KVM_TSS_START)
            .map_err(kvm_op("set the TSS address"))?;
        fd.create_irq_chip()
            .map_err(kvm_op("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_op("create the PIT"))?;
        irq::set_routes(&fd, &irq::legacy_routes()).map_err(kvm_op("set the interrupt routing"))?;

        let shared = Arc::new(VmShared::new().map_err(VmError::Console)?);
        let console_clients = Clients::default();
        let serial = &config.serial;
        let console = ConsoleOutput::new(
            serial.log.as_deref().map(std::path::Path::new),
            serial.stdio,
            console_clients.clone(),
        )
        .map_err(VmError::Console)?;
        let mut devices = DeviceManager::new(
            &fd,
            &mem,
            config,
            DeviceContext {
                console: Box::new(console),
                requests: shared.clone(),
                start,
                display_rom,
                tpm,
                ahci,
            },
            models,
        )?;

        // Firmware boot: the firmware installs the ACPI tables it reads
        // from fw_cfg, and every vCPU starts at the reset vector.
        let (entry, firmware) = match &config.firmware {
            Some(fw) => {
                let images = firmware::FirmwareImages {
                    code: std::path::Path::new(&fw.path),
                    vars: fw.vars.as_deref().map(std::path::Path::new),
                };
                let mut loaded = firmware::load(&fd, &mem, images)?;
                // The variable store's flash answers the writes (and, out
                // of read-array mode, the reads) that exit as MMIO.
                devices.attach_firmware(&fd, &mut loaded)?;
                (EntryMode::Reset, Some(loaded))
            }
            None => {
                let rsdp = acpi::create_acpi_tables(&mem, &devices.acpi)?;
                smbios::write(&mem, &crate::config::smbios_info(config))?;
                let kernel = config
                    .kernel
                    .as_ref()
                    .expect("validated: a kernel or a firmware is given");
                let boot = boot::load(&mem, kernel, mem_size, rsdp)?;
                info!(
                    "kernel {} loaded, entry {:?}, initramfs {:?}",
                    kernel.path, boot.entry, boot.initramfs
                );
                (boot.entry, None)
            }
        };

        let mut base_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_op("report supported CPUID"))?;
        cpuid::apply_template(&mut base_cpuid, &config.cpus.template)?;
        let count = config.cpus.count;
        let mut vcpus = Vec::with_capacity(usize::from(count));
        let mut hyperv = config.hyperv.then(hyperv::Hyperv::windows);
        for id in 0..count {
            let vfd = fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_op("create a vCPU"))?;
            let mut cpuid = base_cpuid.clone();
            cpuid::set_topology(&mut cpuid, id, count);
            if let Some(hv) = hyperv.as_mut() {
                hv.set_cpuid(&kvm, &vfd, &mut cpuid)?;
            }
            vfd.set_cpuid2(&cpuid).map_err(kvm_op("set CPUID"))?;
            if let Some(hv) = &hyperv {
                hv.enable_vcpu(&kvm, &vfd)?;
            }
            let setup = || -> Result<(), regs::RegsError> {
                regs::setup_msrs(&vfd)?;
                regs::setup_fpu(&vfd)?;
                regs::setup_lint(&vfd)?;
                // Application processors wait for INIT/SIPI from the boot CPU.
                let mode = if id == 0 { entry } else { EntryMode::Reset };
                regs::setup_sregs(&mem, &vfd, mode)?;
                regs::setup_regs(&vfd, mode)
            };
            setup().map_err(|source| VmError::Regs { id, source })?;
            vcpus.push(Vcpu {
                id,
                fd: vfd,
                pio: devices.pio.clone(),
                mmio: devices.mmio.clone(),
                shared: shared.clone(),
            });
        }
        Ok(Vm {
            config: config.clone(),
            fd,
            mem,
            devices,
            shared,
            console_clients,
            vcpus,
            _firmware: firmware,
            threads: Vec::new(),
            build_time: t0.elapsed(),
        })
    }

    /// Start every vCPU on its own thread.
    pub fn start(&mut self) -> Result<(), VmError> {
        crate::vcpu::install_kick_handler().map_err(VmError::Signal)?;
        for vcpu in self.vcpus.drain(..) {
            self.threads.push(vcpu.spawn().map_err(VmError::Thread)?);
        }
        Ok(())
    }
}
