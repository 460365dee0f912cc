//! Seccomp filters, compiled here to classic BPF (a few dozen instructions, built in
//! microseconds, so nothing is precompiled at pack time and no C library is linked).
//!
//! The default filter refuses what docker's default profile refuses to a container
//! without CAP_SYS_ADMIN: kernel keyrings, bpf, perf, module and kexec loading,
//! open_by_handle_at, mount/pivot_root/setns, new namespaces from inside (clone and
//! unshare with namespace flags; clone3 gets ENOSYS so libc falls back to clone, whose
//! flags a filter can read), odd personalities, and terminal injection (TIOCSTI).
//! It is a deny list: a syscall newer than this list is allowed, where docker's allow
//! list would refuse it.

use crate::sys;

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(n: u32) -> u32 {
    16 + 8 * n
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 syscalls on x86_64 carry this bit; they bypass a filter keyed on x86_64 numbers.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// Namespace flags of clone(2)/unshare(2): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET, NEWTIME.
const NAMESPACE_FLAGS: u32 = 0x7E02_0080;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// What a rule does with its syscall.
#[derive(Clone, Debug)]
enum Rule {
    /// Always return this errno (0: pretend success).
    Errno(i64, u16),
    /// Return errno when argument `arg` has any bit of `mask` set.
    ErrnoIfAnyBit(i64, u32, u32, u16),
    /// Return errno when argument `arg` (low 32 bits) equals one of `values`.
    ErrnoIfEquals(i64, u32, &'static [u32], u16),
    /// Return errno unless argument `arg` (low 32 bits) is one of `values`.
    ErrnoUnless(i64, u32, &'static [u32], u16),
}

/// Compiles rules (one per syscall) into a program: arch check, x32 check, then each
/// rule as a block that the syscall number jumps over when it does not match.
fn compile(rules: &[Rule]) -> Vec<Insn> {
    let errno = |e: u16| RET_ERRNO | u32::from(e);
    let mut prog = vec![
        insn(LD_ABS, 0, 0, OFF_ARCH),
        insn(JEQ, 1, 0, AUDIT_ARCH),
        insn(RET, 0, 0, errno(libc::EPERM as u16)),
        insn(LD_ABS, 0, 0, OFF_NR),
        insn(JGE, 0, 1, X32_SYSCALL_BIT),
        insn(RET, 0, 0, errno(libc::EPERM as u16)),
    ];
    for rule in rules {
        let (nr, block) = match *rule {
            Rule::Errno(nr, e) => (nr, vec![insn(RET, 0, 0, errno(e))]),
            Rule::ErrnoIfAnyBit(nr, arg, mask, e) => (
                nr,
                vec![
                    insn(LD_ABS, 0, 0, off_arg(arg)),
                    insn(JSET, 0, 1, mask),
                    insn(RET, 0, 0, errno(e)),
                    insn(RET, 0, 0, RET_ALLOW),
                ],
            ),
            Rule::ErrnoIfEquals(nr, arg, values, e) | Rule::ErrnoUnless(nr, arg, values, e) => {
                let deny_on_match = matches!(rule, Rule::ErrnoIfEquals(..));
                let n = values.len();
                // ld; n comparisons; the miss return; the match return. From
                // comparison i a match jumps n - i ahead, onto the match return.
                let mut block = vec![insn(LD_ABS, 0, 0, off_arg(arg))];
                for (i, &v) in values.iter().enumerate() {
                    block.push(insn(JEQ, (n - i) as u8, 0, v));
                }
                let (on_miss, on_match) = if deny_on_match {
                    (RET_ALLOW, errno(e))
                } else {
                    (errno(e), RET_ALLOW)
                };
                block.push(insn(RET, 0, 0, on_miss));
                block.push(insn(RET, 0, 0, on_match));
                (nr, block)
            }
        };
        prog.push(insn(JEQ, 0, block.len() as u8, nr as u32));
        prog.extend(block);
    }
    prog.push(insn(RET, 0, 0, RET_ALLOW));
    prog
}

/// Personalities docker allows: PER_LINUX, UNAME26, PER_LINUX32, LINUX32|UNAME26, query.
const PERSONALITIES: &[u32] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
const TERMINAL_INJECTION: &[u32] = &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

fn default_rules() -> Vec<Rule> {
    let eperm = libc::EPERM as u16;
    let mut denied: Vec<i64> = vec![
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_bpf,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_settime,
        libc::SYS_settimeofday,
        libc::SYS_delete_module,
        libc::SYS_finit_module,
        libc::SYS_init_module,
        libc::SYS_kcmp,
        libc::SYS_kexec_file_load,
        libc::SYS_kexec_load,
        libc::SYS_keyctl,
        libc::SYS_lookup_dcookie,
        libc::SYS_mount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_name_to_handle_at,
        libc::SYS_nfsservctl,
        libc::SYS_open_by_handle_at,
        libc::SYS_perf_event_open,
        libc::SYS_pivot_root,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_quotactl,
        libc::SYS_reboot,
        libc::SYS_request_key,
        libc::SYS_setns,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_umount2,
        libc::SYS_userfaultfd,
        libc::SYS_get_mempolicy,
        libc::SYS_set_mempolicy,
        libc::SYS_mbind,
        libc::SYS_move_pages,
        // docker's default profile refuses io_uring: it bypasses this very filter
        // (its operations are not system calls) and has been a rich source of bugs.
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    denied.extend([
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_uselib,
        libc::SYS_ustat,
    ]);
    let mut rules: Vec<Rule> = denied
        .into_iter()
        .map(|nr| Rule::Errno(nr, eperm))
        .collect();
    rules.extend([
        Rule::ErrnoIfAnyBit(libc::SYS_clone, 0, NAMESPACE_FLAGS, eperm),
        Rule::ErrnoIfAnyBit(libc::SYS_unshare, 0, NAMESPACE_FLAGS, eperm),
        Rule::Errno(libc::SYS_clone3, libc::ENOSYS as u16),
        Rule::ErrnoUnless(libc::SYS_personality, 0, PERSONALITIES, eperm),
        Rule::ErrnoIfEquals(libc::SYS_ioctl, 1, TERMINAL_INJECTION, eperm),
    ]);
    rules
}

/// charliecloud's answer to a single id mapping: ownership and identity changes
/// "succeed" without effect (they would fail with EINVAL, breaking package managers and
/// servers that drop privileges).
fn fake_root_rules() -> Vec<Rule> {
    let mut faked = vec![
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
        libc::SYS_setgroups,
    ];
    #[cfg(target_arch = "x86_64")]
    faked.extend([libc::SYS_chown, libc::SYS_lchown]);
    faked.into_iter().map(|nr| Rule::Errno(nr, 0)).collect()
}

/// The program for a container: docker's defaults and/or the fake-root rules; None
/// when neither is wanted.
pub fn filter(default: bool, fake_root: bool) -> Option<Vec<Insn>> {
    let mut rules = Vec::new();
    if default {
        rules.extend(default_rules());
    }
    if fake_root {
        rules.extend(fake_root_rules());
    }
    (!rules.is_empty()).then(|| compile(&rules))
}

/// The default filter's program.
#[cfg(test)]
pub fn default_filter() -> Vec<Insn> {
    compile(&default_rules())
}

/// Installs `prog` for the calling thread (no_new_privs must be set), as the last step
/// before exec.
pub fn install(prog: &[Insn]) -> std::io::Result<()> {
    let filters: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    sys::seccomp_filter(&filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small interpreter for the instructions we emit, to check the program's logic
    /// without installing it.
    fn run(prog: &[Insn], arch: u32, nr: u32, args: [u32; 6]) -> u32 {
        let load = |off: u32| match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            o if o >= 16 => args[((o - 16) / 8) as usize],
            _ => 0,
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_ABS => acc = load(i.k),
                RET => return i.k,
                JEQ | JGE | JSET => {
                    let hit = match i.code {
                        JEQ => acc == i.k,
                        JGE => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn verdict(nr: i64, args: [u32; 6]) -> u32 {
        run(&default_filter(), AUDIT_ARCH, nr as u32, args)
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn ordinary_syscalls_pass() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
        ] {
            assert_eq!(verdict(nr, [0; 6]), RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn dangerous_syscalls_are_refused() {
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_open_by_handle_at,
            libc::SYS_io_uring_setup,
        ] {
            assert_eq!(verdict(nr, [0; 6]), EPERM, "syscall {nr}");
        }
    }

    #[test]
    fn new_namespaces_are_refused_but_threads_are_not() {
        let newuser = libc::CLONE_NEWUSER as u32;
        assert_eq!(verdict(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(verdict(libc::SYS_clone, [newuser, 0, 0, 0, 0, 0]), EPERM);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u32;
        assert_eq!(verdict(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            verdict(libc::SYS_unshare, [libc::CLONE_FILES as u32, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn personality_and_tiocsti() {
        assert_eq!(
            verdict(libc::SYS_personality, [0x8, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
        let tiocsti = libc::TIOCSTI as u32;
        assert_eq!(verdict(libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            verdict(libc::SYS_ioctl, [0, libc::TCGETS as u32, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    #[test]
    fn fake_root_pretends_ownership_changes_work() {
        let prog = filter(true, true).unwrap();
        let v = |nr: i64| run(&prog, AUDIT_ARCH, nr as u32, [0; 6]);
        assert_eq!(v(libc::SYS_fchownat), RET_ERRNO);
        assert_eq!(v(libc::SYS_setresuid), RET_ERRNO);
        assert_eq!(v(libc::SYS_keyctl), EPERM);
        assert_eq!(v(libc::SYS_read), RET_ALLOW);
        let plain = filter(true, false).unwrap();
        assert_eq!(
            run(&plain, AUDIT_ARCH, libc::SYS_fchownat as u32, [0; 6]),
            RET_ALLOW
        );
        assert!(filter(false, false).is_none());
    }

    #[test]
    fn foreign_arch_and_x32_are_refused() {
        assert_eq!(run(&default_filter(), 0x4000_0003, 0, [0; 6]), EPERM);
        assert_eq!(verdict(i64::from(X32_SYSCALL_BIT) + 1, [0; 6]), EPERM);
    }
}
