//! Seccomp filters, compiled here to classic BPF (a few dozen instructions, built in
//! microseconds, so nothing is precompiled at pack time and no C library is linked).
//!
//! The default filter refuses what docker's default profile refuses to a container
//! without CAP_SYS_ADMIN: kernel keyrings, bpf, perf, module and kexec loading,
//! open_by_handle_at, mount/pivot_root/setns, new namespaces from inside (clone and
//! unshare with namespace flags; clone3 gets ENOSYS so libc falls back to clone, whose
//! flags a filter can read), odd personalities, and terminal injection (TIOCSTI).
//! It is a deny list: a syscall newer than this list is allowed, where docker's allow
//! list would refuse it. ptrace, process_vm_readv and process_vm_writev are allowed, as
//! docker allows them on Linux 4.8+: they reach only processes of the container's own pid
//! namespace, under the kernel's ptrace access check (MPI's CMA single copy needs them).
//!
//! Each architecture has its own syscall numbers and its own `AUDIT_ARCH`: the numbers
//! are in the table below, one row per syscall, a `-` where it does not exist (a syscall
//! that does not exist cannot be called, so it needs no rule). The filter is built for an
//! [`Arch`] given as a parameter, so the tests check both architectures' programs on
//! either machine; the native column is checked against `libc`, the aarch64 column also
//! against the kernel's `asm-generic/unistd.h`, the table aarch64 uses.

use crate::sys;

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(n: u32) -> u32 {
    16 + 8 * n
}

/// A CPU the stub runs on: its syscall numbers and its `AUDIT_ARCH_*` value.
// The other CPU's variant is made only by the tests.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this stub was built for.
    #[cfg(target_arch = "x86_64")]
    pub const NATIVE: Arch = Arch::X86_64;
    #[cfg(target_arch = "aarch64")]
    pub const NATIVE: Arch = Arch::Aarch64;

    /// `AUDIT_ARCH_X86_64`, `AUDIT_ARCH_AARCH64` (linux/audit.h): EM_* | 64-bit | LE.
    fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
        }
    }
}

/// x32 syscalls on x86_64 carry this bit; they bypass a filter keyed on x86_64 numbers.
/// (aarch64 has no such second table; its 32-bit compat processes carry another
/// AUDIT_ARCH, which the arch check refuses.)
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `nr!(-)`: no such syscall on that architecture.
macro_rules! nr {
    (-) => {
        None
    };
    (($n:literal)) => {
        Some($n)
    };
    ($n:literal) => {
        Some($n)
    };
}

/// The `libc` constant for a syscall of the native column, for the tests; `(N)`: a
/// number `libc` does not define for that architecture.
#[cfg(test)]
macro_rules! from_libc {
    (-, $libc:ident) => {
        None
    };
    (($n:literal), $libc:ident) => {
        None
    };
    ($n:literal, $libc:ident) => {
        Some(libc::$libc as i64)
    };
}

macro_rules! syscalls {
    ($($name:ident $libc:ident $x86_64:tt $aarch64:tt;)*) => {
        /// The syscalls the filters name.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Sys {
            $($name),*
        }

        impl Sys {
            #[cfg(test)]
            const ALL: &'static [Sys] = &[$(Sys::$name),*];

            /// The syscall's number on `arch`; `None` where it does not exist.
            fn number(self, arch: Arch) -> Option<u32> {
                match arch {
                    Arch::X86_64 => match self { $(Sys::$name => nr!($x86_64),)* },
                    Arch::Aarch64 => match self { $(Sys::$name => nr!($aarch64),)* },
                }
            }

            #[cfg(test)]
            fn name(self) -> &'static str {
                match self { $(Sys::$name => stringify!($name),)* }
            }

            /// The number `libc` gives on the machine the tests run on.
            #[cfg(all(test, target_arch = "x86_64"))]
            fn libc_number(self) -> Option<i64> {
                match self { $(Sys::$name => from_libc!($x86_64, $libc),)* }
            }
            #[cfg(all(test, target_arch = "aarch64"))]
            fn libc_number(self) -> Option<i64> {
                match self { $(Sys::$name => from_libc!($aarch64, $libc),)* }
            }
        }
    };
}

