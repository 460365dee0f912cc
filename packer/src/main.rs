//! binctr-pack: turns a container image into one static executable, the binctr stub
//! with the image's root filesystem and config appended (docs/FORMAT.md).
//!
//! `binctr-pack IMAGE -o OUT` packs; `binctr-pack COMMAND ...` runs another command when
//! the first argument names one (see [`COMMANDS`]).
mod image;
mod inspect;
mod output;
mod pack;
mod payload;
mod progress;
mod restub;
mod stub;
mod sys;
mod util;

use argh::{EarlyExit, FromArgs};
use image::{ImageArg, Limits, Platform};
use pack::{Overrides, PackSpec};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// argh reads a lone "-" as an unknown flag; it is passed as this instead (a NUL cannot
/// be part of a real argument).
const STDIN_ARG: &str = "\0-";

/// Pack a container image into one static executable.
#[derive(FromArgs, Debug)]
#[argh(
    note = "IMAGE is told by its content: a root filesystem tar (plain, gzip or zstd; docker
export, podman export), a docker-archive (docker save, podman save, skopeo copy
docker-archive:), an OCI image layout as a directory or a tar (skopeo copy oci: or
oci-archive:, buildah push), a root filesystem directory, or - for standard input:
  podman save IMAGE | binctr-pack - -o NAME

The stub is chosen by the image's CPU: x86_64 for linux/amd64, aarch64 for linux/arm64,
as the image's config says, or for a root filesystem, as its /bin/sh (else most of its
executables) says; --platform overrides.

Each layer of an image is packed as a layer of its own (format 2; a flat tar or a
directory is one layer); --flatten packs one flattened layer (format 1) instead, which
stubs that do not read format 2 run.

The image's Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, Volumes, Labels and
StopSignal are kept; --entrypoint, --cmd, --env, --workdir, --user and --read-only
replace them in the packed file.

Other commands:
  binctr-pack inspect FILE [--json]          show what a packed file holds
  binctr-pack extract FILE -o ROOTFS.tar     write the packed root filesystem as a tar
  binctr-pack restub FILE --stub NEW -o OUT  put a packed image onto another stub
Use `binctr-pack pack IMAGE -o OUT` for an IMAGE named like a command."
)]
struct PackArgs {
    /// the image: an image archive or layout, a root filesystem tar or directory, or -
    #[argh(positional, arg_name = "IMAGE")]
    image: String,
    /// where to write the executable (replaced atomically, mode 0777 less the umask)
    #[argh(option, short = 'o', arg_name = "OUT")]
    output: String,
    /// the most the image may expand to: any one file, the uncompressed layers, the
    /// flattened root filesystem (bytes, or with K, M, G, T; default 64G)
    #[argh(option, arg_name = "SIZE")]
    max_size: Option<String>,
    /// pack onto this stub (a binctr-stub binary, or a packed file whose stub is reused)
    /// instead of the one built into binctr-pack for the image's CPU; it must be for the
    /// image's CPU
    #[argh(option, arg_name = "PATH")]
    stub: Option<String>,
    /// the container's name (hostname, container ids); default: from IMAGE's file name
    #[argh(option, arg_name = "NAME")]
    name: Option<String>,
    /// which image of an archive or layout holding several (a tag, NAME or NAME:TAG)
    #[argh(option, long = "image", arg_name = "NAME[:TAG]")]
    select_image: Option<String>,
    /// which platform of a multi-platform image, and so which stub (linux/amd64 or
    /// linux/arm64; default: the image's own, of several this machine's); for a root
    /// filesystem, its CPU whatever its programs say
    #[argh(option, arg_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// replace the image's entrypoint (and clear its cmd): a JSON array
    /// ('["/bin/sh","-c"]') or one program
    #[argh(option, arg_name = "CMD")]
    entrypoint: Option<String>,
    /// replace the image's cmd: a JSON array ('["-l"]') or one argument
    #[argh(option, arg_name = "ARGS")]
    cmd: Option<String>,
    /// set an environment variable of the image (repeatable)
    #[argh(option, arg_name = "KEY=VALUE")]
    env: Vec<String>,
    /// replace the image's working directory (absolute)
    #[argh(option, arg_name = "DIR")]
    workdir: Option<String>,
    /// replace the image's user (user, uid, user:group or uid:gid)
    #[argh(option, arg_name = "USER")]
    user: Option<String>,
    /// run with a read-only root filesystem unless run with --read-write
    #[argh(switch)]
    read_only: bool,
    /// pack the image flattened into one layer (format 1, which stubs before the layer
    /// store run) instead of one layer per image layer (format 2)
    #[argh(switch)]
    flatten: bool,
}

