//! `binctr-pack IMAGE -o OUT`: stub, payload, config, footer, in one pass over the image,
//! written atomically.
use crate::image::{self, ImageArg, ImageError, Limits, Platform, Selection, Stats};
use crate::output::{Output, OutputError};
use crate::payload::{Payload, PayloadWriter};
use crate::progress::Progress;
use crate::stub::{self, Cpu, Stub, StubError};
use crate::sys;
use crate::util::{shown, BUF_SIZE};
use binctr_format::{
    Env, Footer, ImageConfig, Sha256Digest, CONFIG_VERSION, FLAT_CONFIG_VERSION,
    FLAT_FORMAT_VERSION, FORMAT_VERSION, MAX_LAYERS,
};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// What to pack, resolved from the command line.
#[derive(Clone, Debug)]
pub struct PackSpec {
    pub image: ImageArg,
    /// IMAGE exactly as typed, recorded as the config's `reference`.
    pub reference: String,
    pub out: PathBuf,
    pub stub: Option<PathBuf>,
    pub name: Option<String>,
    /// `--image NAME[:TAG]`: which image of an archive or index.
    pub select_image: Option<String>,
    /// `--platform`: which platform of a multi-platform index, and so which stub; for a
    /// root filesystem, its CPU whatever its programs say.
    pub platform: Option<Platform>,
    /// `--max-size` and the other caps on what the image may make the packer do.
    pub limits: Limits,
    /// `--flatten`: one flattened layer, format 1, which every stub runs.
    pub flatten: bool,
    pub overrides: Overrides,
}

/// Pack-time settings that replace the image's own, stored in the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces the image's Entrypoint, and clears its Cmd unless `cmd` is given too
    /// (as `docker run --entrypoint` does).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE`: replaces the image's KEY in place, or is appended.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub read_only: bool,
}

impl Overrides {
    pub fn apply(&self, config: &mut ImageConfig) {
        if let Some(entrypoint) = &self.entrypoint {
            config.entrypoint = entrypoint.clone();
            config.cmd.clear();
        }
        if let Some(cmd) = &self.cmd {
            config.cmd = cmd.clone();
        }
        if !self.env.is_empty() {
            config.env = merge_env(std::mem::take(&mut config.env), &self.env);
        }
        if let Some(dir) = &self.working_dir {
            config.working_dir = dir.clone();
        }
        if let Some(user) = &self.user {
            config.user = user.clone();
        }
        if self.read_only {
            config.read_only = true;
        }
    }
}

/// The image's env with each `KEY=VALUE` of `overrides` replacing the first entry of its
/// KEY in place, or appended. The image's own entries stay as they are, duplicates too.
fn merge_env(image: Vec<String>, overrides: &[String]) -> Vec<String> {
    let mut env = Env::from_entries(image.into_iter().map(String::into_bytes).collect());
    env.extend(overrides);
    env.into_entries()
        .into_iter()
        // Every entry came from a String.
        .map(|e| {
            String::from_utf8(e)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .collect()
}

/// What was written, for the summary line.
#[derive(Debug)]
pub struct Packed {
    pub name: String,
    pub cpu: Cpu,
    pub file_len: u64,
    pub entries: u64,
}

#[derive(Debug)]
pub enum PackError {
    Stub(StubError),
    Image(ImageError),
    Output(OutputError),
    /// The spool of a payload whose stub is chosen after it is written.
    Spool(io::Error),
    /// `--stub` is for another CPU than the image: `found` says what the image is.
    StubMismatch {
        stub: PathBuf,
        cpu: Cpu,
        image: String,
        found: String,
    },
    /// `--platform` and `--stub` disagree.
    PlatformNotStub {
        platform: Platform,
        stub: PathBuf,
        cpu: Cpu,
    },
    /// An image for a CPU binctr has no stub for.
    NoStubFor {
        image: String,
        platform: Platform,
        from: String,
    },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Stub(e) => e.fmt(f),
            PackError::Image(e) => e.fmt(f),
            PackError::Output(e) => e.fmt(f),
            PackError::Spool(e) => ImageError::Spool(io::Error::new(e.kind(), e.to_string())).fmt(f),
            PackError::StubMismatch {
                stub,
                cpu,
                image,
                found,
            } => write!(
                f,
                "--stub {} is an {cpu} stub, but {} {found}: leave out --stub to pack onto the built-in stub for the image's CPU",
                stub.display(),
                shown(image),
            ),
            PackError::PlatformNotStub { platform, stub, cpu } => write!(
                f,
                "--platform {platform} does not run on --stub {}, an {cpu} stub: use --platform {} or another stub",
                stub.display(),
                cpu.platform(),
            ),
            PackError::NoStubFor { image, platform, from } => write!(
                f,
                "{} is for {} ({from}): binctr has stubs for {} only",
                shown(image),
                shown(&platform.to_string()),
                Cpu::ALL.map(|c| c.platform().to_string()).join(" and "),
            ),
        }
    }
}

