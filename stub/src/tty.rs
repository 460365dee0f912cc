//! The terminal (RUNTIME-NOTES D3, mode B): a pseudo-terminal from the container's own
//! devpts, its master handed to the monitor over a socket (SCM_RIGHTS), the host terminal
//! in raw mode while the monitor relays bytes and window sizes.

use crate::error::{Context, Result};
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(set_controlling_tty, libc::TIOCSCTTY);

/// The host terminal in raw mode; the saved settings come back on drop, on every path.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the descriptor (the stub's stdin) stays open for the stub's whole life.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the window size of `from` (the host terminal) to `to` (the pty master).
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; TIOCSWINSZ reads it. Both fds are open.
    unsafe {
        if get_winsize(from.as_raw_fd(), &mut size).is_ok() {
            let _ = set_winsize(to.as_raw_fd(), &size);
        }
    }
}

/// Opens a new pty in the container's devpts (after pivot_root): the master, and the
/// slave's path for the command to open.
pub fn open_pty() -> Result<(OwnedFd, PathBuf)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("cannot open /dev/ptmx in the container")?;
    nix::pty::grantpt(&master).context("grantpt failed")?;
    nix::pty::unlockpt(&master).context("unlockpt failed")?;
    let slave = nix::pty::ptsname_r(&master).context("ptsname failed")?;
    // SAFETY: into_raw_fd hands us sole ownership of the master's descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok((fd, PathBuf::from(slave)))
}

/// Makes `terminal` the calling process's controlling terminal and its stdin, stdout
/// and stderr, in a session of its own (the command, before exec).
pub fn become_session_leader_on(terminal: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::setsid().context("setsid failed")?;
    // SAFETY: TIOCSCTTY takes an integer (0: do not steal) and changes only our session.
    unsafe { set_controlling_tty(terminal.as_raw_fd(), 0) }.context("cannot take the terminal")?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which we mean to replace.
        if unsafe { libc::dup2(terminal.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2 failed");
        }
    }
    Ok(())
}

/// Sends `fd` over the unix socket `sock`.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"t")];
    socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("cannot pass the terminal to the monitor")?;
    Ok(())
}

/// Receives a descriptor sent with [`send_fd`].
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("cannot receive the container's terminal")?;
    for cmsg in msg.cmsgs().context("bad control message")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us; nobody else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(crate::error::Error::new(
        "the container did not send its terminal",
    ))
}

/// The stub's stdin.
pub fn stdin() -> BorrowedFd<'static> {
    // SAFETY: descriptor 0 stays open for the process's whole life.
    unsafe { BorrowedFd::borrow_raw(0) }
}
