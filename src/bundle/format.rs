//! The bundle file: a header, a manifest and parts, every part checked by
//! its sha256 before anything is used.
//!
//! Layout: `b"WAFERBDL"`, the format version (u32 LE), the manifest's
//! length (u64 LE) and sha256 (32 bytes), the manifest (JSON, [`Manifest`]),
//! then the parts back to back in the manifest's order. Parts: `registry`
//! (the registry snapshot, JSON), `module/<sha256>` (a transform module's
//! bytes) and `records` (the online records: u32 LE key length, key, u32
//! LE record length, record; repeated). A file with bytes missing, bytes
//! added, a part whose hash differs or another format version is refused.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BundleError;
use crate::online::{KeyedRecord, LogPosition};
use crate::transform::sha256_hex;

const MAGIC: &[u8; 8] = b"WAFERBDL";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 32;

/// What a bundle holds and where it comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub wafer_version: String,
    pub created_at: DateTime<Utc>,
    /// The source project's name (online keys carry it).
    pub project: String,
    /// The project directory or server the bundle was made from.
    pub source: String,
    pub registry_version: u64,
    pub feature_services: Vec<String>,
    /// Made for every feature service (none was named).
    #[serde(default)]
    pub all_services: bool,
    /// The views whose online records are included.
    pub views: Vec<String>,
    /// Every record of those views (replaces what the edge holds), or only
    /// those changed after `since`.
    pub full: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<LogPosition>,
    /// The source's change-log position the records reach; `None` when the
    /// source keeps no log (every sync is then full).
    pub cursor: Option<LogPosition>,
    /// Only some entities' records (`bundle create --entities`): a sync
    /// from this state starts with everything.
    #[serde(default)]
    pub entities_filtered: bool,
    /// The end of each view's last materialization at the source.
    pub watermarks: BTreeMap<String, DateTime<Utc>>,
    /// Transform modules the snapshot's on-demand views pin, by name.
    pub modules: Vec<ModuleRef>,
    pub records: u64,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModuleRef {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// A bundle being written: parts are added, then [`Writer::finish`] puts
/// the header and manifest in front.
pub struct Writer {
    parts: Vec<(Part, Vec<u8>)>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { parts: Vec::new() }
    }

    pub fn add(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.parts.push((
            Part {
                name: name.into(),
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            },
            bytes,
        ));
    }

    /// The file's bytes; `manifest.parts` is filled in here.
    pub fn finish(self, mut manifest: Manifest) -> Result<Vec<u8>, BundleError> {
        manifest.parts = self.parts.iter().map(|(p, _)| p.clone()).collect();
        let json = serde_json::to_vec(&manifest)
            .map_err(|e| BundleError::Corrupt(format!("cannot encode the manifest: {e}")))?;
        let body: usize = self.parts.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(HEADER + json.len() + body);
        out.extend(MAGIC);
        out.extend(FORMAT_VERSION.to_le_bytes());
        out.extend((json.len() as u64).to_le_bytes());
        out.extend(Sha256::digest(&json));
        out.extend(&json);
        for (_, bytes) in &self.parts {
            out.extend(bytes);
        }
        Ok(out)
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// A verified bundle: every part's size and sha256 matched.
pub struct Bundle {
    pub manifest: Manifest,
    bytes: Vec<u8>,
    parts: BTreeMap<String, Range<usize>>,
}

impl Bundle {
    /// Checks the header, the manifest and every part.
    pub fn verify(bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        let manifest_end = manifest_end(&bytes)?;
        if manifest_end > bytes.len() {
            return Err(BundleError::Corrupt(
                "truncated: the manifest is cut short".into(),
            ));
        }
        let manifest = manifest_in(&bytes[..manifest_end])?;
        let mut parts = BTreeMap::new();
        let mut at = manifest_end;
        for part in &manifest.parts {
            let end = usize::try_from(part.size)
                .ok()
                .and_then(|n| at.checked_add(n))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| {
                    BundleError::Corrupt(format!("truncated: part '{}' is cut short", part.name))
                })?;
            if sha256_hex(&bytes[at..end]) != part.sha256 {
                return Err(BundleError::Corrupt(format!(
                    "part '{}' does not match its sha256",
                    part.name
                )));
            }
            if parts.insert(part.name.clone(), at..end).is_some() {
                return Err(BundleError::Corrupt(format!(
                    "part '{}' appears twice",
                    part.name
                )));
            }
            at = end;
        }
        if at != bytes.len() {
            return Err(BundleError::Corrupt("bytes follow the last part".into()));
        }
        Ok(Bundle {
            manifest,
            bytes,
            parts,
        })
    }

    /// The file's size.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A part's bytes.
    pub fn part(&self, name: &str) -> Option<&[u8]> {
        self.parts.get(name).map(|r| &self.bytes[r.clone()])
    }

    /// The online records, each checked to belong to one of `prefixes`.
    pub fn records(&self, prefixes: &[Vec<u8>]) -> Result<Vec<KeyedRecord>, BundleError> {
        let mut input = self.part("records").unwrap_or_default();
        // The manifest's count is checked below, not trusted for memory: a
        // record takes 8 bytes of the part at least.
        let capacity = usize::try_from(self.manifest.records)
            .unwrap_or(usize::MAX)
            .min(input.len() / 8);
        let mut out = Vec::with_capacity(capacity);
        let take = |input: &mut &[u8]| -> Result<Vec<u8>, BundleError> {
            let cut = || BundleError::Corrupt("the records part is cut short".into());
            let len =
                u32::from_le_bytes(input.get(..4).ok_or_else(cut)?.try_into().expect("4 bytes"));
            let bytes = input.get(4..4 + len as usize).ok_or_else(cut)?.to_vec();
            *input = &input[4 + len as usize..];
            Ok(bytes)
        };
        while !input.is_empty() {
            let key = take(&mut input)?;
            let value = take(&mut input)?;
            if !prefixes.iter().any(|p| key.starts_with(p)) {
                return Err(BundleError::Corrupt(
                    "a record belongs to no view of the bundle".into(),
                ));
            }
            out.push((key, value));
        }
        if out.len() as u64 != self.manifest.records {
            return Err(BundleError::Corrupt(format!(
                "{} records found, the manifest says {}",
                out.len(),
                self.manifest.records
            )));
        }
        Ok(out)
    }
}

/// Appends one record to a `records` part.
pub fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend((key.len() as u32).to_le_bytes());
    out.extend(key);
    out.extend((value.len() as u32).to_le_bytes());
    out.extend(value);
}

