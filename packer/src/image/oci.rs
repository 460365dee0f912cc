//! The OCI image layout (image-spec `image-layout.md`): `index.json` lists manifests
//! (or nested indexes, one manifest per platform); a manifest names a config blob and
//! layer blobs, all under `blobs/sha256/<hex>`. Docker's manifest list and schema 2
//! media types are read the same way. Every blob is checked against its descriptor's
//! size and digest, JSON ones before they are parsed, layers as they stream
//! (`layer.rs`), and against the config's diff_ids, which must be one per layer.
//!
//! Indexes nest at most [`MAX_INDEX_DEPTH`] deep, and choosing is never silent: two
//! different images for the platform wanted, or for the name asked, is an error that
//! lists them.
use super::error::ImageError;
use super::layer::{LayerCompression, LayerDesc};
use super::limits::{MAX_INDEX_DEPTH, MAX_LAYERS};
use super::store::Store;
use super::types::{ImageMeta, Platform, Selection};
use crate::util::shown;
use binctr_format::Sha256Digest;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;

/// Index, manifest and config blobs are small; anything larger is not one.
const MAX_JSON_LEN: u64 = 16 << 20;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    /// Required: a blob is checked against it.
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct PlatformJson {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
}

impl PlatformJson {
    fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The image config (image-spec `config.md`), the part binctr uses.
#[derive(Deserialize, Default)]
pub struct ConfigFile {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: String,
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ConfigFile {
    pub fn meta(&self) -> ImageMeta {
        let c = self.config.as_ref();
        let keys = |m: Option<&BTreeMap<String, serde_json::Value>>| {
            m.map(|m| m.keys().cloned().collect()).unwrap_or_default()
        };
        ImageMeta {
            created: self.created.clone().unwrap_or_default(),
            entrypoint: c.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
            cmd: c.and_then(|c| c.cmd.clone()).unwrap_or_default(),
            env: c.and_then(|c| c.env.clone()).unwrap_or_default(),
            working_dir: c.and_then(|c| c.working_dir.clone()).unwrap_or_default(),
            user: c.and_then(|c| c.user.clone()).unwrap_or_default(),
            exposed_ports: keys(c.and_then(|c| c.exposed_ports.as_ref())),
            volumes: keys(c.and_then(|c| c.volumes.as_ref())),
            labels: c.and_then(|c| c.labels.clone()).unwrap_or_default(),
            stop_signal: c.and_then(|c| c.stop_signal.clone()).unwrap_or_default(),
            platform: self.platform(),
            ..ImageMeta::default()
        }
    }

    /// The diff_ids, one per layer: a config listing more (a layer dropped from the
    /// manifest), fewer or none (layers nothing verifies) is refused.
    pub fn diff_ids(&self, image: &str, layers: usize) -> Result<Vec<String>, ImageError> {
        let diff_ids = self.rootfs.as_ref().map(|r| &r.diff_ids[..]).unwrap_or(&[]);
        if diff_ids.len() != layers {
            return Err(ImageError::Refused {
                image: image.to_string(),
                why: format!(
                    "the manifest lists {layers} layers but the image config has {} diff_ids: a layer was dropped or added, or the layers cannot be verified",
                    diff_ids.len()
                ),
            });
        }
        Ok(diff_ids.to_vec())
    }

    /// The platform the config says, if it says one (an empty os is Linux).
    pub fn platform(&self) -> Option<Platform> {
        if self.architecture.is_empty() {
            return None;
        }
        Some(Platform {
            os: if self.os.is_empty() {
                "linux".into()
            } else {
                self.os.clone()
            },
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        })
    }

    /// Refuses an image for another platform than the one wanted (`--platform`, else the
    /// `--stub`'s), when one is.
    pub fn check_platform(&self, image: &str, selection: &Selection) -> Result<(), ImageError> {
        let (Some(platform), Some(wanted)) = (self.platform(), &selection.platform) else {
            return Ok(());
        };
        if platform.matches(wanted) {
            return Ok(());
        }
        Err(ImageError::NoPlatform {
            image: image.to_string(),
            wanted: wanted.to_string(),
            available: vec![platform.to_string()],
        })
    }
}

/// `blobs/sha256/<hex>` for `sha256:<hex>`.
pub fn blob_member(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    super::archive::is_hex64(hex).then(|| format!("blobs/sha256/{hex}"))
}

fn bad(image: &str, why: String) -> ImageError {
    ImageError::BadImage {
        image: image.to_string(),
        why,
    }
}

/// A small member, whole; `expected`: the digest it must have, `expected_size` its size.
pub fn read_member(
    store: &Store,
    image: &str,
    member: &str,
    blob: &str,
    expected: Option<&str>,
    expected_size: Option<u64>,
) -> Result<Vec<u8>, ImageError> {
    let read_error = |source| ImageError::Read {
        image: image.to_string(),
        source,
    };
    let (reader, size) = store.open_blob(member, image, blob)?;
    if size > MAX_JSON_LEN {
        return Err(bad(
            image,
            format!("{} is {size} bytes, too large for JSON", shown(blob)),
        ));
    }
    if let Some(expected_size) = expected_size {
        check_size(image, blob, size, expected_size)?;
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if let Some(expected) = expected {
        let actual = Sha256Digest::of(&bytes).to_string();
        if actual != expected {
            return Err(ImageError::Digest {
                image: image.to_string(),
                blob: blob.to_string(),
                actual,
            });
        }
    }
    Ok(bytes)
}

/// A blob must have the size its descriptor says.
pub fn check_size(image: &str, blob: &str, size: u64, expected: u64) -> Result<(), ImageError> {
    if size == expected {
        return Ok(());
    }
    Err(bad(
        image,
        format!(
            "blob {} has {size} bytes, its descriptor says {expected}",
            shown(blob)
        ),
    ))
}

/// `blobs/sha256/<hex>` of a descriptor, or why there is none.
fn member_of(image: &str, desc: &Descriptor) -> Result<String, ImageError> {
    blob_member(&desc.digest).ok_or_else(|| {
        bad(
            image,
            format!(
                "digest \"{}\" is not sha256:<64 hex digits>",
                shown(&desc.digest)
            ),
        )
    })
}

fn read_blob(store: &Store, image: &str, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let member = member_of(image, desc)?;
    read_member(
        store,
        image,
        &member,
        &desc.digest,
        Some(&desc.digest),
        Some(desc.size),
    )
}

pub fn parse<T: DeserializeOwned>(image: &str, what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        bad(
            image,
            format!(
                "{} is not what it should be: {}",
                shown(what),
                shown(&e.to_string())
            ),
        )
    })
}

/// The image's name: containerd's full name when there is one (`docker save` of docker
/// 25+ writes it, with only the tag as the OCI ref name), else the OCI ref name.
fn ref_name(desc: &Descriptor) -> Option<&str> {
    ref_names(desc).next()
}

/// Every name a descriptor gives its image, the fullest first.
fn ref_names(desc: &Descriptor) -> impl Iterator<Item = &str> {
    [CONTAINERD_NAME, REF_NAME]
        .into_iter()
        .filter_map(|key| desc.annotations.get(key).map(String::as_str))
}

/// `repo[:tag]` without a digest, the tag defaulting to `latest`.
fn split_ref(name: &str) -> (&str, &str) {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(at) if !name[at..].contains('/') => (&name[..at], &name[at + 1..]),
        _ => (name, "latest"),
    }
}

