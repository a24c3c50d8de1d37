//! What the virtio-net device needs of one tap queue. The VMM's tap code
//! (`net/tap.rs`) implements it; the device never opens a tap.

use std::io;
use std::os::fd::AsRawFd;

/// One queue of a tap with a virtio-net header on every frame. Reads and
/// writes are non-blocking (`WouldBlock` when nothing is queued); the fd
/// is polled by the worker.
pub trait TapQueue: AsRawFd + Send + Sync {
    /// The tap's name, for logs.
    fn name(&self) -> &str;
    /// Size of the virtio-net header the tap reads and writes.
    fn set_vnet_hdr_size(&self, size: i32) -> io::Result<()>;
    /// Which offloads (`libc::TUN_F_*`) the tap may hand the device.
    fn set_offload(&self, flags: u32) -> io::Result<()>;
    /// Attach this queue to its multi-queue tap or detach it; EINVAL means
    /// it already was so.
    fn set_queue_attached(&self, attached: bool) -> io::Result<()>;
    /// Read one frame (with its header).
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write one frame (with its header).
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Read one frame straight into the buffers `iov` describes.
    ///
    /// # Safety
    /// Every iovec must describe memory writable for the whole call.
    unsafe fn readv(&self, iov: &[libc::iovec]) -> io::Result<usize>;
}