syscalls! {
//  name               libc                        x86_64 aarch64
    acct               SYS_acct                    163    89;
    add_key            SYS_add_key                 248    217;
    bpf                SYS_bpf                     321    280;
    clock_adjtime      SYS_clock_adjtime           305    266;
    clock_settime      SYS_clock_settime           227    112;
    settimeofday       SYS_settimeofday            164    170;
    delete_module      SYS_delete_module           176    106;
    finit_module       SYS_finit_module            313    273;
    init_module        SYS_init_module             175    105;
    kcmp               SYS_kcmp                    312    272;
    // arm64 has kexec_file_load since Linux 5.0; libc lacks the constant there.
    kexec_file_load    SYS_kexec_file_load         320    (294);
    kexec_load         SYS_kexec_load              246    104;
    keyctl             SYS_keyctl                  250    219;
    lookup_dcookie     SYS_lookup_dcookie          212    18;
    mount              SYS_mount                   165    40;
    move_mount         SYS_move_mount              429    429;
    open_tree          SYS_open_tree               428    428;
    fsopen             SYS_fsopen                  430    430;
    fsmount            SYS_fsmount                 432    432;
    fsconfig           SYS_fsconfig                431    431;
    fspick             SYS_fspick                  433    433;
    mount_setattr      SYS_mount_setattr           442    442;
    name_to_handle_at  SYS_name_to_handle_at       303    264;
    nfsservctl         SYS_nfsservctl              180    42;
    open_by_handle_at  SYS_open_by_handle_at       304    265;
    perf_event_open    SYS_perf_event_open         298    241;
    pivot_root         SYS_pivot_root              155    41;
    quotactl           SYS_quotactl                179    60;
    reboot             SYS_reboot                  169    142;
    request_key        SYS_request_key             249    218;
    setns              SYS_setns                   308    268;
    swapon             SYS_swapon                  167    224;
    swapoff            SYS_swapoff                 168    225;
    umount2            SYS_umount2                 166    39;
    userfaultfd        SYS_userfaultfd             323    282;
    get_mempolicy      SYS_get_mempolicy           239    236;
    set_mempolicy      SYS_set_mempolicy           238    237;
    mbind              SYS_mbind                   237    235;
    move_pages         SYS_move_pages              279    239;
    io_uring_setup     SYS_io_uring_setup          425    425;
    io_uring_enter     SYS_io_uring_enter          426    426;
    io_uring_register  SYS_io_uring_register       427    427;
    // x86 only: port I/O, and obsolete calls arm64 never had.
    ioperm             SYS_ioperm                  173    -;
    iopl               SYS_iopl                    172    -;
    sysfs              SYS_sysfs                   139    -;
    _sysctl            SYS__sysctl                 156    -;
    uselib             SYS_uselib                  134    -;
    ustat              SYS_ustat                   136    -;
    clone              SYS_clone                   56     220;
    unshare            SYS_unshare                 272    97;
    clone3             SYS_clone3                  435    435;
    personality        SYS_personality             135    92;
    ioctl              SYS_ioctl                   16     29;
    fchown             SYS_fchown                  93     55;
    fchownat           SYS_fchownat                260    54;
    // arm64 has only fchownat and fchown.
    chown              SYS_chown                   92     -;
    lchown             SYS_lchown                  94     -;
    setuid             SYS_setuid                  105    146;
    setgid             SYS_setgid                  106    144;
    setreuid           SYS_setreuid                113    145;
    setregid           SYS_setregid                114    143;
    setresuid          SYS_setresuid               117    147;
    setresgid          SYS_setresgid               119    149;
    setfsuid           SYS_setfsuid                122    151;
    setfsgid           SYS_setfsgid                123    152;
    setgroups          SYS_setgroups               116    159;
}

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
    Errno(Sys, u16),
    /// Return errno when argument `arg` has any bit of `mask` set.
    ErrnoIfAnyBit(Sys, u32, u32, u16),
    /// Return errno when argument `arg` (low 32 bits) equals one of `values`.
    ErrnoIfEquals(Sys, u32, &'static [u32], u16),
    /// Return errno unless argument `arg` (low 32 bits) is one of `values`.
    ErrnoUnless(Sys, u32, &'static [u32], u16),
}

/// Compiles rules (one per syscall) into a program for `arch`: arch check, x32 check on
/// x86_64, then each rule as a block that the syscall number jumps over when it does not
/// match. A rule for a syscall `arch` does not have is left out.
fn compile(arch: Arch, rules: &[Rule]) -> Vec<Insn> {
    let errno = |e: u16| RET_ERRNO | u32::from(e);
    let mut prog = vec![
        insn(LD_ABS, 0, 0, OFF_ARCH),
        insn(JEQ, 1, 0, arch.audit_arch()),
        insn(RET, 0, 0, errno(libc::EPERM as u16)),
        insn(LD_ABS, 0, 0, OFF_NR),
    ];
    if arch == Arch::X86_64 {
        prog.extend([
            insn(JGE, 0, 1, X32_SYSCALL_BIT),
            insn(RET, 0, 0, errno(libc::EPERM as u16)),
        ]);
    }
    for rule in rules {
        let (sys, block) = match *rule {
            Rule::Errno(sys, e) => (sys, vec![insn(RET, 0, 0, errno(e))]),
            Rule::ErrnoIfAnyBit(sys, arg, mask, e) => (
                sys,
                vec![
                    insn(LD_ABS, 0, 0, off_arg(arg)),
                    insn(JSET, 0, 1, mask),
                    insn(RET, 0, 0, errno(e)),
                    insn(RET, 0, 0, RET_ALLOW),
                ],
            ),
            Rule::ErrnoIfEquals(sys, arg, values, e) | Rule::ErrnoUnless(sys, arg, values, e) => {
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
                (sys, block)
            }
        };
        let Some(nr) = sys.number(arch) else {
            continue;
        };
        prog.push(insn(JEQ, 0, block.len() as u8, nr));
        prog.extend(block);
    }
    prog.push(insn(RET, 0, 0, RET_ALLOW));
    prog
}

/// Personalities docker allows: PER_LINUX, UNAME26, PER_LINUX32, LINUX32|UNAME26, query.
const PERSONALITIES: &[u32] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
/// TIOCSTI, TIOCLINUX: the same numbers on x86_64 and aarch64 (asm-generic/ioctls.h).
const TERMINAL_INJECTION: &[u32] = &[0x5412, 0x541C];

/// What docker's profile allows a container that holds CAP_SYS_ADMIN (`--cap-add
/// SYS_ADMIN`, `--privileged` drops the filter altogether): mounts, namespaces, bpf,
/// perf, quotas, handles. The capability still decides; the filter no longer refuses.
const SYS_ADMIN_ALLOWS: [Sys; 16] = [
    Sys::bpf,
    Sys::lookup_dcookie,
    Sys::mount,
    Sys::move_mount,
    Sys::open_tree,
    Sys::fsopen,
    Sys::fsmount,
    Sys::fsconfig,
    Sys::fspick,
    Sys::mount_setattr,
    Sys::name_to_handle_at,
    Sys::perf_event_open,
    Sys::pivot_root,
    Sys::quotactl,
    Sys::setns,
    Sys::umount2,
];

fn default_rules(sys_admin: bool) -> Vec<Rule> {
    use Sys::*;
    let eperm = libc::EPERM as u16;
    let denied = [
        acct,
        add_key,
        bpf,
        clock_adjtime,
        clock_settime,
        settimeofday,
        delete_module,
        finit_module,
        init_module,
        kcmp,
        kexec_file_load,
        kexec_load,
        keyctl,
        lookup_dcookie,
        mount,
        move_mount,
        open_tree,
        fsopen,
        fsmount,
        fsconfig,
        fspick,
        mount_setattr,
        name_to_handle_at,
        nfsservctl,
        open_by_handle_at,
        perf_event_open,
        pivot_root,
        quotactl,
        reboot,
        request_key,
        setns,
        swapon,
        swapoff,
        umount2,
        userfaultfd,
        get_mempolicy,
        set_mempolicy,
        mbind,
        move_pages,
        // docker's default profile refuses io_uring: it bypasses this very filter
        // (its operations are not system calls) and has been a rich source of bugs.
        io_uring_setup,
        io_uring_enter,
        io_uring_register,
        // x86_64 only (no number on aarch64, so no rule there).
        ioperm,
        iopl,
        sysfs,
        _sysctl,
        uselib,
        ustat,
    ];
    let mut rules: Vec<Rule> = denied
        .into_iter()
        .filter(|sys| !(sys_admin && SYS_ADMIN_ALLOWS.contains(sys)))
        .map(|sys| Rule::Errno(sys, eperm))
        .collect();
    if !sys_admin {
        rules.extend([
            Rule::ErrnoIfAnyBit(clone, 0, NAMESPACE_FLAGS, eperm),
            Rule::ErrnoIfAnyBit(unshare, 0, NAMESPACE_FLAGS, eperm),
            Rule::Errno(clone3, libc::ENOSYS as u16),
        ]);
    }
    rules.extend([
        Rule::ErrnoUnless(personality, 0, PERSONALITIES, eperm),
        Rule::ErrnoIfEquals(ioctl, 1, TERMINAL_INJECTION, eperm),
    ]);
    rules
}

/// charliecloud's answer to a single id mapping: ownership and identity changes
/// "succeed" without effect (they would fail with EINVAL, breaking package managers and
/// servers that drop privileges).
fn fake_root_rules() -> Vec<Rule> {
    use Sys::*;
    [
        fchown, fchownat, chown, lchown, setuid, setgid, setreuid, setregid, setresuid, setresgid,
        setfsuid, setfsgid, setgroups,
    ]
    .into_iter()
    .map(|sys| Rule::Errno(sys, 0))
    .collect()
}

/// Which filter a command gets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Want {
    /// docker's default rules (off with seccomp=unconfined).
    pub default: bool,
    /// The command holds CAP_SYS_ADMIN: docker's rules for it.
    pub sys_admin: bool,
    /// chown and setuid succeed without effect (a single mapping).
    pub fake_root: bool,
}

