//! The PC reset control register at I/O port
//! `arch::x86_64::layout::RESET_CONTROL_PORT` (0xCF9), one byte. The FADT names it as
//! the ACPI reset register, with [`RESET_VALUE`] as the value to write.
//!
//! Bit 1 (SYS_RST) and bit 3 (FULL_RST) only choose the kind of reset and
//! read back; writing bit 2 (RST_CPU) set resets the machine, which here
//! means asking the VM for [`VmRequest::Reset`].
//!

use std::sync::Arc;

use crate::devices::bus::BusDevice;
use crate::devices::{VmRequest, VmRequests};

/// Length of the register on the I/O bus.
pub const RESET_CONTROL_LEN: u64 = 1;
pub const SYS_RST: u8 = 1 << 1;
pub const RST_CPU: u8 = 1 << 2;
pub const FULL_RST: u8 = 1 << 3;
/// What the ACPI reset register (FADT RESET_REG) asks the OS to write.
pub const RESET_VALUE: u8 = SYS_RST | RST_CPU;

/// The reset control register.
pub struct ResetControl {
    value: u8,
    requests: Arc<dyn VmRequests>,
}

impl ResetControl {
    pub fn new(requests: Arc<dyn VmRequests>) -> Self {
        ResetControl { value: 0, requests }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = self.value;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, Some(&v)) = (offset, data.first()) else {
            return;
        };
        self.value = v & (SYS_RST | FULL_RST);
        if v & RST_CPU != 0 {
            log::info!("reset control: guest asked for a reset ({v:#x})");
            self.requests.request(VmRequest::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::RecordedRequests;

    fn device() -> (ResetControl, Arc<RecordedRequests>) {
        let requests = Arc::new(RecordedRequests::default());
        (ResetControl::new(requests.clone()), requests)
    }

    fn read(dev: &mut ResetControl) -> u8 {
        let mut b = [0xaa];
        dev.read(0, &mut b);
        b[0]
    }

    #[test]
    fn rst_cpu_resets() {
        let (mut dev, requests) = device();
        dev.write(0, &[RESET_VALUE]);
        assert_eq!(*requests.0.lock().unwrap(), vec![VmRequest::Reset]);
        // RST_CPU does not read back; SYS_RST does.
        assert_eq!(read(&mut dev), SYS_RST);
        dev.write(0, &[FULL_RST | SYS_RST | RST_CPU]);
        assert_eq!(requests.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn other_bits_only_read_back() {
        let (mut dev, requests) = device();
        assert_eq!(read(&mut dev), 0);
        dev.write(0, &[SYS_RST | FULL_RST | 0xf1]);
        assert_eq!(read(&mut dev), SYS_RST | FULL_RST);
        dev.write(0, &[0]);
        assert_eq!(read(&mut dev), 0);
        assert!(requests.0.lock().unwrap().is_empty());
    }

    #[test]
    fn wide_and_odd_accesses_are_safe() {
        let (mut dev, requests) = device();
        // A word write at the port still writes its first byte.
        dev.write(0, &[RESET_VALUE, 0xff]);
        assert_eq!(requests.0.lock().unwrap().len(), 1);
        dev.write(1, &[RESET_VALUE]);
        dev.write(0, &[]);
        assert_eq!(requests.0.lock().unwrap().len(), 1);
        let mut d = [0xaa; 4];
        dev.read(0, &mut d);
        assert_eq!(d, [SYS_RST, 0, 0, 0]);
        dev.read(5, &mut d);
        assert_eq!(d, [0; 4]);
        dev.read(0, &mut []);
    }
}
