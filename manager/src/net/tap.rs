//! Creating a tap device for a NIC: `TUNSETIFF` on `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (kiln-vmm's virtio-net wants the
//! virtio-net header on every frame), and `IFF_MULTI_QUEUE` with one fd per
//! queue for a multi-queue NIC. The tap is not made persistent: it lives
//! exactly as long as an open fd refers to it (see [`super`] for why).
//! The first `TUNSETIFF` carries `IFF_TUN_EXCL`, so it makes a new tap or
//! fails with `EBUSY`: it never attaches to a tap of that name someone
//! else made (another kilnd's multi-queue tap would take the queue).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use libc::{
    c_short, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_TUN_EXCL, IFF_VNET_HDR, IFNAMSIZ, TUNSETIFF,
};

#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: c_short,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

/// Creates tap `name` with `queues` queues (1: a single-queue tap; more:
/// `IFF_MULTI_QUEUE`, the tap opened that many times) and answers the
/// queues' fds (close-on-exec; the supervisor clears that in the one child
/// that must inherit them). A link named `name` that exists already is an
/// `EBUSY` error: this only makes new taps.
pub fn create(name: &str, queues: usize) -> io::Result<Vec<OwnedFd>> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad tap name {name:?}"),
        ));
    }
    if queues == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a tap needs at least one queue",
        ));
    }
    // The IFF_ flags all fit the ifreq's short.
    let flags = (if queues > 1 {
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE
    } else {
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    }) as c_short;
    // The first queue makes the tap (and only a new one); the others
    // attach to it.
    (0..queues)
        .map(|q| {
            open_queue(
                name,
                if q == 0 {
                    flags | IFF_TUN_EXCL as c_short
                } else {
                    flags
                },
            )
        })
        .collect()
}

/// One `TUNSETIFF` on a new `/dev/net/tun` fd: creates tap `name`
/// (`IFF_TUN_EXCL` in `flags`), or (multi-queue) attaches another queue
/// to it.
fn open_queue(name: &str, flags: c_short) -> io::Result<OwnedFd> {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes), which
    // `req` is; the fd is our open /dev/net/tun.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

/// Clears close-on-exec on `fd`. Call it only between fork and exec (in a
/// `pre_exec` hook) so that no other child started meanwhile inherits it.
///
/// # Safety
/// `fd` must be open; the call is async-signal-safe.
pub unsafe fn inherit(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an open fd, async-signal-safe.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