/// Show what a packed file holds: its footer and config.
#[derive(FromArgs, Debug)]
struct InspectArgs {
    /// the packed file
    #[argh(positional, arg_name = "FILE")]
    file: String,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
}

/// Write the root filesystem of a packed file as a tar, checking its sha256.
#[derive(FromArgs, Debug)]
struct ExtractArgs {
    /// the packed file
    #[argh(positional, arg_name = "FILE")]
    file: String,
    /// where to write the tar; - for standard output
    #[argh(option, short = 'o', arg_name = "OUT")]
    output: String,
}

/// Put the payload and config of a packed file onto another stub, without recompressing.
#[derive(FromArgs, Debug)]
struct RestubArgs {
    /// the packed file
    #[argh(positional, arg_name = "FILE")]
    file: String,
    /// the new stub (a binctr-stub binary, or a packed file whose stub is taken)
    #[argh(option, arg_name = "PATH")]
    stub: String,
    /// where to write the new packed file (replaced atomically, mode 0777 less the umask)
    #[argh(option, short = 'o', arg_name = "OUT")]
    output: String,
}

/// A command: its name as typed (`binctr-pack inspect`) and its arguments.
type Command = fn(&str, &[&str]) -> Result<(), Failure>;

/// The commands `binctr-pack NAME ...` runs; any other first argument is an IMAGE.
const COMMANDS: &[(&str, Command)] = &[
    ("pack", run_pack),
    ("inspect", run_inspect),
    ("extract", run_extract),
    ("restub", run_restub),
];

/// How a command failed: a usage error (exit 2, argh's message) or a runtime one (1).
enum Failure {
    Usage(String),
    Error(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(args) => args,
        Err(arg) => {
            eprintln!(
                "binctr-pack: argument {:?} is not valid UTF-8: rename the file or use a symlink",
                arg
            );
            return ExitCode::from(2);
        }
    };
    let args: Vec<&str> = args
        .iter()
        .map(|a| if a == "-" { STDIN_ARG } else { a.as_str() })
        .collect();
    if matches!(args.first(), Some(&("-V" | "--version"))) {
        return match print(&format!("binctr-pack {}\n", env!("CARGO_PKG_VERSION"))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let result = match COMMANDS.iter().find(|(name, _)| args.first() == Some(name)) {
        Some((name, run)) => run(&format!("binctr-pack {name}"), &args[1..]),
        None => run_pack("binctr-pack", &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(Failure::Error(message)) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("binctr-pack: {message}");
    ExitCode::FAILURE
}

/// Parses `args` for the command `cmd`; `--help` is printed here and ends the command.
fn parse<T: FromArgs>(cmd: &str, args: &[&str]) -> Result<Option<T>, Failure> {
    match T::from_args(&[cmd], args) {
        Ok(parsed) => Ok(Some(parsed)),
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => {
            print(&format!("{output}\n")).map_err(Failure::Error)?;
            Ok(None)
        }
        Err(EarlyExit {
            output,
            status: Err(()),
        }) => Err(Failure::Usage(format!(
            "{}\nRun {cmd} --help for more information.",
            output.trim_end().replace(STDIN_ARG, "-")
        ))),
    }
}

/// Prints to standard output; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!(
            "cannot write to standard output: {}",
            util::os_error(&e)
        )),
        _ => Ok(()),
    }
}