impl std::error::Error for PackError {}

/// Which stub, as far as it is known before the payload is written.
enum StubChoice {
    /// Known now; `check`: refuse it at the end if the root filesystem's programs are
    /// for another CPU (a `--stub` given for a flat root filesystem, no `--platform`).
    Now { stub: Stub, check: bool },
    /// A root filesystem with nothing said about its CPU: its programs tell, so the
    /// payload is written aside first and the stub put in front of it after.
    Later,
}

pub fn pack(spec: &PackSpec) -> Result<Packed, PackError> {
    let given = match &spec.stub {
        Some(path) => Some((path, stub::load(Some(path)).map_err(PackError::Stub)?)),
        None => None,
    };
    // The platform the image must be for: --platform, else the --stub's.
    let wanted = match (&spec.platform, &given) {
        (Some(platform), _) => {
            let cpu = Cpu::of_platform(platform).ok_or_else(|| PackError::NoStubFor {
                image: spec.image.to_string(),
                platform: platform.clone(),
                from: "--platform".into(),
            })?;
            if let Some((path, stub)) = &given {
                if stub.cpu != cpu {
                    return Err(PackError::PlatformNotStub {
                        platform: platform.clone(),
                        stub: path.to_path_buf(),
                        cpu: stub.cpu,
                    });
                }
            }
            Some(platform.clone())
        }
        (None, Some((_, stub))) => Some(stub.cpu.platform()),
        (None, None) => None,
    };
    let selection = Selection {
        image: spec.select_image.clone(),
        platform: wanted,
        preferred: Cpu::native().platform(),
    };
    let progress = Progress::new(image::input_size(&spec.image));
    let input = image::open(&spec.image, &selection, &spec.limits, &progress).map_err(|e| {
        match (e, &given) {
            // The --stub's CPU decided what to look for: say that, not only the platform.
            (
                ImageError::NoPlatform {
                    image, available, ..
                },
                Some((path, stub)),
            ) if spec.platform.is_none() => PackError::StubMismatch {
                stub: path.to_path_buf(),
                cpu: stub.cpu,
                image,
                found: format!("is for {}", available.join(", ")),
            },
            (e, _) => PackError::Image(e),
        }
    })?;
    progress.set_total(input.total);
    let choice = match given {
        Some((_, stub)) => StubChoice::Now {
            check: input.meta.is_none() && spec.platform.is_none(),
            stub,
        },
        None => {
            let said = spec
                .platform
                .clone()
                .map(|p| (p, "--platform"))
                .or_else(|| Some((input.meta.as_ref()?.platform.clone()?, "its config")));
            match said {
                Some((platform, from)) => StubChoice::Now {
                    stub: embedded_for(&spec.image, &platform, from)?,
                    check: false,
                },
                // An image whose config names no CPU: this machine's.
                None if input.meta.is_some() => StubChoice::Now {
                    stub: stub::embedded(Cpu::native()).map_err(PackError::Stub)?,
                    check: false,
                },
                None => StubChoice::Later,
            }
        }
    };
    let name = image::sanitize_name(
        &spec
            .name
            .clone()
            .unwrap_or_else(|| image::default_name(&spec.image)),
    );
    let mut config = ImageConfig::new(&name);
    config.reference = spec.reference.clone();
    if let Some(meta) = &input.meta {
        meta.apply(&mut config);
    }
    config.packer_version = env!("CARGO_PKG_VERSION").to_string();
    spec.overrides.apply(&mut config);
    let layers = input.layer_count();
    if !spec.flatten && layers > MAX_LAYERS {
        eprintln!(
            "binctr-pack: {} has {layers} layers, more than the {MAX_LAYERS} a packed file stacks: layers {MAX_LAYERS} to {layers} are squashed into one",
            shown(&spec.image.to_string())
        );
    }

    // An executable, as cc makes one: 0777 less the umask.
    let output = Output::create(&spec.out, 0o777).map_err(PackError::Output)?;
    let write_error = |e| PackError::Output(output.write_error(e));
    let mut out = BufWriter::with_capacity(BUF_SIZE, output.file());
    let (stub, payload_info, stats) = match choice {
        StubChoice::Now { stub, check } => {
            out.write_all(&stub.bytes).map_err(write_error)?;
            let (info, stats) =
                write_payload(input, spec.flatten, &progress, &mut out, &write_error)?;
            if let (true, Some(detected), Some(path)) = (check, &stats.detected, &spec.stub) {
                if Cpu::of_platform(&detected.platform) != Some(stub.cpu) {
                    return Err(PackError::StubMismatch {
                        stub: path.clone(),
                        cpu: stub.cpu,
                        image: spec.image.to_string(),
                        found: format!("is for {} ({})", detected.platform, detected.from),
                    });
                }
            }
            (stub, info, stats)
        }
        StubChoice::Later => {
            // Most images are for this machine: its stub goes first and the payload
            // streams behind it; only an image found to be for another CPU has its
            // payload moved behind that CPU's stub (through a spool) afterwards.
            let native = stub::embedded(Cpu::native()).map_err(PackError::Stub)?;
            let (native_cpu, native_len) = (native.cpu, native.bytes.len() as u64);
            out.write_all(&native.bytes).map_err(write_error)?;
            let (info, stats) =
                write_payload(input, spec.flatten, &progress, &mut out, &write_error)?;
            let stub = match &stats.detected {
                Some(d) => embedded_for(&spec.image, &d.platform, &d.from)?,
                None => native,
            };
            if stub.cpu != native_cpu {
                out.flush().map_err(write_error)?;
                move_payload(out.get_mut(), native_len, info.len, &stub.bytes)
                    .map_err(PackError::Spool)?;
            }
            (stub, info, stats)
        }
    };
    let version = if spec.flatten {
        config.version = FLAT_CONFIG_VERSION;
        FLAT_FORMAT_VERSION
    } else {
        config.version = CONFIG_VERSION;
        config.layers = payload_info.layers.clone();
        FORMAT_VERSION
    };
    let config = config.to_json();
    let footer = Footer {
        version,
        flags: 0,
        payload_offset: stub.bytes.len() as u64,
        payload_len: payload_info.len,
        config_len: config.len() as u64,
        payload_sha256: payload_info.sha256,
        config_sha256: Sha256Digest::of(&config),
    };
    out.write_all(&config).map_err(write_error)?;
    out.write_all(&footer.encode()).map_err(write_error)?;
    out.flush().map_err(write_error)?;
    drop(out);
    progress.finish();
    output.commit().map_err(PackError::Output)?;
    Ok(Packed {
        name,
        cpu: stub.cpu,
        file_len: footer.file_len().unwrap_or(0),
        entries: stats.entries,
    })
}

