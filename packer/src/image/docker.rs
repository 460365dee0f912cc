//! docker-archive, as `docker save`, `podman save` and `skopeo copy docker-archive:`
//! write it: `manifest.json` lists the images, each with its config file, its tags and
//! its layer tars, bottom first. There is no manifest digest; the config's diff_ids
//! check the layers, so they must be there, one per layer; a config named after its
//! digest (`<hex>.json`, `blobs/sha256/<hex>`) is checked against it.
use super::archive::is_hex64;
use super::error::ImageError;
use super::layer::{LayerCompression, LayerDesc};
use super::oci::{check_layer_count, parse, read_member, ref_matches, repeats, ConfigFile};
use super::store::{normalize, Store};
use super::types::{ImageMeta, Selection};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

impl Entry {
    fn name(&self) -> String {
        self.repo_tags
            .as_ref()
            .and_then(|t| t.first().cloned())
            .unwrap_or_else(|| self.config.clone())
    }
}

/// The digest a member's name says it has.
fn named_digest(member: &str) -> Option<String> {
    let name = member.strip_prefix("blobs/sha256/").unwrap_or(member);
    let hex = name.strip_suffix(".json").unwrap_or(name);
    is_hex64(hex).then(|| format!("sha256:{hex}"))
}

pub fn resolve(
    store: &Store,
    image: &str,
    selection: &Selection,
) -> Result<(ImageMeta, Vec<LayerDesc>), ImageError> {
    let mut entries: Vec<Entry> = parse(
        image,
        "manifest.json",
        &read_member(store, image, "manifest.json", "manifest.json", None, None)?,
    )?;
    let all: Vec<String> = entries.iter().map(Entry::name).collect();
    if let Some(wanted) = &selection.image {
        entries.retain(|e| {
            e.repo_tags
                .iter()
                .flatten()
                .any(|tag| ref_matches(tag, wanted))
        });
        if entries.is_empty() {
            return Err(ImageError::NoSuchImage {
                image: image.to_string(),
                wanted: wanted.clone(),
                names: all,
            });
        }
    }
    let entry = match entries.len() {
        0 => {
            return Err(ImageError::BadImage {
                image: image.to_string(),
                why: "manifest.json lists no image".into(),
            })
        }
        1 => entries.swap_remove(0),
        _ => {
            return Err(ImageError::Ambiguous {
                image: image.to_string(),
                names: entries.iter().map(Entry::name).collect(),
            })
        }
    };
    let config_member = normalize(&entry.config);
    let config_digest = named_digest(&config_member);
    let config: ConfigFile = parse(
        image,
        &entry.config,
        &read_member(
            store,
            image,
            &config_member,
            &entry.config,
            config_digest.as_deref(),
            None,
        )?,
    )?;
    config.check_platform(image, selection)?;
    check_layer_count(image, entry.layers.len())?;
    let diff_ids = config.diff_ids(image, entry.layers.len())?;
    // docker save links a layer listed twice to one file: the same diff_id.
    let repeats = repeats(diff_ids.iter().map(String::as_str));
    let mut layers = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let member = normalize(path);
        let digest = member.strip_prefix("blobs/sha256/").and_then(named_digest);
        let size = store.blob_size(&member, image, path)?;
        layers.push(LayerDesc {
            member,
            name: path.clone(),
            compression: LayerCompression::Detect,
            digest,
            diff_id: Some(diff_id.clone()),
            size,
            repeats: repeats[diff_id.as_str()],
        });
    }
    let mut meta = config.meta();
    meta.reference = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first().cloned())
        .unwrap_or_default();
    Ok((meta, layers))
}