/// Where the manifest ends, from the header (magic, version, length).
fn manifest_end(bytes: &[u8]) -> Result<usize, BundleError> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(BundleError::Corrupt(
            "not a Wafer bundle (the header is missing or wrong)".into(),
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(BundleError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let manifest_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    usize::try_from(manifest_len)
        .ok()
        .filter(|&n| n <= MAX_MANIFEST_BYTES)
        .and_then(|n| HEADER.checked_add(n))
        .ok_or_else(|| BundleError::Corrupt("the manifest's length is impossible".into()))
}

/// The manifest of a file's first bytes (header and manifest), checked
/// against its sha256.
fn manifest_in(bytes: &[u8]) -> Result<Manifest, BundleError> {
    let json = &bytes[HEADER..];
    if Sha256::digest(json).as_slice() != &bytes[20..52] {
        return Err(BundleError::Corrupt(
            "the manifest does not match its sha256".into(),
        ));
    }
    serde_json::from_slice(json)
        .map_err(|e| BundleError::Corrupt(format!("unreadable manifest: {e}")))
}

/// The largest manifest read.
const MAX_MANIFEST_BYTES: usize = 64 << 20;

/// A bundle file's manifest alone (checked against its sha256; the parts
/// are not read): to decide whether the file needs loading at all.
pub fn read_manifest(path: &std::path::Path) -> Result<Manifest, BundleError> {
    use std::io::Read;
    let unreadable =
        |e: std::io::Error| BundleError::Corrupt(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::with_capacity(HEADER);
    (&mut file)
        .take(HEADER as u64)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    let end = manifest_end(&bytes)?;
    bytes.resize(end, 0);
    file.read_exact(&mut bytes[HEADER..])
        .map_err(|_| BundleError::Corrupt("truncated: the manifest is cut short".into()))?;
    manifest_in(&bytes)
}
