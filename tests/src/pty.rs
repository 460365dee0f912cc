//! A pseudo-terminal driver: the packed binary run as the test user on a new pty, as from
//! a terminal emulator, with the test typing into it and reading what it shows.

use std::ffi::CStr;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{command_as, send_signal, Test, QUICK};

/// The packed busybox run as the test user on a new pseudo-terminal, as from a terminal
/// emulator: the pty's slave is its controlling terminal, stdin, stdout and stderr; the
/// test holds the master and types into it.
pub struct PtyRun {
    master: OwnedFd,
    /// The test's own copy of the slave, to look at the host terminal's settings.
    slave: OwnedFd,
    slave_path: String,
    child: Option<Child>,
    /// Everything the terminal showed so far.
    seen: Vec<u8>,
}

impl PtyRun {
    /// A new pseudo-terminal of the given size, nothing running on it yet.
    pub fn open(t: &Test, rows: u16, cols: u16) -> PtyRun {
        // SAFETY: posix_openpt returns a new descriptor or -1; nothing else is touched.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        // SAFETY: the descriptor was just created and is owned by nobody else.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: plain calls on our own master; ptsname_r writes at most name.len() bytes.
        unsafe {
            assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
            assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
            assert_eq!(
                libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
                0,
                "ptsname_r"
            );
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
        let slave_path = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_str()
            .expect("pts path")
            .to_string();
        let slave: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&slave_path)
            .unwrap_or_else(|e| panic!("open {slave_path}: {e}"))
            .into();
        // As login does: the terminal belongs to the user who works on it.
        if let Some(user) = &t.env.test_user {
            std::os::unix::fs::fchown(&slave, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {slave_path}: {e}"));
        }
        fs::set_permissions(&slave_path, fs::Permissions::from_mode(0o620))
            .unwrap_or_else(|e| panic!("chmod {slave_path}: {e}"));
        let run = PtyRun {
            master,
            slave,
            slave_path,
            child: None,
            seen: Vec::new(),
        };
        run.resize(rows, cols);
        run
    }

    /// Starts the packed busybox with ARGS on a new pseudo-terminal.
    pub fn start(t: &Test, args: &[&str], rows: u16, cols: u16) -> PtyRun {
        let mut run = PtyRun::open(t, rows, cols);
        run.spawn(t, args);
        run
    }

    /// Starts the packed busybox with ARGS on this terminal, as its session leader.
    pub fn spawn(&mut self, t: &Test, args: &[&str]) {
        self.spawn_file(t, t.busybox(), args);
    }

    /// Starts the packed FILE with ARGS on this terminal, as its session leader.
    pub fn spawn_file(&mut self, t: &Test, file: &Path, args: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let slave_path = self.slave_path.clone();

        let mut command = command_as(t.env.test_user.as_ref(), file);
        let dup = || Stdio::from(self.slave.try_clone().expect("dup the pty slave"));
        command
            .args(args)
            .env_clear()
            .envs(t.busybox_cmd(Vec::<String>::new()).vars())
            .env("TERM", "xterm")
            .current_dir(&t.dir)
            .stdin(dup())
            .stdout(dup())
            .stderr(dup());
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} on {slave_path}: {e}", file.display()));
        self.child = Some(child);
    }

    /// The host pid of the started program (setpriv execs it in place): the leader of
    /// the terminal's session and of its process group.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the started program has exited (it is reaped then, and stays so).
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("started");
        child.try_wait().ok().flatten().is_some()
    }

    /// The path of the pty's slave (`/dev/pts/N`).
    pub fn slave_path(&self) -> &str {
        &self.slave_path
    }

    /// The test's own descriptor of the slave (the host terminal).
    pub fn slave(&self) -> &OwnedFd {
        &self.slave
    }

    /// Everything the terminal showed so far, as bytes.
    pub fn seen(&self) -> &[u8] {
        &self.seen
    }

    /// Sets the terminal's size, as a terminal emulator whose window was resized does
    /// (the kernel sends SIGWINCH to the terminal's foreground process group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we pass; the master is open.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Types `bytes` on the keyboard.
    pub fn send(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: writes from a valid buffer of rest.len() bytes to our master.
            let n = unsafe {
                libc::write(
                    self.master.as_raw_fd(),
                    rest.as_ptr() as *const libc::c_void,
                    rest.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                panic!("write to the terminal: {e}\n{}", self.transcript());
            }
            rest = &rest[n as usize..];
        }
    }

    /// Reads what the terminal shows, for up to `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if ready <= 0 {
                return;
            }
            let mut buf = [0u8; 4096];
            // SAFETY: reads into a valid buffer of buf.len() bytes.
            let n = unsafe {
                libc::read(
                    self.master.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                return;
            }
            self.seen.extend_from_slice(&buf[..n as usize]);
            if Instant::now() >= until {
                return;
            }
        }
    }

    pub fn transcript(&self) -> String {
        format!(
            "terminal transcript: {:?}",
            String::from_utf8_lossy(&self.seen)
        )
    }

    /// Waits until the terminal shows `needle` after byte `from` of the transcript;
    /// returns the position just after it.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, from: usize, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let after = &self.seen[from.min(self.seen.len())..];
            if let Some(i) = find_bytes(after, needle.as_bytes()) {
                return from + i + needle.len();
            }
            if Instant::now() > until {
                panic!(
                    "the terminal did not show {needle:?} within {timeout:?}\n{}",
                    self.transcript()
                );
            }
            self.pump(Duration::from_millis(50));
        }
    }

    /// Types a command line and returns what the shell printed between the marker
    /// lines `<tag>-begin` and `<tag>-end` (the markers are computed by the shell, so
    /// the echo of the typed line never matches them).
    #[track_caller]
    pub fn shell(&mut self, tag: &str, command: &str) -> String {
        let from = self.seen.len();
        let line = format!("echo {tag}-be''gin; {command}; echo {tag}-e''nd\r");
        self.send(line.as_bytes());
        let start = self.wait_for(&format!("{tag}-begin"), from, QUICK * 2);
        let end = self.wait_for(&format!("{tag}-end"), start, QUICK * 2);
        let text = String::from_utf8_lossy(&self.seen[start..end - (tag.len() + 4)]);
        text.trim().to_string()
    }

    /// Waits for the stub to exit, reading the terminal meanwhile.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.pump(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > until {
                let transcript = self.transcript();
                self.kill();
                panic!("the stub did not exit within {timeout:?}\n{transcript}");
            }
            self.pump(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Its session: the stub and whatever it started on the host.
            let _ = send_signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Closes the terminal (the test's master and slave), as a terminal emulator whose
    /// window is closed does.
    pub fn hang_up(&mut self) {
        let null = fs::File::open("/dev/null").unwrap();
        for fd in [self.master.as_raw_fd(), self.slave.as_raw_fd()] {
            // SAFETY: dup2 onto descriptors we own: they now refer to /dev/null and the
            // pty's master and slave are closed.
            assert!(unsafe { libc::dup2(null.as_raw_fd(), fd) } >= 0, "dup2");
        }
    }

    /// The host terminal's settings, as `stty -g` and `stty size` print them.
    pub fn host_settings(&self) -> (String, String) {
        let run = |arg: &str| {
            let out = Command::new("stty")
                .arg(arg)
                .stdin(Stdio::from(self.slave.try_clone().unwrap()))
                .output()
                .expect("run stty");
            assert!(out.status.success(), "stty {arg}: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        (run("-g"), run("size"))
    }
}

impl Drop for PtyRun {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where `needle` first stands in `haystack`.
pub fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
