//! The OCI image layout (image-spec `image-layout.md`): `index.json` lists manifests
//! (or nested indexes, one manifest per platform); a manifest names a config blob and
//! layer blobs, all under `blobs/sha256/<hex>`. Docker's manifest list and schema 2
//! media types are read the same way. Every JSON blob is checked against its digest
//! before it is parsed; layers are checked as they stream (`layer.rs`).
use super::error::ImageError;
use super::layer::{LayerCompression, LayerDesc};
use super::store::Store;
use super::types::{ImageMeta, Platform, Selection};
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
    #[serde(default)]
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
            ..ImageMeta::default()
        }
    }

    /// The diff_ids, when there is one per layer.
    pub fn diff_ids(&self, layers: usize) -> Vec<Option<String>> {
        match &self.rootfs {
            Some(r) if r.diff_ids.len() == layers => r.diff_ids.iter().cloned().map(Some).collect(),
            _ => vec![None; layers],
        }
    }

    /// Refuses an image for another platform than the one wanted (`--platform`, else the
    /// stub's).
    pub fn check_platform(&self, image: &str, selection: &Selection) -> Result<(), ImageError> {
        if self.architecture.is_empty() {
            return Ok(());
        }
        let wanted = selection
            .platform
            .as_ref()
            .unwrap_or(&selection.stub_platform);
        let platform = Platform {
            os: if self.os.is_empty() {
                "linux".into()
            } else {
                self.os.clone()
            },
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
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

/// A small member, whole; `expected`: the digest it must have.
pub fn read_member(
    store: &Store,
    image: &str,
    member: &str,
    blob: &str,
    expected: Option<&str>,
) -> Result<Vec<u8>, ImageError> {
    let read_error = |source| ImageError::Read {
        image: image.to_string(),
        source,
    };
    let (reader, size) =
        store
            .open(member)
            .map_err(read_error)?
            .ok_or_else(|| ImageError::MissingBlob {
                image: image.to_string(),
                blob: blob.to_string(),
            })?;
    if size > MAX_JSON_LEN {
        return Err(bad(
            image,
            format!("{blob} is {size} bytes, too large for JSON"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader
        .take(MAX_JSON_LEN)
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

fn read_blob(store: &Store, image: &str, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let member = blob_member(&desc.digest).ok_or_else(|| {
        bad(
            image,
            format!("digest {:?} is not sha256:<64 hex digits>", desc.digest),
        )
    })?;
    read_member(store, image, &member, &desc.digest, Some(&desc.digest))
}

pub fn parse<T: DeserializeOwned>(image: &str, what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| bad(image, format!("{what} is not what it should be: {e}")))
}

fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations
        .get(REF_NAME)
        .or_else(|| desc.annotations.get(CONTAINERD_NAME))
        .map(String::as_str)
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
/// are offered; descends into nested indexes.
fn choose(
    store: &Store,
    image: &str,
    selection: &Selection,
    mut candidates: Vec<Descriptor>,
    top: bool,
) -> Result<Descriptor, ImageError> {
    let names = |ds: &[Descriptor]| {
        let mut names: Vec<String> = ds
            .iter()
            .map(|d| ref_name(d).unwrap_or(&d.digest).to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    if top {
        if let Some(wanted) = &selection.image {
            let all = names(&candidates);
            candidates.retain(|d| ref_name(d).is_some_and(|r| ref_matches(r, wanted)));
            if candidates.is_empty() {
                return Err(ImageError::NoSuchImage {
                    image: image.to_string(),
                    wanted: wanted.clone(),
                    names: all,
                });
            }
        }
    }
    let first_digest = candidates.first().map(|d| d.digest.clone());
    let chosen = if candidates.is_empty() {
        return Err(bad(image, "the index lists no image".into()));
    } else if candidates.len() == 1
        || candidates
            .iter()
            .all(|d| Some(&d.digest) == first_digest.as_ref())
    {
        candidates.swap_remove(0)
    } else if candidates.iter().all(|d| d.platform.is_some()) {
        pick_platform(image, selection, candidates)?
    } else {
        return Err(ImageError::Ambiguous {
            image: image.to_string(),
            names: names(&candidates),
        });
    };
    if is_index(&chosen.media_type) {
        let index: Index = parse(image, &chosen.digest, &read_blob(store, image, &chosen)?)?;
        let mut inner = choose(store, image, selection, index.manifests, false)?;
        if let Some(name) = ref_name(&chosen) {
            inner
                .annotations
                .entry(REF_NAME.to_string())
                .or_insert_with(|| name.to_string());
        }
        return Ok(inner);
    }
    Ok(chosen)
}

fn pick_platform(
    image: &str,
    selection: &Selection,
    candidates: Vec<Descriptor>,
) -> Result<Descriptor, ImageError> {
    let wanted = selection
        .platform
        .clone()
        .unwrap_or_else(|| selection.stub_platform.clone());
    let platform = |d: &Descriptor| d.platform.clone().unwrap_or_default().platform();
    let available: Vec<String> = candidates.iter().map(|d| platform(d).to_string()).collect();
    candidates
        .into_iter()
        .find(|d| platform(d).matches(&wanted))
        .ok_or_else(|| ImageError::NoPlatform {
            image: image.to_string(),
            wanted: wanted.to_string(),
            available,
        })
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
        &read_member(store, image, "index.json", "index.json", None)?,
    )?;
    let chosen = choose(store, image, selection, index.manifests, true)?;
    let manifest: Manifest = parse(image, &chosen.digest, &read_blob(store, image, &chosen)?)?;
    let config: ConfigFile = parse(
        image,
        &manifest.config.digest,
        &read_blob(store, image, &manifest.config)?,
    )?;
    config.check_platform(image, selection)?;
    let diff_ids = config.diff_ids(manifest.layers.len());
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let compression = LayerCompression::of_media_type(&desc.media_type).ok_or_else(|| {
            ImageError::MediaType {
                image: image.to_string(),
                blob: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            }
        })?;
        let member = blob_member(&desc.digest).ok_or_else(|| {
            bad(
                image,
                format!("digest {:?} is not sha256:<64 hex digits>", desc.digest),
            )
        })?;
        let size = store.blob_size(&member, image, &desc.digest)?;
        if desc.size != 0 && size != desc.size {
            return Err(bad(
                image,
                format!(
                    "blob {} has {size} bytes, the manifest says {}",
                    desc.digest, desc.size
                ),
            ));
        }
        layers.push(LayerDesc {
            member,
            name: desc.digest.clone(),
            compression,
            digest: Some(desc.digest.clone()),
            diff_id,
            size,
        });
    }
    let mut meta = config.meta();
    meta.manifest_digest = chosen.digest.clone();
    meta.reference = ref_name(&chosen).unwrap_or_default().to_string();
    Ok((meta, layers))
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
            stub_platform: Platform::of_stub("x86_64"),
        };
        let progress = Progress::hidden();
        let input = open(&ImageArg::Path(dir.to_path_buf()), &selection, &progress)
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
            err.ends_with("has no image for linux/s390x; it has: linux/arm64, linux/amd64 (choose one with --platform, and a stub for it with --stub)"),
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
}
