//! The device manager's platform part: the PC's legacy devices at their
//! fixed ports (COM1, i8042, RTC, debug port, ACPI PM, reset, PCI config
//! access, and for a firmware boot fw_cfg, debugcon and the PIIX
//! functions), each interrupt an irqfd on its GSI.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_api::control::BootProgress;
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use super::DeviceError;
use crate::arch::x86_64::fw_cfg as pc_fw_cfg;
use crate::arch::x86_64::platform::{
    AcpiPlatform, PciIntx, PmBlock, ResetRegister, TpmCrbInfo, Window,
};
use crate::arch::x86_64::smbios::SmbiosInfo;
use crate::arch::x86_64::{irq, layout};
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::debug_port::DebugPort;
use crate::devices::legacy::debugcon::{self, DebugCon};
use crate::devices::legacy::fw_cfg::{self, FwCfg};
use crate::devices::legacy::i8042::I8042Device;
use crate::devices::legacy::pm::{self, PmDevice, PM_IO_LEN};
use crate::devices::legacy::reset::{self, ResetControl};
use crate::devices::legacy::rtc::{Rtc, RtcDevice};
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::pci::piix::{self, piix3_isa_bridge, Piix4Pm};
use crate::devices::pci::{
    HostBridgeIdentity, PciConfigIo, PciConfigMmio, PciRoot, NUM_SLOTS, PCI_CONFIG_IO_LEN,
};
use crate::devices::{Interrupt, VmRequests};
use crate::memory::GuestMemoryMmap;

/// A GSI driven through an irqfd: the fast path that needs no vCPU exit.
pub struct IrqLine {
    evt: EventFd,
}

impl Interrupt for IrqLine {
    fn trigger(&self) -> std::io::Result<()> {
        self.evt.write(1)
    }
}

pub(super) fn irq_line(vm: &VmFd, gsi: u32) -> Result<Arc<IrqLine>, DeviceError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(DeviceError::EventFd)?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| DeviceError::Irqfd { gsi, source })?;
    Ok(Arc::new(IrqLine { evt }))
}

/// Interrupt pins per PCI function (INTA#..INTD#).
const PCI_PINS: u8 = 4;

/// The platform description of a PC of `cpus` vCPUs and `mem_size` bytes
/// of RAM with the devices [`Platform::new`] builds, for the ACPI tables
/// and fw_cfg: the PM device's register block (at the direct-boot base; a
/// firmware moves it, see `fw_cfg::follow_pm_base`), the reset control's
/// register and value, and every INTx pin of every slot of bus 0 that can
/// hold a device (slot 0 is the host bridge) to the GSI the wiring raises
/// ([`irq::pci_pin_gsi`], the function `virtio/legacy.rs` wires INTA#
/// of transitional devices with, so tables and wiring agree whichever
/// devices are present).
pub fn describe(cpus: u8, mem_size: u64) -> AcpiPlatform {
    let pci_intx = (1..NUM_SLOTS as u8)
        .flat_map(|slot| {
            (0..PCI_PINS).map(move |pin| PciIntx {
                slot,
                pin,
                gsi: irq::pci_pin_gsi(slot, pin + 1),
            })
        })
        .collect();
    let (mmio64_start, mmio64_size) = layout::mmio64_window(mem_size);
    AcpiPlatform {
        cpus,
        mem_size,
        sci_irq: layout::SCI_IRQ,
        pm: PmBlock {
            base: layout::PM_IO_BASE,
            len: PM_IO_LEN as u8,
            evt_offset: pm::PM1_STS as u16,
            evt_len: pm::PM1_EVT_LEN,
            cnt_offset: pm::PM1_CNT as u16,
            cnt_len: pm::PM1_CNT_LEN,
            tmr_offset: pm::PM_TMR as u16,
            tmr_len: pm::PM_TMR_LEN,
            tmr_32bit: pm::PM_TMR_BITS == 32,
            fixed_power_button: pm::FIXED_POWER_BUTTON,
            s5_sleep_type: pm::S5_SLEEP_TYPE,
        },
        reset: ResetRegister {
            port: layout::RESET_CONTROL_PORT,
            value: reset::RESET_VALUE,
        },
        pci_intx,
        pci_config_ports: Window {
            start: u64::from(layout::PCI_CONFIG_PORT),
            size: PCI_CONFIG_IO_LEN,
        },
        pci_ecam: Window {
            start: layout::PCI_ECAM_START,
            size: layout::PCI_ECAM_SIZE,
        },
        pci_mmio32: Window {
            start: layout::MMIO32_START,
            size: layout::MMIO32_SIZE,
        },
        pci_mmio64: Window {
            start: mmio64_start,
            size: mmio64_size,
        },
        tpm: None,
    }
}