/// Whether the image called `name` (a ref name, a RepoTag) is the one asked for: the
/// same name, or the same tag of a repository ending in the name asked for
/// (`docker.io/library/busybox:latest` is `busybox`).
pub fn ref_matches(name: &str, wanted: &str) -> bool {
    if name == wanted {
        return true;
    }
    let (repo, tag) = split_ref(name);
    let (want_repo, want_tag) = split_ref(wanted);
    tag == want_tag && (repo == want_repo || repo.ends_with(&format!("/{want_repo}")))
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// Picks one descriptor: by `--image` at the top, by platform where several platforms
/// are offered; descends into nested indexes, [`MAX_INDEX_DEPTH`] at most. The image
/// keeps the nearest ref name found on the way down.
fn choose(
    store: &Store,
    image: &str,
    selection: &Selection,
    candidates: Vec<Descriptor>,
) -> Result<Descriptor, ImageError> {
    let mut candidates = by_name(image, selection, candidates)?;
    let mut name: Option<String> = None;
    for depth in 1.. {
        let mut chosen = pick(image, selection, candidates)?;
        name = ref_name(&chosen).map(str::to_string).or(name);
        if !is_index(&chosen.media_type) {
            if let Some(name) = name {
                chosen
                    .annotations
                    .entry(REF_NAME.to_string())
                    .or_insert(name);
            }
            return Ok(chosen);
        }
        if depth >= MAX_INDEX_DEPTH {
            return Err(ImageError::Refused {
                image: image.to_string(),
                why: format!("its indexes are nested more than {MAX_INDEX_DEPTH} deep"),
            });
        }
        let index: Index = parse(image, &chosen.digest, &read_blob(store, image, &chosen)?)?;
        candidates = index.manifests;
    }
    unreachable!("the loop returns")
}

/// The descriptors of index.json that `--image` names (all of them without it).
fn by_name(
    image: &str,
    selection: &Selection,
    mut candidates: Vec<Descriptor>,
) -> Result<Vec<Descriptor>, ImageError> {
    if let Some(wanted) = &selection.image {
        let all = names(&candidates);
        candidates.retain(|d| ref_names(d).any(|r| ref_matches(r, wanted)));
        if candidates.is_empty() {
            return Err(ImageError::NoSuchImage {
                image: image.to_string(),
                wanted: wanted.clone(),
                names: all,
            });
        }
    }
    Ok(candidates)
}

/// Ref names (else digests) of descriptors, sorted, each once.
fn names(ds: &[Descriptor]) -> Vec<String> {
    let mut names: Vec<String> = ds
        .iter()
        .map(|d| ref_name(d).unwrap_or(&d.digest).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One of several descriptors of an index: the only image, or the one for the platform
/// wanted. Descriptors of the same digest are one image.
fn pick(
    image: &str,
    selection: &Selection,
    candidates: Vec<Descriptor>,
) -> Result<Descriptor, ImageError> {
    let mut seen = std::collections::HashSet::new();
    let mut candidates: Vec<Descriptor> = candidates
        .into_iter()
        .filter(|d| seen.insert(d.digest.clone()))
        .collect();
    if candidates.is_empty() {
        return Err(bad(image, "the index lists no image".into()));
    }
    if candidates.len() == 1 {
        return Ok(candidates.swap_remove(0));
    }
    if candidates.iter().all(|d| d.platform.is_some()) {
        return pick_platform(image, selection, candidates);
    }
    Err(ImageError::Ambiguous {
        image: image.to_string(),
        names: names(&candidates),
    })
}

fn pick_platform(
    image: &str,
    selection: &Selection,
    candidates: Vec<Descriptor>,
) -> Result<Descriptor, ImageError> {
    let wanted = selection
        .platform
        .clone()
        .unwrap_or_else(|| selection.preferred.clone());
    let platform = |d: &Descriptor| d.platform.clone().unwrap_or_default().platform();
    let available: Vec<String> = candidates.iter().map(|d| platform(d).to_string()).collect();
    // Nothing asked: an index of one real image (beside buildx's attestation manifests,
    // which say unknown/unknown) is that image, whatever its CPU.
    if selection.platform.is_none() {
        let mut real: Vec<&Descriptor> = candidates
            .iter()
            .filter(|d| platform(d).os != "unknown")
            .collect();
        if real.len() == 1 {
            return Ok(real.swap_remove(0).clone());
        }
    }
    let mut matching: Vec<Descriptor> = candidates
        .into_iter()
        .filter(|d| platform(d).matches(&wanted))
        .collect();
    // linux/arm64/v8 asked, linux/arm64/v8 and linux/arm64 offered: the exact one.
    if matching.iter().any(|d| platform(d) == wanted) {
        matching.retain(|d| platform(d) == wanted);
    }
    match matching.len() {
        0 => Err(ImageError::NoPlatform {
            image: image.to_string(),
            wanted: wanted.to_string(),
            available,
        }),
        1 => Ok(matching.swap_remove(0)),
        _ => Err(ImageError::AmbiguousPlatform {
            image: image.to_string(),
            wanted: wanted.to_string(),
            names: matching
                .iter()
                .map(|d| {
                    let name = ref_name(d).unwrap_or(&d.digest);
                    format!("{name} for {}", platform(d))
                })
                .collect(),
        }),
    }
}

/// Resolves the image of an OCI layout to its config and layers.
pub fn resolve(
    store: &Store,
    image: &str,
    selection: &Selection,
) -> Result<(ImageMeta, Vec<LayerDesc>), ImageError> {
    let index: Index = parse(
        image,
        "index.json",
        &read_member(store, image, "index.json", "index.json", None, None)?,
    )?;
    let chosen = choose(store, image, selection, index.manifests)?;
    let manifest: Manifest = parse(image, &chosen.digest, &read_blob(store, image, &chosen)?)?;
    let config: ConfigFile = parse(
        image,
        &manifest.config.digest,
        &read_blob(store, image, &manifest.config)?,
    )?;
    config.check_platform(image, selection)?;
    check_layer_count(image, manifest.layers.len())?;
    let diff_ids = config.diff_ids(image, manifest.layers.len())?;
    let repeats = repeats(manifest.layers.iter().map(|d| d.digest.as_str()));
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let compression = LayerCompression::of_media_type(&desc.media_type).ok_or_else(|| {
            ImageError::MediaType {
                image: image.to_string(),
                blob: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            }
        })?;
        let member = member_of(image, desc)?;
        let size = store.blob_size(&member, image, &desc.digest)?;
        check_size(image, &desc.digest, size, desc.size)?;
        layers.push(LayerDesc {
            member,
            name: desc.digest.clone(),
            compression,
            digest: Some(desc.digest.clone()),
            diff_id: Some(diff_id),
            size,
            repeats: repeats[desc.digest.as_str()],
        });
    }
    let mut meta = config.meta();
    meta.manifest_digest = chosen.digest.clone();
    meta.reference = ref_name(&chosen).unwrap_or_default().to_string();
    Ok((meta, layers))
}

/// At most [`MAX_LAYERS`] layers.
pub fn check_layer_count(image: &str, layers: usize) -> Result<(), ImageError> {
    if layers <= MAX_LAYERS {
        return Ok(());
    }
    Err(ImageError::Refused {
        image: image.to_string(),
        why: format!(
            "the manifest lists {layers} layers, more than the {MAX_LAYERS} any image needs"
        ),
    })
}

/// How often each layer is listed.
pub fn repeats<'a>(
    keys: impl Iterator<Item = &'a str>,
) -> std::collections::HashMap<&'a str, usize> {
    let mut counts = std::collections::HashMap::new();
    for key in keys {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_as_people_type_them() {
        assert!(ref_matches("test", "test"));
        assert!(ref_matches("docker.io/binctr/test:latest", "binctr/test"));
        assert!(ref_matches("docker.io/binctr/test:latest", "test:latest"));
        assert!(ref_matches(
            "docker.io/library/busybox:1.36",
            "busybox:1.36"
        ));
        assert!(!ref_matches("docker.io/library/busybox:1.36", "busybox"));
        assert!(!ref_matches("docker.io/binctr/test:latest", "est"));
        assert!(ref_matches("localhost:5000/app", "app"));
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::image::flatten::tests::{layer, listing};
    use crate::image::{open, ImageArg, Selection};
    use crate::progress::Progress;
    use crate::util::tests::TempDir;
    use std::fs;
    use std::path::Path;

    /// Writes a blob, returns its descriptor JSON.
    fn blob(dir: &Path, media_type: &str, bytes: &[u8], extra: &str) -> String {
        let digest = Sha256Digest::of(bytes);
        fs::write(dir.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{}{extra}}}"#,
            bytes.len()
        )
    }

    /// An image for `arch` whose one layer holds the file `arch`.
    fn image(dir: &Path, arch: &str) -> String {
        let tar = layer(&[(arch, 'f', arch)]);
        let diff_id = Sha256Digest::of(&tar);
        let layer = blob(dir, "application/vnd.oci.image.layer.v1.tar", &tar, "");
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["{arch}"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config = blob(
            dir,
            "application/vnd.oci.image.config.v1+json",
            config.as_bytes(),
            "",
        );
        let manifest = format!(r#"{{"schemaVersion":2,"config":{config},"layers":[{layer}]}}"#);
        blob(
            dir,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
            &format!(r#","platform":{{"architecture":"{arch}","os":"linux"}}"#),
        )
    }

    fn multi_platform() -> TempDir {
        let dir = TempDir::new();
        let root = dir.path();
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let amd64 = image(root, "amd64");
        let arm64 = image(root, "arm64");
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{arm64},{amd64}]}}"#);
        let nested = blob(
            root,
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
            r#","annotations":{"org.opencontainers.image.ref.name":"multi"}"#,
        );
        fs::write(
            root.join("index.json"),
            format!(r#"{{"schemaVersion":2,"manifests":[{nested}]}}"#),
        )
        .unwrap();
        dir
    }

    fn pick(dir: &Path, platform: Option<&str>) -> Result<(ImageMeta, Vec<String>), String> {
        let selection = Selection {
            image: None,
            platform: platform.map(|p| Platform::parse(p).unwrap()),
            preferred: Platform::linux("amd64"),
        };
        let progress = Progress::hidden();
        let limits = crate::image::Limits::default();
        let input = open(
            &ImageArg::Path(dir.to_path_buf()),
            &selection,
            &limits,
            &progress,
        )
        .map_err(|e| e.to_string())?;
        let meta = input.meta.clone().unwrap();
        let mut out = Vec::new();
        input
            .write_tar(&progress, &mut out)
            .map_err(|e| e.to_string())?;
        Ok((meta, listing(&out).into_iter().map(|(p, _, _)| p).collect()))
    }

    #[test]
    fn a_multi_platform_index_gives_the_stubs_platform_or_the_one_asked() {
        let dir = multi_platform();
        let (meta, files) = pick(dir.path(), None).unwrap();
        assert_eq!(
            (meta.cmd, files),
            (vec!["amd64".to_string()], vec!["amd64".to_string()])
        );
        assert_eq!(meta.reference, "multi");
        assert!(meta.manifest_digest.starts_with("sha256:"));
        let (meta, files) = pick(dir.path(), Some("linux/arm64/v8")).unwrap();
        assert_eq!(
            (meta.cmd, files),
            (vec!["arm64".to_string()], vec!["arm64".to_string()])
        );
        let err = pick(dir.path(), Some("linux/s390x")).unwrap_err();
        assert!(
            err.ends_with("has no image for linux/s390x; it has: linux/arm64, linux/amd64 (choose one with --platform)"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_layer_blob_is_reported() {
        let dir = multi_platform();
        // Rewrite the amd64 layer as another tar with the same blob name: the blob digest
        // catches it first.
        let blobs = dir.path().join("blobs/sha256");
        let tar = layer(&[("amd64", 'f', "amd64")]);
        let name = Sha256Digest::of(&tar).hex();
        fs::write(blobs.join(&name), layer(&[("amd64", 'f', "AMD64")])).unwrap();
        let err = pick(dir.path(), None).unwrap_err();
        assert!(
            err.contains(&format!("blob sha256:{name} is damaged")),
            "{err}"
        );
    }

    /// A layout whose index.json lists the manifest of `layers` (tars) and `diff_ids`.
    fn layout(layers: &[Vec<u8>], diff_ids: &[Vec<u8>], size_lie: u64) -> TempDir {
        let dir = TempDir::new();
        let root = dir.path();
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let descs: Vec<String> = layers
            .iter()
            .map(|l| {
                let desc = blob(root, "application/vnd.oci.image.layer.v1.tar", l, "");
                let size = format!(r#""size":{}"#, l.len());
                desc.replace(&size, &format!(r#""size":{}"#, l.len() as u64 + size_lie))
            })
            .collect();
        let ids: Vec<String> = diff_ids
            .iter()
            .map(|l| format!(r#""{}""#, Sha256Digest::of(l)))
            .collect();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            ids.join(",")
        );
        let config = blob(
            root,
            "application/vnd.oci.image.config.v1+json",
            config.as_bytes(),
            "",
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{config},"layers":[{}]}}"#,
            descs.join(",")
        );
        let manifest = blob(
            root,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
            "",
        );
        fs::write(
            root.join("index.json"),
            format!(r#"{{"schemaVersion":2,"manifests":[{manifest}]}}"#),
        )
        .unwrap();
        dir
    }

    #[test]
    fn every_layer_is_verified_by_size_and_diff_id() {
        let a = layer(&[("a", 'f', "a")]);
        let b = layer(&[("b", 'f', "b")]);
        let ok = layout(&[a.clone(), b.clone()], &[a.clone(), b.clone()], 0);
        assert_eq!(pick(ok.path(), None).unwrap().1, ["a", "b"]);
        // A dropped layer: the config still lists its diff_id.
        let one = std::slice::from_ref(&a);
        let dropped = layout(one, &[a.clone(), b.clone()], 0);
        let err = pick(dropped.path(), None).unwrap_err();
        assert!(
            err.contains(
                "refused: the manifest lists 1 layers but the image config has 2 diff_ids"
            ),
            "{err}"
        );
        // A descriptor whose size lies (a longer one: the blob stays the same).
        let lies = layout(one, one, 1);
        let err = pick(lies.path(), None).unwrap_err();
        let says = format!("has {} bytes, its descriptor says {}", a.len(), a.len() + 1);
        assert!(err.contains(&says), "{err}");
    }

    #[test]
    fn a_big_layer_listed_many_times_is_refused_a_small_one_is_not() {
        let empty = layer(&[]);
        let small = layout(&vec![empty.clone(); 6], &vec![empty.clone(); 6], 0);
        pick(small.path(), None).unwrap();
        let big = layer(&[("big", 'f', &"x".repeat(2 << 20))]);
        let many = layout(&vec![big.clone(); 20], &vec![big.clone(); 20], 0);
        let err = pick(many.path(), None).unwrap_err();
        assert!(err.contains("is listed 20 times in the manifest"), "{err}");
    }

    #[test]
    fn nested_indexes_stop_at_the_depth_cap() {
        let dir = multi_platform();
        let root = dir.path();
        let mut top = fs::read_to_string(root.join("index.json")).unwrap();
        for _ in 0..MAX_INDEX_DEPTH {
            let inner = top
                .trim_start_matches(r#"{"schemaVersion":2,"manifests":["#)
                .trim_end_matches("]}")
                .to_string();
            let index = format!(r#"{{"schemaVersion":2,"manifests":[{inner}]}}"#);
            let desc = blob(
                root,
                "application/vnd.oci.image.index.v1+json",
                index.as_bytes(),
                "",
            );
            top = format!(r#"{{"schemaVersion":2,"manifests":[{desc}]}}"#);
        }
        fs::write(root.join("index.json"), top).unwrap();
        let err = pick(root, None).unwrap_err();
        assert!(err.contains("nested more than 8 deep"), "{err}");
    }

    #[test]
    fn two_images_for_one_platform_are_an_error_listing_them() {
        let dir = TempDir::new();
        let root = dir.path();
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let one = image(root, "amd64");
        let other =
            image(root, "arm64").replace(r#""architecture":"arm64""#, r#""architecture":"amd64""#);
        let named = |d: &str, n: &str| {
            d[..d.len() - 1].to_string()
                + &format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{n}"}}}}"#)
        };
        fs::write(
            root.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{},{}]}}"#,
                named(&one, "same"),
                named(&other, "same")
            ),
        )
        .unwrap();
        let err = pick(root, None).unwrap_err();
        assert!(
            err.contains("holds 2 different images for linux/amd64 (same for linux/amd64, same for linux/amd64)"),
            "{err}"
        );
    }
}
