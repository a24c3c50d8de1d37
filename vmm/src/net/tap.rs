//! A Linux tap device with a virtio-net header on every frame
//! (`IFF_VNET_HDR`), opened by name through `/dev/net/tun` (needs
//! CAP_NET_ADMIN unless the tap is persistent and owned by us) or taken as
//! an fd the caller already opened, so the VMM needs no privilege.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use crate::devices::virtio::net::{FrameIo, TapQueue, NET_HDR_LEN};
use libc::{
    c_short, IFF_ATTACH_QUEUE, IFF_DETACH_QUEUE, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR,
    IFNAMSIZ, TUNGETIFF, TUNSETIFF, TUNSETOFFLOAD, TUNSETQUEUE, TUNSETVNETHDRSZ,
};
/// Offload flags for [`Tap::set_offload`] (linux/if_tun.h).
pub use libc::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};

/// The virtio-net header on each frame (`struct virtio_net_hdr_v1`, with
/// `num_buffers`), as virtio 1.x devices use it.
pub const VNET_HDR_LEN: usize = NET_HDR_LEN;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap name {0:?} is empty or longer than 15 bytes")]
    Name(String),
    #[error("opening /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("creating/attaching tap {name}")]
    SetIff {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("fd {0} is not a tap device")]
    NotTap(RawFd, #[source] io::Error),
    #[error("fd {0} is a tap without IFF_VNET_HDR")]
    NoVnetHdr(RawFd),
    #[error("configuring the tap ({what})")]
    Ioctl {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: c_short,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

impl IfReq {
    fn new() -> Self {
        IfReq {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        }
    }
}

/// An open tap queue.
pub struct Tap {
    file: File,
    name: String,
}

fn last_err(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Tap {
    /// Open (creating if needed) the tap `name`, non-blocking, with a
    /// virtio-net header on frames.
    pub fn open_named(name: &str, multi_queue: bool) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(TapError::Name(name.to_string()));
        }
        // SAFETY: a NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        let fd = last_err(fd).map_err(TapError::OpenTun)?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq::new();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        // The IFF_ flags all fit the ifreq's short.
        req.flags = flags as c_short;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is (40
        // bytes, the kernel's size).
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        last_err(r).map_err(|source| TapError::SetIff {
            name: name.to_string(),
            source,
        })?;
        Self::ready(file, &req)
    }

    /// Take over `fd`, a tap the caller opened with IFF_VNET_HDR.
    ///
    /// # Safety
    /// `fd` must be an open fd that nothing else in this process uses or
    /// closes; the returned `Tap` owns it.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Result<Tap, TapError> {
        // SAFETY: the caller hands over ownership of an open fd.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq::new();
        // SAFETY: TUNGETIFF writes an ifreq into `req`.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNGETIFF, &mut req) };
        last_err(r).map_err(|e| TapError::NotTap(fd, e))?;
        if i32::from(req.flags) & IFF_VNET_HDR == 0 {
            return Err(TapError::NoVnetHdr(fd));
        }
        // SAFETY: F_GETFL/F_SETFL on our own fd.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        let r = unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) };
        last_err(r).map_err(|source| TapError::Ioctl {
            what: "O_NONBLOCK",
            source,
        })?;
        Self::ready(file, &req)
    }

    /// The tap on `file`, named as in `req` (which the kernel filled in),
    /// set up for our header and with no offloads until the guest asks.
    fn ready(file: File, req: &IfReq) -> Result<Tap, TapError> {
        let name = CStr::from_bytes_until_nul(&req.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tap = Tap { file, name };
        tap.set_vnet_hdr_size(VNET_HDR_LEN as i32)?;
        tap.set_offload(0)?;
        Ok(tap)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the virtio-net header the tap reads and writes.
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<(), TapError> {
        // SAFETY: TUNSETVNETHDRSZ reads an int.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETVNETHDRSZ, &size) };
        last_err(r).map(drop).map_err(|source| TapError::Ioctl {
            what: "TUNSETVNETHDRSZ",
            source,
        })
    }

    /// Which offloads the tap may hand us (frames with partial checksums,
    /// TSO/UFO super-frames): only what the guest accepts.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        last_err(r).map(drop).map_err(|source| TapError::Ioctl {
            what: "TUNSETOFFLOAD",
            source,
        })
    }

    /// Open `queues` queues of the multi-queue tap `name` (creating it if
    /// needed). One queue opens it without IFF_MULTI_QUEUE, as before.
    pub fn open_queues(name: &str, queues: usize) -> Result<Vec<Tap>, TapError> {
        if queues <= 1 {
            return Ok(vec![Self::open_named(name, false)?]);
        }
        (0..queues).map(|_| Self::open_named(name, true)).collect()
    }

    /// Attach this queue to its multi-queue tap (the kernel steers frames
    /// to it) or detach it (frames go to the other queues only).
    pub fn set_queue_attached(&self, attached: bool) -> Result<(), TapError> {
        let mut req = IfReq::new();
        req.flags = if attached {
            IFF_ATTACH_QUEUE
        } else {
            IFF_DETACH_QUEUE
        } as c_short;
        // SAFETY: TUNSETQUEUE reads an ifreq, which `req` is.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETQUEUE, &mut req) };
        last_err(r).map(drop).map_err(|source| TapError::Ioctl {
            what: "TUNSETQUEUE",
            source,
        })
    }

    /// Read one frame (with its header) straight into the buffers `iov`
    /// describes. Returns the bytes copied: a frame longer than the
    /// buffers is cut (the rest is lost).
    ///
    /// # Safety
    /// Every iovec must describe memory writable for the whole call.
    pub unsafe fn readv(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let cnt = iov.len().min(1024) as libc::c_int;
        // SAFETY: the caller guarantees the iovecs; at most `cnt` are read.
        let n = unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr(), cnt) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Read one frame (with its header); `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Write one frame (with its header).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: reads `buf.len()` bytes from `buf`.
        let n = unsafe { libc::write(self.file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl TapQueue for Tap {
    fn name(&self) -> &str {
        Tap::name(self)
    }
    fn set_vnet_hdr_size(&self, size: i32) -> io::Result<()> {
        Tap::set_vnet_hdr_size(self, size).map_err(TapError::into_io)
    }
    fn set_offload(&self, flags: u32) -> io::Result<()> {
        Tap::set_offload(self, flags).map_err(TapError::into_io)
    }
    fn set_queue_attached(&self, attached: bool) -> io::Result<()> {
        Tap::set_queue_attached(self, attached).map_err(TapError::into_io)
    }
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Tap::read(self, buf)
    }
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Tap::write(self, buf)
    }
    unsafe fn readv(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: passed on from our caller.
        unsafe { Tap::readv(self, iov) }
    }
}

impl FrameIo for Tap {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        Tap::write(self, frame).map(drop)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Tap::read(self, buf)
    }
    unsafe fn recv_iov(&mut self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: passed on from our caller.
        unsafe { Tap::readv(self, iov) }
    }
}

impl TapError {
    /// The OS error of an ioctl (its errno kept), else the message.
    fn into_io(self) -> io::Error {
        match self {
            TapError::Ioctl { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_non_tap_fds() {
        assert!(matches!(Tap::open_named("", false), Err(TapError::Name(_))));
        assert!(matches!(
            Tap::open_named("a-name-far-too-long", false),
            Err(TapError::Name(_))
        ));
        let f = File::open("/dev/null").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        // SAFETY: `fd` was just opened and is handed over.
        let r = unsafe { Tap::from_raw_fd(fd) };
        assert!(matches!(r, Err(TapError::NotTap(..))));
    }
}