/// The program for a container on this machine: docker's defaults and/or the fake-root
/// rules; None when neither is wanted.
pub fn filter(want: Want) -> Option<Vec<Insn>> {
    program(Arch::NATIVE, want)
}

/// [`filter`] for any architecture.
pub fn program(arch: Arch, want: Want) -> Option<Vec<Insn>> {
    let Want {
        default,
        sys_admin,
        fake_root,
    } = want;
    let mut rules = Vec::new();
    if default {
        rules.extend(default_rules(sys_admin));
    }
    if fake_root {
        rules.extend(fake_root_rules());
    }
    (!rules.is_empty()).then(|| compile(arch, &rules))
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
    use Sys::*;

    const BOTH: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

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

    fn default_filter(arch: Arch) -> Vec<Insn> {
        program(arch, want(true, false)).unwrap()
    }

    fn want(default: bool, fake_root: bool) -> Want {
        Want {
            default,
            sys_admin: false,
            fake_root,
        }
    }

    /// With CAP_SYS_ADMIN, as in docker's profile: mounts, setns, unshare and clone of
    /// namespaces, clone3 pass the filter (the capability decides); keyrings, modules,
    /// kexec, io_uring and TIOCSTI stay refused.
    #[test]
    fn sys_admin_allows_mounts_and_namespaces_and_nothing_else() {
        for arch in BOTH {
            let with = Want {
                default: true,
                sys_admin: true,
                fake_root: false,
            };
            let prog = program(arch, with).unwrap();
            let newns = libc::CLONE_NEWNS as u32;
            for sys in [mount, umount2, setns, pivot_root, fsopen, bpf] {
                assert_eq!(
                    verdict_of(&prog, arch, sys, [0; 6]),
                    RET_ALLOW,
                    "{sys:?} {arch:?}"
                );
                assert_eq!(
                    verdict(arch, sys, [0; 6]),
                    EPERM,
                    "{sys:?} {arch:?} without"
                );
            }
            for sys in [unshare, clone] {
                assert_eq!(
                    verdict_of(&prog, arch, sys, [newns, 0, 0, 0, 0, 0]),
                    RET_ALLOW
                );
                assert_eq!(verdict(arch, sys, [newns, 0, 0, 0, 0, 0]), EPERM);
            }
            assert_eq!(verdict_of(&prog, arch, clone3, [0; 6]), RET_ALLOW);
            for sys in [keyctl, init_module, kexec_load, io_uring_setup] {
                assert_eq!(
                    verdict_of(&prog, arch, sys, [0; 6]),
                    EPERM,
                    "{sys:?} {arch:?}"
                );
            }
            let tiocsti = TERMINAL_INJECTION[0];
            assert_eq!(
                verdict_of(&prog, arch, ioctl, [0, tiocsti, 0, 0, 0, 0]),
                EPERM
            );
        }
    }

    /// What `prog` (built for `arch`) answers a process of `arch` calling `sys`.
    fn verdict_of(prog: &[Insn], arch: Arch, sys: Sys, args: [u32; 6]) -> u32 {
        let nr = sys
            .number(arch)
            .unwrap_or_else(|| panic!("{sys:?} on {arch:?}"));
        run(prog, arch.audit_arch(), nr, args)
    }

    fn verdict(arch: Arch, sys: Sys, args: [u32; 6]) -> u32 {
        verdict_of(&default_filter(arch), arch, sys, args)
    }

    /// A syscall number of `arch` that the table does not name.
    fn raw_verdict(arch: Arch, nr: u32) -> u32 {
        run(&default_filter(arch), arch.audit_arch(), nr, [0; 6])
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn the_native_column_is_libcs() {
        for &sys in Sys::ALL {
            if let Some(n) = sys.libc_number() {
                assert_eq!(
                    sys.number(Arch::NATIVE).map(i64::from),
                    Some(n),
                    "{}",
                    sys.name()
                );
            }
        }
        assert_eq!(
            TERMINAL_INJECTION,
            [libc::TIOCSTI as u32, libc::TIOCLINUX as u32]
        );
    }

    /// aarch64 takes its numbers from the kernel's generic table: every number of the
    /// aarch64 column, and every `-`, is checked against the header (linux-libc-dev,
    /// which libc6-dev pulls in; test.sh installs it).
    #[test]
    fn the_aarch64_column_is_the_kernels_generic_table() {
        let path = "/usr/include/asm-generic/unistd.h";
        let header = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}: install linux-libc-dev"));
        let mut generic = std::collections::HashMap::new();
        for line in header.lines() {
            let mut words = line.split_whitespace();
            if let (Some("#define"), Some(name), Some(n)) =
                (words.next(), words.next(), words.next())
            {
                if let (Some(name), Ok(n)) = (name.strip_prefix("__NR_"), n.parse::<u32>()) {
                    generic.insert(name.to_string(), n);
                }
            }
        }
        assert!(
            generic.len() > 250,
            "{path} has only {} syscalls",
            generic.len()
        );
        for &sys in Sys::ALL {
            // Not in the generic table: these are x86 only.
            let expected = generic.get(sys.name()).copied();
            assert_eq!(sys.number(Arch::Aarch64), expected, "{}", sys.name());
        }
    }

    #[test]
    fn ordinary_syscalls_pass() {
        // read, write, openat, execve: not in the table.
        for (arch, numbers) in [
            (Arch::X86_64, [0, 1, 257, 59]),
            (Arch::Aarch64, [63, 64, 56, 221]),
        ] {
            for nr in numbers {
                assert_eq!(raw_verdict(arch, nr), RET_ALLOW, "{arch:?} syscall {nr}");
            }
        }
    }

    #[test]
    fn dangerous_syscalls_are_refused() {
        for arch in BOTH {
            for sys in [
                keyctl,
                bpf,
                kexec_load,
                kexec_file_load,
                open_by_handle_at,
                io_uring_setup,
                mount,
                setns,
            ] {
                assert_eq!(verdict(arch, sys, [0; 6]), EPERM, "{sys:?} on {arch:?}");
            }
        }
        for sys in [ioperm, iopl, ustat] {
            assert_eq!(verdict(Arch::X86_64, sys, [0; 6]), EPERM, "{sys:?}");
        }
    }

    /// A syscall one CPU lacks is not named in the other's program, whose number may be
    /// another syscall there: x86_64's iopl (172) is aarch64's getpid.
    #[test]
    fn x86_only_syscalls_leave_the_same_numbers_alone_on_aarch64() {
        let getpid_on_aarch64 = 172;
        assert_eq!(iopl.number(Arch::X86_64), Some(getpid_on_aarch64));
        assert_eq!(iopl.number(Arch::Aarch64), None);
        assert_eq!(raw_verdict(Arch::Aarch64, getpid_on_aarch64), RET_ALLOW);
        // And aarch64's mount (40) is x86_64's sendfile.
        assert_eq!(raw_verdict(Arch::X86_64, 40), RET_ALLOW);
        assert_eq!(raw_verdict(Arch::Aarch64, 40), EPERM);
    }

    #[test]
    fn new_namespaces_are_refused_but_threads_are_not() {
        let newuser = libc::CLONE_NEWUSER as u32;
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u32;
        for arch in BOTH {
            assert_eq!(verdict(arch, unshare, [newuser, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(verdict(arch, clone, [newuser, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(verdict(arch, clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
            assert_eq!(
                verdict(arch, unshare, [libc::CLONE_FILES as u32, 0, 0, 0, 0, 0]),
                RET_ALLOW
            );
            assert_eq!(
                verdict(arch, clone3, [0; 6]),
                RET_ERRNO | libc::ENOSYS as u32
            );
        }
    }

    #[test]
    fn personality_and_tiocsti() {
        for arch in BOTH {
            assert_eq!(verdict(arch, personality, [0x8, 0, 0, 0, 0, 0]), RET_ALLOW);
            assert_eq!(
                verdict(arch, personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
                RET_ALLOW
            );
            assert_eq!(
                verdict(arch, personality, [0x0040_0000, 0, 0, 0, 0, 0]),
                EPERM
            );
            let tiocsti = libc::TIOCSTI as u32;
            assert_eq!(verdict(arch, ioctl, [0, tiocsti, 0, 0, 0, 0]), EPERM);
            assert_eq!(
                verdict(arch, ioctl, [0, libc::TCGETS as u32, 0, 0, 0, 0]),
                RET_ALLOW
            );
        }
    }

    #[test]
    fn fake_root_pretends_ownership_changes_work() {
        for arch in BOTH {
            let prog = program(arch, want(true, true)).unwrap();
            let v = |sys: Sys| verdict_of(&prog, arch, sys, [0; 6]);
            assert_eq!(v(fchownat), RET_ERRNO);
            assert_eq!(v(setresuid), RET_ERRNO);
            assert_eq!(v(keyctl), EPERM);
            let plain = program(arch, want(true, false)).unwrap();
            assert_eq!(verdict_of(&plain, arch, fchownat, [0; 6]), RET_ALLOW);
            assert!(program(arch, want(false, false)).is_none());
        }
        let prog = program(Arch::X86_64, want(false, true)).unwrap();
        assert_eq!(verdict_of(&prog, Arch::X86_64, lchown, [0; 6]), RET_ERRNO);
    }

    #[test]
    fn foreign_arch_and_x32_are_refused() {
        for arch in BOTH {
            // i386's AUDIT_ARCH, and the other 64-bit CPU's.
            assert_eq!(run(&default_filter(arch), 0x4000_0003, 0, [0; 6]), EPERM);
            let other = BOTH.into_iter().find(|&a| a != arch).unwrap();
            assert_eq!(
                run(&default_filter(arch), other.audit_arch(), 63, [0; 6]),
                EPERM
            );
        }
        assert_eq!(raw_verdict(Arch::X86_64, X32_SYSCALL_BIT + 1), EPERM);
        // aarch64 has no x32: the check is not in its program.
        assert!(!default_filter(Arch::Aarch64)
            .iter()
            .any(|i| i.k == X32_SYSCALL_BIT));
    }
}