/// Puts the payload written at `at` (`len` bytes) behind `stub` instead, in the same
/// file: through a spool, as the two stubs differ in length. The file is left positioned
/// at the payload's end.
fn move_payload(file: &mut &File, at: u64, len: u64, stub: &[u8]) -> io::Result<()> {
    let spool = sys::anonymous_temp_file()?;
    file.seek(SeekFrom::Start(at))?;
    let mut spooled = &spool;
    if io::copy(&mut (&mut *file).take(len), &mut spooled)? != len {
        return Err(io::Error::other("the payload changed size"));
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(stub)?;
    spooled.seek(SeekFrom::Start(0))?;
    if io::copy(&mut spooled, file)? != len {
        return Err(io::Error::other("the spooled payload changed size"));
    }
    Ok(())
}

/// The built-in stub for an image of `platform` (`from` says who said so).
fn embedded_for(image: &ImageArg, platform: &Platform, from: &str) -> Result<Stub, PackError> {
    let cpu = Cpu::of_platform(platform).ok_or_else(|| PackError::NoStubFor {
        image: image.to_string(),
        platform: platform.clone(),
        from: from.to_string(),
    })?;
    stub::embedded(cpu).map_err(PackError::Stub)
}

/// The image as the payload, into `out`: its layers as they are (format 2), or one
/// flattened tree (`flatten`, format 1).
fn write_payload<W: Write>(
    input: image::Input<'_>,
    flatten: bool,
    progress: &Progress,
    out: W,
    write_error: &dyn Fn(io::Error) -> PackError,
) -> Result<(Payload, Stats), PackError> {
    let (mut payload, written);
    if flatten {
        payload = PayloadWriter::new(out);
        written = input.write_tar(progress, &mut payload);
    } else {
        payload = PayloadWriter::layered(out, input.layer_count() == 1);
        written = input.write_layers(progress, &mut payload);
    }
    let stats = written.map_err(|e| match e {
        ImageError::Write(e) => write_error(e),
        e => PackError::Image(e),
    })?;
    let (_, info) = payload.finish().map_err(write_error)?;
    Ok((info, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect;
    use crate::stub::tests::{fake_stub, fake_stub_for};
    use crate::util::tests::TempDir;
    use binctr_format::{CONFIG_VERSION, FOOTER_LEN};
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    struct Fixture {
        dir: TempDir,
        stub: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = TempDir::new();
            let stub = dir.path().join("stub");
            fs::write(&stub, fake_stub()).unwrap();
            Fixture { dir, stub }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn spec(&self, image: &Path, out: &str) -> PackSpec {
            PackSpec {
                image: ImageArg::Path(image.to_path_buf()),
                reference: crate::image::reference_of(image),
                out: self.path(out),
                stub: Some(self.stub.clone()),
                name: None,
                select_image: None,
                platform: None,
                limits: Limits::default(),
                flatten: false,
                overrides: Overrides::default(),
            }
        }

        /// The names in the directory, less the fixture's own files.
        fn leftovers(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !["stub", "image.tar", "image.tar.gz", "rootfs", "junk"].contains(&n.as_str())
                })
                .collect();
            names.sort();
            names
        }
    }

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            match link {
                Some(link) => b.append_link(&mut h, path, link).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
        add("bin/", tar::EntryType::Directory, b"", None);
        add(
            "bin/busybox",
            tar::EntryType::Regular,
            &[0x42; 100_000],
            None,
        );
        add("bin/sh", tar::EntryType::Symlink, b"", Some("busybox"));
        add("etc/", tar::EntryType::Directory, b"", None);
        add("etc/hostname", tar::EntryType::Regular, b"box\n", None);
        let long = format!("usr/share/{}/file", "x".repeat(200));
        add(&long, tar::EntryType::Regular, b"long", None);
        b.into_inner().unwrap()
    }

    /// Reads a packed file back the way the stub does: footer, config, payload.
    fn read_back(path: &Path) -> (inspect::Packed, Vec<(String, Vec<u8>)>) {
        let packed = inspect::open(path).unwrap();
        let bytes = fs::read(path).unwrap();
        let f = &packed.footer;
        let payload = &bytes[f.payload_offset as usize..f.config_offset() as usize];
        assert_eq!(Sha256Digest::of(payload), f.payload_sha256);
        let mut tar_bytes = Vec::new();
        lz4_flex::frame::FrameDecoder::new(payload)
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), data)
            })
            .collect();
        (packed, entries)
    }

    fn entries_of(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), data)
            })
            .collect()
    }

    #[test]
    fn env_overrides_replace_in_place_or_append() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut config = ImageConfig::new("x");
        config.env = strings(&["PATH=/bin", "A=1", "A=2", "B"]);
        let overrides = Overrides {
            env: strings(&["A=3", "C=x=y", "PATH=/usr/bin", "B=4", "C=z"]),
            ..Overrides::default()
        };
        overrides.apply(&mut config);
        assert_eq!(
            config.env,
            strings(&["PATH=/usr/bin", "A=3", "A=2", "B=4", "C=z"])
        );
        // No overrides: the image's env as it is.
        let mut same = ImageConfig::new("x");
        same.env = strings(&["A=1", "A=2"]);
        Overrides::default().apply(&mut same);
        assert_eq!(same.env, strings(&["A=1", "A=2"]));
    }

    #[test]
    fn packs_a_tar_deterministically() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, sample_tar()).unwrap();
        let packed = pack(&fx.spec(&image, "one")).unwrap();
        assert_eq!(packed.name, "image");
        assert_eq!(packed.entries, 6);
        pack(&fx.spec(&image, "two")).unwrap();
        let one = fs::read(fx.path("one")).unwrap();
        assert_eq!(one, fs::read(fx.path("two")).unwrap());
        assert_eq!(one.len() as u64, packed.file_len);
        assert!(one.starts_with(&fake_stub()));
        let mode = 0o777 & !crate::output::umask();
        assert_eq!(fs::metadata(fx.path("one")).unwrap().mode() & 0o7777, mode);
        assert_eq!(fx.leftovers(), ["one", "two"]);
    }

    #[test]
    fn flatten_writes_format_1_and_the_default_format_2() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, sample_tar()).unwrap();
        let mut spec = fx.spec(&image, "flat");
        spec.flatten = true;
        pack(&spec).unwrap();
        let (packed, entries) = read_back(&fx.path("flat"));
        assert_eq!(packed.footer.version, FLAT_FORMAT_VERSION);
        assert_eq!(packed.config.version, FLAT_CONFIG_VERSION);
        assert!(packed.config.layers.is_empty());
        assert_eq!(entries, entries_of(&sample_tar()));
        pack(&fx.spec(&image, "layered")).unwrap();
        let (packed, entries) = read_back(&fx.path("layered"));
        assert_eq!(packed.footer.version, FORMAT_VERSION);
        assert_eq!(packed.config.version, CONFIG_VERSION);
        // A flat tar is one layer, passed through: its digest is the tar's.
        let layer = &packed.config.layers[..];
        assert_eq!(layer.len(), 1);
        assert_eq!(layer[0].digest, Sha256Digest::of(&sample_tar()).to_string());
        assert_eq!(layer[0].size, sample_tar().len() as u64);
        assert_eq!(layer[0].length, packed.footer.payload_len);
        assert_eq!(layer[0].sha256, packed.footer.payload_sha256.hex());
        assert_eq!(entries, entries_of(&sample_tar()));
        // The same tar in one frame; only format 1's frame carries lz4's content
        // checksum (FLG bit 2): a layer's sha256 covers its frame.
        let payload = |name: &str| {
            let bytes = fs::read(fx.path(name)).unwrap();
            let packed = inspect::open(&fx.path(name)).unwrap();
            let f = packed.footer;
            bytes[f.payload_offset as usize..f.config_offset() as usize].to_vec()
        };
        let (flat, layered) = (payload("flat"), payload("layered"));
        assert_eq!(flat[4] & 0x04, 0x04, "format 1: content checksum");
        assert_eq!(layered[4] & 0x04, 0, "format 2: no content checksum");
        let tar = |frame: &[u8]| {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut lz4_flex::frame::FrameDecoder::new(frame), &mut out)
                .unwrap();
            out
        };
        assert_eq!(tar(&flat), sample_tar());
        assert_eq!(tar(&layered), sample_tar());
    }

    #[test]
    fn footer_config_and_payload_read_back() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, sample_tar()).unwrap();
        let mut spec = fx.spec(&image, "out");
        spec.name = Some("My App".into());
        pack(&spec).unwrap();
        let (packed, entries) = read_back(&fx.path("out"));
        let f = &packed.footer;
        assert_eq!(f.version, FORMAT_VERSION);
        assert_eq!(f.flags, 0);
        assert_eq!(f.payload_offset, fake_stub().len() as u64);
        assert_eq!(
            f.file_len().unwrap(),
            fs::metadata(fx.path("out")).unwrap().len()
        );
        let c = &packed.config;
        assert_eq!(c.version, CONFIG_VERSION);
        assert_eq!(c.name, "my-app");
        assert_eq!(c.reference, "image.tar");
        assert_eq!(c.packer_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(entries, entries_of(&sample_tar()));
        // The tail really is the footer.
        let bytes = fs::read(fx.path("out")).unwrap();
        assert_eq!(&bytes[bytes.len() - FOOTER_LEN..], &f.encode());
    }

    #[test]
    fn gzip_input_is_detected_by_content() {
        let fx = Fixture::new();
        // A gzip file with a name that says nothing, and a plain tar named .gz.
        let gz = fx.path("junk");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&sample_tar()).unwrap();
        fs::write(&gz, enc.finish().unwrap()).unwrap();
        let plain = fx.path("image.tar.gz");
        fs::write(&plain, sample_tar()).unwrap();
        pack(&fx.spec(&gz, "from-gz")).unwrap();
        pack(&fx.spec(&plain, "from-plain")).unwrap();
        let (_, a) = read_back(&fx.path("from-gz"));
        let (packed, b) = read_back(&fx.path("from-plain"));
        assert_eq!(a, b);
        assert_eq!(a, entries_of(&sample_tar()));
        assert_eq!(packed.config.name, "image");
    }

    #[test]
    fn directory_input_keeps_links() {
        let fx = Fixture::new();
        let root = fx.path("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/busybox"), b"bb").unwrap();
        fs::hard_link(root.join("bin/busybox"), root.join("bin/true")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        pack(&fx.spec(&root, "out")).unwrap();
        pack(&fx.spec(&root, "again")).unwrap();
        assert_eq!(
            fs::read(fx.path("out")).unwrap(),
            fs::read(fx.path("again")).unwrap()
        );
        let packed = inspect::open(&fx.path("out")).unwrap();
        assert_eq!(packed.config.name, "rootfs");
        let mut tar_bytes = Vec::new();
        let dest = fx.path("rootfs.tar");
        inspect::extract(packed, Some(&dest)).unwrap();
        fs::File::open(&dest)
            .unwrap()
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let kinds: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("bin/".into(), tar::EntryType::Directory, None),
                ("bin/busybox".into(), tar::EntryType::Regular, None),
                (
                    "bin/sh".into(),
                    tar::EntryType::Symlink,
                    Some("busybox".into())
                ),
                (
                    "bin/true".into(),
                    tar::EntryType::Link,
                    Some("bin/busybox".into())
                ),
            ]
        );
    }

    #[test]
    fn non_tar_input_is_refused_and_leaves_nothing() {
        let fx = Fixture::new();
        let junk = fx.path("junk");
        fs::write(&junk, vec![b'x'; 100_000]).unwrap();
        let err = pack(&fx.spec(&junk, "out")).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} is not a tar archive (plain or gzip) or a directory",
                junk.display()
            )
        );
        assert_eq!(fx.leftovers(), Vec::<String>::new());
        // A damaged tar after some good entries: the half-written output goes too.
        let mut bad = sample_tar();
        bad.truncate(bad.len() - 2048 - 100);
        fs::write(&junk, &bad).unwrap();
        fs::write(fx.path("out"), b"previous").unwrap();
        let err = pack(&fx.spec(&junk, "out")).unwrap_err().to_string();
        assert!(
            err.contains("damaged tar archive: the archive ends inside"),
            "{err}"
        );
        assert_eq!(fs::read(fx.path("out")).unwrap(), b"previous");
        assert_eq!(fx.leftovers(), ["out"]);
    }

    #[test]
    fn missing_input_is_one_clear_line() {
        let fx = Fixture::new();
        let missing = fx.path("missing.tar");
        let err = pack(&fx.spec(&missing, "out")).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot open {}: No such file or directory",
                missing.display()
            )
        );
        assert_eq!(fx.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn unwritable_output_directory_is_refused() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, sample_tar()).unwrap();
        // A parent that is a file fails for root too.
        let err = pack(&fx.spec(&image, "image.tar/out"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot create "), "{err}");
        assert!(err.contains("Not a directory"), "{err}");
        // A read-only directory, when the tests do not run as root.
        let ro = fx.path("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        if fs::write(ro.join("probe"), b"").is_err() {
            let err = pack(&fx.spec(&image, "ro/out")).unwrap_err().to_string();
            assert!(err.contains("Permission denied"), "{err}");
            assert_eq!(fs::read_dir(&ro).unwrap().count(), 0);
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn refuses_a_bad_stub_before_writing() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, sample_tar()).unwrap();
        let mut spec = fx.spec(&image, "out");
        spec.stub = Some(image.clone());
        let err = pack(&spec).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{} is not a binctr stub (not an ELF file)", image.display())
        );
        assert!(!fx.path("out").exists());
    }

    #[test]
    fn a_packed_file_can_be_the_stub_of_another() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, sample_tar()).unwrap();
        pack(&fx.spec(&image, "first")).unwrap();
        let mut spec = fx.spec(&image, "second");
        spec.stub = Some(fx.path("first"));
        pack(&spec).unwrap();
        assert_eq!(
            fs::read(fx.path("first")).unwrap(),
            fs::read(fx.path("second")).unwrap()
        );
    }

    /// The start of an ELF executable for `machine` (62 x86_64, 183 aarch64).
    fn elf_head(machine: u16) -> Vec<u8> {
        let mut head = b"\x7fELF\x02\x01\x01".to_vec();
        head.resize(16, 0);
        head.extend_from_slice(&2u16.to_le_bytes());
        head.extend_from_slice(&machine.to_le_bytes());
        head.resize(64, 0);
        head
    }

    /// A busybox-like root filesystem for `machine`: /bin/sh -> busybox.
    fn rootfs_tar(machine: u16) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o755);
        h.set_size(64);
        b.append_data(&mut h, "bin/busybox", &elf_head(machine)[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bin/sh", "busybox").unwrap();
        b.into_inner().unwrap()
    }

    /// A docker-archive (as `docker save` writes it) of one layer, for `architecture`.
    fn docker_archive(architecture: &str, layer: &[u8]) -> Vec<u8> {
        let diff_id = Sha256Digest::of(layer);
        let config = format!(
            r#"{{"architecture":"{architecture}","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        // Members are named by digest, as docker save names them.
        let config_name = format!("{}.json", Sha256Digest::of(config.as_bytes()).hex());
        let layer_name = format!("{}/layer.tar", diff_id.hex());
        let manifest = format!(
            r#"[{{"Config":"{config_name}","RepoTags":["box:latest"],"Layers":["{layer_name}"]}}]"#
        );
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("manifest.json", manifest.as_bytes()),
            (&config_name, config.as_bytes()),
            (&layer_name, layer),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Packs without --stub: the CPU the packer chose, whether this build embeds that
    /// stub (test.sh builds with both) or not (then the error names the CPU it wanted).
    fn chosen_cpu(spec: &PackSpec) -> Cpu {
        match pack(spec) {
            Ok(packed) => {
                let (read, _) = read_back(&spec.out);
                assert_eq!(read.cpu, packed.cpu);
                packed.cpu
            }
            Err(PackError::Stub(StubError::NoneEmbedded(cpu))) => cpu,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_arm64_root_filesystem_picks_the_aarch64_stub() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, rootfs_tar(183)).unwrap();
        let mut spec = fx.spec(&image, "out");
        spec.stub = None;
        assert_eq!(chosen_cpu(&spec), Cpu::Aarch64);
        // A directory too.
        let dir = fx.path("rootfs");
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/busybox"), elf_head(183)).unwrap();
        std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
        spec.image = ImageArg::Path(dir);
        assert_eq!(chosen_cpu(&spec), Cpu::Aarch64);
        // --platform overrides what the programs say.
        spec.image = ImageArg::Path(image);
        spec.platform = Platform::parse("linux/amd64");
        assert_eq!(chosen_cpu(&spec), Cpu::X86_64);
    }

    #[test]
    fn an_arm64_image_picks_the_aarch64_stub() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, docker_archive("arm64", &sample_tar())).unwrap();
        let mut spec = fx.spec(&image, "out");
        spec.stub = None;
        assert_eq!(chosen_cpu(&spec), Cpu::Aarch64);
        fs::write(&image, docker_archive("amd64", &sample_tar())).unwrap();
        assert_eq!(chosen_cpu(&spec), Cpu::X86_64);
    }

    #[test]
    fn an_x86_64_stub_forced_onto_an_arm64_image_is_refused() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        let stub = fx.stub.display().to_string();
        let shown_image = image.display().to_string();
        let hint = "leave out --stub to pack onto the built-in stub for the image's CPU";
        // A root filesystem: its /bin/sh says arm64, after the payload is written.
        fs::write(&image, rootfs_tar(183)).unwrap();
        let err = pack(&fx.spec(&image, "out")).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("--stub {stub} is an x86_64 stub, but {shown_image} is for linux/arm64 (/bin/sh): {hint}")
        );
        assert_eq!(fx.leftovers(), Vec::<String>::new());
        // An image: its config says arm64.
        fs::write(&image, docker_archive("arm64", &sample_tar())).unwrap();
        let err = pack(&fx.spec(&image, "out")).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--stub {stub} is an x86_64 stub, but {shown_image} is for linux/arm64: {hint}"
            )
        );
        assert!(!err.contains('\n'));
        assert_eq!(fx.leftovers(), Vec::<String>::new());
        // --platform and --stub at odds.
        let mut spec = fx.spec(&image, "out");
        spec.platform = Platform::parse("linux/arm64");
        assert_eq!(
            pack(&spec).unwrap_err().to_string(),
            format!("--platform linux/arm64 does not run on --stub {stub}, an x86_64 stub: use --platform linux/amd64 or another stub")
        );
        // An aarch64 stub fits both.
        fs::write(&fx.stub, fake_stub_for(Cpu::Aarch64)).unwrap();
        assert_eq!(pack(&fx.spec(&image, "out")).unwrap().cpu, Cpu::Aarch64);
        fs::write(&image, rootfs_tar(183)).unwrap();
        assert_eq!(pack(&fx.spec(&image, "out")).unwrap().cpu, Cpu::Aarch64);
        // And --platform vouches for a root filesystem whatever its programs say.
        fs::write(&fx.stub, fake_stub()).unwrap();
        let mut spec = fx.spec(&image, "out");
        spec.platform = Platform::parse("linux/amd64");
        assert_eq!(pack(&spec).unwrap().cpu, Cpu::X86_64);
    }

    #[test]
    fn a_cpu_without_a_stub_is_refused() {
        let fx = Fixture::new();
        let image = fx.path("image.tar");
        fs::write(&image, docker_archive("s390x", &sample_tar())).unwrap();
        let mut spec = fx.spec(&image, "out");
        spec.stub = None;
        assert_eq!(
            pack(&spec).unwrap_err().to_string(),
            format!(
                "{} is for linux/s390x (its config): binctr has stubs for linux/amd64 and linux/arm64 only",
                image.display()
            )
        );
        spec.platform = Platform::parse("linux/riscv64");
        assert!(pack(&spec)
            .unwrap_err()
            .to_string()
            .ends_with("is for linux/riscv64 (--platform): binctr has stubs for linux/amd64 and linux/arm64 only"));
    }
}