/// The PC platform's devices, as the control loop needs to reach them.
pub struct Platform {
    pub serial: Arc<Mutex<SerialDevice>>,
    pub pm: Arc<Mutex<PmDevice>>,
    /// The i8042, for typing on its keyboard.
    pub keyboard: crate::keyboard::Keyboard,
    pub boot_progress: Arc<Mutex<Vec<BootProgress>>>,
    /// Firmware boot only: fw_cfg, e.g. to set `bootorder` once disks exist.
    pub fw_cfg: Option<Arc<Mutex<FwCfg>>>,
}

fn put<D: BusDevice + 'static>(
    bus: &mut Bus,
    name: &'static str,
    dev: D,
    base: u64,
    len: u64,
) -> Result<Arc<Mutex<D>>, DeviceError> {
    let dev = Arc::new(Mutex::new(dev));
    bus.insert(dev.clone(), base, len)
        .map_err(|source| DeviceError::Bus { name, source })?;
    Ok(dev)
}

impl Platform {
    /// Create the platform devices for a VM of `mem_size` bytes and `cpus`
    /// vCPUs, on `pio`/`mmio`; returns them, the PCI root and the
    /// platform's description ([`describe`]). `console` receives the UART's output; `requests` hears
    /// power-off and reset; `start` is the VMM's start time that debug-port
    /// timestamps count from; `rtc_local_time` keeps the RTC in host local
    /// time (Windows guests) instead of UTC.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        vm: &VmFd,
        pio: &mut Bus,
        mmio: &mut Bus,
        console: Box<dyn Write + Send>,
        requests: Arc<dyn VmRequests>,
        start: Instant,
        mem_size: u64,
        cpus: u8,
        firmware: Option<(&GuestMemoryMmap, SmbiosInfo)>,
        rtc_local_time: bool,
        tpm: Option<TpmCrbInfo>,
    ) -> Result<(Self, Arc<Mutex<PciRoot>>, AcpiPlatform), DeviceError> {
        let mut description = describe(cpus, mem_size);
        description.tpm = tpm;
        let serial = put(
            pio,
            "COM1",
            SerialDevice::new(irq_line(vm, layout::COM1_IRQ)?, console),
            u64::from(layout::COM1_PORT),
            8,
        )?;
        let keyboard = put(
            pio,
            "i8042",
            I8042Device::new(requests.clone())
                .with_interrupt(irq_line(vm, layout::I8042_IRQ)?)
                .with_aux_interrupt(irq_line(vm, layout::I8042_AUX_IRQ)?),
            u64::from(layout::I8042_PORT),
            5,
        )?;
        let mut rtc = Rtc::new(rtc_local_time).with_interrupt(irq_line(vm, layout::RTC_IRQ)?);
        rtc.set_memory_size(mem_size, layout::MMIO32_START);
        rtc.set_cpu_count(cpus);
        if firmware.is_some() {
            for (index, value) in pc_fw_cfg::CMOS_BOOT_ORDER {
                rtc.set_cmos_byte(index, value)
                    .expect("the boot order bytes are CMOS RAM");
            }
        }
        let rtc = RtcDevice::new(rtc).map_err(DeviceError::RtcTimer)?;
        put(pio, "RTC", rtc, u64::from(layout::RTC_PORT), 2)?;
        let debug = DebugPort::new(start);
        let boot_progress = debug.log();
        put(pio, "debug port", debug, u64::from(layout::DEBUG_PORT), 1)?;
        // The ACPI PM block: at its fixed ports for a direct boot (the
        // tables say so); for a firmware boot, wherever the firmware puts
        // it through the PIIX4 PM function (hidden until then).
        let pm = Arc::new(Mutex::new(PmDevice::new(
            irq_line(vm, layout::SCI_IRQ)?,
            requests.clone(),
        )));
        let pm_block = match &firmware {
            None => {
                pio.insert(pm.clone(), u64::from(layout::PM_IO_BASE), PM_IO_LEN)
                    .map_err(|source| DeviceError::Bus {
                        name: "ACPI PM",
                        source,
                    })?;
                None
            }
            Some(_) => Some(
                pio.insert_movable(pm.clone(), PM_IO_LEN)
                    .map_err(|source| DeviceError::Bus {
                        name: "ACPI PM",
                        source,
                    })?,
            ),
        };
        // Direct kernel boot: a Q35-like host bridge; Linux finds the ECAM
        // through the MCFG table. 0xCF9 (reset control) sits inside the
        // mechanism-1 ports, so the PCI config device forwards it.
        // Firmware boot: an i440FX host bridge, which SeaBIOS drives through
        // 0xCF8/0xCFC only (with Q35 it would move the ECAM and expect an
        // ICH9 LPC bridge), and the PIIX3 ISA bridge and PIIX4 PM function
        // at 00:01.0 and 00:01.3 that SeaBIOS and OVMF program.
        let pci = Arc::new(Mutex::new(match &pm_block {
            Some(range) => {
                let mut root = PciRoot::with_host_bridge(HostBridgeIdentity::I440FX);
                root.add_function(
                    piix::PIIX_SLOT,
                    piix::PIIX3_ISA_FUNCTION,
                    Arc::new(Mutex::new(piix3_isa_bridge())),
                )?;
                root.add_function(
                    piix::PIIX_SLOT,
                    piix::PIIX4_PM_FUNCTION,
                    Arc::new(Mutex::new(Piix4Pm::new(range.clone()))),
                )?;
                root
            }
            None => PciRoot::new(),
        }));
        let reset: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(ResetControl::new(requests)));
        put(
            pio,
            "PCI config ports",
            PciConfigIo::new(pci.clone()).with_port_cf9(reset),
            u64::from(layout::PCI_CONFIG_PORT),
            PCI_CONFIG_IO_LEN,
        )?;
        put(
            mmio,
            "PCI ECAM",
            PciConfigMmio::new(pci.clone()),
            layout::PCI_ECAM_START,
            layout::PCI_ECAM_SIZE,
        )?;
        let fw_cfg = match firmware {
            Some((mem, smbios)) => {
                let mut cfg = pc_fw_cfg::PcConfig::new(description.clone());
                cfg.smbios = Some(smbios);
                // A firmware measures the boot into an event log.
                if let Some(t) = cfg.platform.tpm.as_mut() {
                    t.log_size = crate::arch::x86_64::acpi::tpm2::LOG_SIZE;
                }
                let mut dev = super::fw_cfg::build(mem.clone(), &cfg)?;
                if let Some(range) = pm_block {
                    super::fw_cfg::follow_pm_base(&mut dev, &cfg, move || {
                        range.base().and_then(|b| u16::try_from(b).ok())
                    })?;
                }
                put(
                    pio,
                    "debugcon",
                    DebugCon::to_log(),
                    u64::from(debugcon::DEBUGCON_PORT),
                    1,
                )?;
                Some(put(
                    pio,
                    "fw_cfg",
                    dev,
                    u64::from(fw_cfg::FW_CFG_PORT),
                    fw_cfg::FW_CFG_PORT_LEN,
                )?)
            }
            None => None,
        };
        Ok((
            Platform {
                fw_cfg,
                serial,
                pm,
                keyboard: crate::keyboard::Keyboard(keyboard),
                boot_progress,
            },
            pci,
            description,
        ))
    }
}
