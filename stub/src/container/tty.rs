//! The terminal (docs/STUB.md, pty): a pseudo-terminal from the container's own
//! devpts, its master handed to the monitor over a socket (SCM_RIGHTS), the host terminal
//! in raw mode while the monitor relays bytes and window sizes.

use crate::error::{Context, Result};
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The host terminal in raw mode; the saved settings come back on drop, on every path.
pub struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal.
    pub fn enter(fd: BorrowedFd<'static>) -> Option<RawMode> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
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
    let fd = crate::sys::take_fd(std::os::fd::IntoRawFd::into_raw_fd(master));
    Ok((fd, PathBuf::from(slave)))
}

/// Makes `terminal` the calling process's controlling terminal and its stdin, stdout
/// and stderr, in a session of its own (the command, before exec).
pub fn become_session_leader_on(terminal: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::setsid().context("setsid failed")?;
    crate::sys::set_controlling_tty(terminal).context("cannot take the terminal")?;
    for target in 0..=2 {
        nix::unistd::dup2(terminal.as_raw_fd(), target).context("dup2 failed")?;
    }
    Ok(())
}

/// The socket pair over which a pty master travels (SCM_RIGHTS).
pub fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .context("cannot create a socket pair")
}

/// `--console PATH`: the host pty slave the command uses (never our controlling tty).
pub fn open_console(path: &std::path::Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map(OwnedFd::from)
        .with_context(|| format!("cannot open the console {}", path.display()))
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
                return Ok(crate::sys::take_fd(fd));
            }
        }
    }
    Err(crate::error::Error::new(
        "the container did not send its terminal",
    ))
}