fn run_pack(cmd: &str, args: &[&str]) -> Result<(), Failure> {
    let Some(args) = parse::<PackArgs>(cmd, args)? else {
        return Ok(());
    };
    if args.output == STDIN_ARG {
        return Err(Failure::Usage(format!(
            "binctr-pack: the executable cannot go to standard output: give a file name with -o\nRun {cmd} --help for more information."
        )));
    }
    let usage = |message: String| {
        Failure::Usage(format!(
            "binctr-pack: {message}\nRun {cmd} --help for more information."
        ))
    };
    let (image, reference) = if args.image == STDIN_ARG {
        (ImageArg::Stdin, "-".to_string())
    } else {
        let path = PathBuf::from(&args.image);
        let reference = image::reference_of(&path);
        (ImageArg::Path(path), reference)
    };
    let platform = match &args.platform {
        None => None,
        Some(text) => Some(Platform::parse(text).ok_or_else(|| {
            usage(format!(
                "--platform {text:?}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64"
            ))
        })?),
    };
    let entrypoint = match &args.entrypoint {
        None => None,
        Some(text) => {
            Some(command_words(text).map_err(|why| usage(format!("--entrypoint: {why}")))?)
        }
    };
    let cmd = match &args.cmd {
        None => None,
        Some(text) => Some(command_words(text).map_err(|why| usage(format!("--cmd: {why}")))?),
    };
    let limits = match &args.max_size {
        None => Limits::default(),
        Some(text) => Limits {
            max_size: image::parse_size(text).ok_or_else(|| {
                usage(format!(
                    "--max-size {text:?}: expected a size such as 64G, 500M or 1T (powers of 1024)"
                ))
            })?,
        },
    };
    for var in &args.env {
        if !var.contains('=') || var.starts_with('=') {
            return Err(usage(format!("--env {var:?}: expected KEY=VALUE")));
        }
    }
    if let Some(dir) = &args.workdir {
        if !dir.starts_with('/') {
            return Err(usage(format!(
                "--workdir {dir:?}: the working directory must be an absolute path"
            )));
        }
    }
    let spec = PackSpec {
        image,
        reference,
        out: PathBuf::from(&args.output),
        stub: args.stub.map(PathBuf::from),
        name: args.name,
        select_image: args.select_image.clone(),
        platform,
        limits,
        flatten: args.flatten,
        overrides: Overrides {
            entrypoint,
            cmd,
            env: args.env.clone(),
            working_dir: args.workdir.clone(),
            user: args.user.clone(),
            read_only: args.read_only,
        },
    };
    let packed = pack::pack(&spec).map_err(|e| Failure::Error(e.to_string()))?;
    // A word for the person at the terminal; scripts get silence.
    if io::stderr().is_terminal() {
        eprintln!(
            "packed {} ({} entries) into {}: {} MiB, {}",
            packed.name,
            packed.entries,
            spec.out.display(),
            mib(packed.file_len),
            packed.cpu,
        );
    }
    Ok(())
}

/// `--entrypoint` and `--cmd`: a JSON array of strings, or one word taken as it is.
fn command_words(text: &str) -> Result<Vec<String>, String> {
    if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(text)
            .map_err(|e| format!("{text:?} is not a JSON array of strings ({e})"))
    } else if text.is_empty() {
        Err("empty: give a program, or a JSON array such as '[]'".into())
    } else {
        Ok(vec![text.to_string()])
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}

fn run_inspect(cmd: &str, args: &[&str]) -> Result<(), Failure> {
    let Some(args) = parse::<InspectArgs>(cmd, args)? else {
        return Ok(());
    };
    let packed = inspect::open(Path::new(&args.file)).map_err(|e| Failure::Error(e.to_string()))?;
    inspect::verify_payload(&packed).map_err(|e| Failure::Error(e.to_string()))?;
    print(&inspect::describe(&packed, args.json)).map_err(Failure::Error)
}

fn run_extract(cmd: &str, args: &[&str]) -> Result<(), Failure> {
    let Some(args) = parse::<ExtractArgs>(cmd, args)? else {
        return Ok(());
    };
    let packed = inspect::open(Path::new(&args.file)).map_err(|e| Failure::Error(e.to_string()))?;
    let out = (args.output != STDIN_ARG).then(|| PathBuf::from(&args.output));
    match inspect::extract(packed, out.as_deref()) {
        Err(inspect::InspectError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Failure::Error(e.to_string())),
    }
}

fn run_restub(cmd: &str, args: &[&str]) -> Result<(), Failure> {
    let Some(args) = parse::<RestubArgs>(cmd, args)? else {
        return Ok(());
    };
    if args.output == STDIN_ARG || args.file == STDIN_ARG {
        return Err(Failure::Usage(format!(
            "binctr-pack: restub reads and writes files: give file names\nRun {cmd} --help for more information."
        )));
    }
    restub::restub(
        Path::new(&args.file),
        Path::new(&args.stub),
        Path::new(&args.output),
    )
    .map(drop)
    .map_err(|e| Failure::Error(e.to_string()))
}
