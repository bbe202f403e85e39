//! The wire format of a batch: a 4-byte header (`SXB` and a format version), then the
//! postcard encoding of the batch, compressed with zstd in one frame or several whose outputs,
//! one after the other, are that encoding (this side writes the batch's own fields in one, then
//! its versions in one or more, which links sending the same versions share). Decoding is bounded (compressed and
//! decompressed size, number of versions) and validates every identifier and content hash, so
//! bad input from the network is an error, never a panic.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use model::{
    ContentHash, Hlc, Level, ObjectKey, ObjectName, Scope, SiteCard, SiteId, SpecText, Version, VersionVector,
};
use serde::{Deserialize, Serialize};
use store::RemoteVersion;

const MAGIC: &[u8; 3] = b"SXB";
const FORMAT_V1: u8 = 1;
/// Level 1: about twice as fast as the default (3) for a few percent more bytes on the wire;
/// a sync batch is compressed once per link and hop, on the path of every replicated change.
const ZSTD_LEVEL: i32 = 1;
/// The largest batch, decompressed.
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;
/// The most versions one batch may carry.
pub const MAX_VERSIONS: usize = 10_000;
/// The largest zstd window a batch may use, as a power of two (8 MiB). The encoder's level
/// uses at most 2 MiB.
const MAX_WINDOW_LOG: u32 = 23;
/// How many times its compressed size a batch's claimed decompressed size is believed, for
/// the first allocation.
const MAX_RATIO: usize = 256;
/// The most site cards one hello may carry.
pub const MAX_SITES: usize = 100_000;

/// What a site says about itself in every batch and acknowledgement, so the two ends of a link
/// learn which scopes each holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub site: SiteId,
    pub scope: Scope,
    pub level: Level,
    /// To a parent: the scopes of the sender's subtree. To a child: the scopes of the sender and
    /// its ancestors.
    pub scopes: BTreeSet<Scope>,
    /// The sender's site directory: to a parent, the cards of its subtree; to a child, every
    /// card it knows. Authority checks on apply read it.
    #[serde(default)]
    pub sites: Vec<SiteCard>,
}

/// One batch of versions from one site to a neighbour.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub from: SiteId,
    pub to: SiteId,
    pub hello: Hello,
    /// The sender's change-log position this batch brings the receiver up to: the receiver's
    /// acknowledgement lets the sender move its cursor here. Repairs keep the cursor.
    pub up_to: u64,
    /// A repair from a digest exchange, not the next part of the log.
    pub repair: bool,
    pub versions: Vec<RemoteVersion>,
}

/// Why bytes are not a batch.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a souverix batch (the header is missing or wrong)")]
    BadHeader,
    #[error("batch format version {0} is not supported; this site reads version {FORMAT_V1}: upgrade it")]
    UnsupportedFormat(u8),
    #[error("the batch does not decompress within {MAX_DECODED_BYTES} bytes: {0}")]
    Decompress(String),
    #[error("the batch is malformed: {0}")]
    Malformed(String),
    #[error("the batch carries {0} versions; the limit is {MAX_VERSIONS}")]
    TooManyVersions(usize),
    #[error("version {index} of the batch is not valid: {reason}")]
    BadVersion { index: usize, reason: String },
}

#[derive(Serialize, Deserialize)]
struct WireBatch {
    from: String,
    to: String,
    hello: WireHello,
    up_to: u64,
    repair: bool,
    versions: Vec<WireVersion>,
}

#[derive(Serialize, Deserialize)]
struct WireHello {
    site: String,
    scope: String,
    level: u8,
    scopes: Vec<String>,
    sites: Vec<SiteCard>,
}

#[derive(Serialize, Deserialize)]
struct WireVersion {
    kind: String,
    scope: String,
    name: String,
    wall_ms: u64,
    logical: u32,
    origin: String,
    vv: Vec<(String, u64)>,
    author: String,
    content_hash: Vec<u8>,
    deleted: bool,
    labels: Vec<(String, String)>,
    /// JSON text: the spec is free-form, and postcard is not self-describing.
    spec: String,
}

/// [`WireBatch`] up to its versions, as [`encode`] writes it, borrowing from the batch: the same
/// fields in the same order, each serialized as its owned counterpart is (a `&str` as a
/// `String`, a slice or sequence as a `Vec`), so postcard writes the same bytes; then the
/// length of the versions' sequence. Its elements follow, encoded apart ([`encode_versions`]).
#[derive(Serialize)]
struct WireHeaderRef<'a> {
    from: &'a str,
    to: &'a str,
    hello: WireHelloRef<'a>,
    up_to: u64,
    repair: bool,
    count: usize,
}

#[derive(Serialize)]
struct WireHelloRef<'a> {
    site: &'a str,
    scope: &'a str,
    level: u8,
    scopes: &'a [String],
    sites: &'a [SiteCard],
}

#[derive(Serialize)]
struct WireVersionRef<'a> {
    kind: &'a str,
    scope: &'a str,
    name: &'a str,
    wall_ms: u64,
    logical: u32,
    origin: &'a str,
    vv: VectorRef<'a>,
    author: &'a str,
    content_hash: HashBytes,
    deleted: bool,
    labels: LabelsRef<'a>,
    spec: &'a str,
}

impl<'a> WireVersionRef<'a> {
    fn of(v: &'a RemoteVersion) -> Self {
        WireVersionRef {
            kind: v.key.kind.as_str(),
            scope: v.key.scope.as_str(),
            name: v.key.name.as_str(),
            wall_ms: v.version.hlc.wall_ms,
            logical: v.version.hlc.logical,
            origin: v.version.origin.as_str(),
            vv: VectorRef(&v.version.vv),
            author: &v.version.author,
            content_hash: HashBytes::of(&v.version.content_hash),
            deleted: v.version.deleted,
            labels: LabelsRef(&v.labels),
            spec: v.spec.as_str(),
        }
    }
}

/// A version vector as `Vec<(String, u64)>` serializes.
struct VectorRef<'a>(&'a VersionVector);

impl Serialize for VectorRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.entries().map(|(site, counter)| (site.as_str(), counter)))
    }
}

/// Labels as `Vec<(String, String)>` serializes.
struct LabelsRef<'a>(&'a BTreeMap<String, String>);

impl Serialize for LabelsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

/// A content hash's 32 bytes, as `Vec<u8>` serializes; none for a hash that is not 64 hex
/// digits (the receiver refuses it).
struct HashBytes(Option<[u8; 32]>);

impl HashBytes {
    fn of(hash: &ContentHash) -> Self {
        let mut bytes = [0u8; 32];
        HashBytes(hex::decode_to_slice(hash.as_str(), &mut bytes).ok().map(|()| bytes))
    }
}

impl Serialize for HashBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: &[u8] = self.0.as_ref().map_or(&[], |b| b.as_slice());
        serializer.collect_seq(bytes)
    }
}

fn level_code(level: Level) -> u8 {
    match level {
        Level::Global => 0,
        Level::Regional => 1,
        Level::Local => 2,
        Level::Autonomous => 3,
    }
}

fn level_from(code: u8) -> Result<Level, DecodeError> {
    Ok(match code {
        0 => Level::Global,
        1 => Level::Regional,
        2 => Level::Local,
        3 => Level::Autonomous,
        other => return Err(DecodeError::Malformed(format!("unknown level code {other}"))),
    })
}

/// Encodes a batch for the wire.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let versions: Vec<&RemoteVersion> = batch.versions.iter().collect();
    let header = Header {
        from: &batch.from,
        to: &batch.to,
        hello: &batch.hello,
        up_to: batch.up_to,
        repair: batch.repair,
    };
    encode_parts(&header, &versions)
}

/// A batch's fields but its versions, borrowed.
pub struct Header<'a> {
    pub from: &'a SiteId,
    pub to: &'a SiteId,
    pub hello: &'a Hello,
    pub up_to: u64,
    pub repair: bool,
}

/// Encodes the batch of `header` and `versions`, the same bytes as [`encode`] of the owned
/// batch.
pub fn encode_parts(header: &Header<'_>, versions: &[&RemoteVersion]) -> Vec<u8> {
    encode_with(header, &[encode_versions(versions)])
}

/// Consecutive versions of a batch encoded on their own: one zstd frame of their postcard
/// encodings, one after the other. A batch's body is its header, then one or more of these
/// ([`encode_with`]); links that send the same versions share them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EncodedVersions {
    count: usize,
    frame: Arc<[u8]>,
}

impl EncodedVersions {
    /// How many versions it holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Its encoded size in bytes.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether it holds no versions.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Encodes `versions` as a part of a batch's body. They are serialized straight from where
/// they are (the borrowed `WireVersionRef`), into a buffer sized for them, and compressed by
/// this thread's compressor, which keeps its working memory from one batch to the next.
pub fn encode_versions(versions: &[&RemoteVersion]) -> EncodedVersions {
    let estimate: usize = versions.iter().map(|v| v.spec.as_str().len() + WIRE_VERSION_OVERHEAD).sum();
    let mut raw = Vec::with_capacity(estimate);
    for version in versions {
        // Serializing plain structs of strings and integers into a Vec cannot fail; an element
        // of a postcard sequence is written as it would be alone.
        raw = postcard::to_extend(&WireVersionRef::of(version), raw).unwrap_or_default();
    }
    let mut frame = Vec::new();
    if !versions.is_empty() {
        compress_into(&raw, &mut frame);
    }
    EncodedVersions { count: versions.len(), frame: frame.into() }
}

/// The body of the batch of `header` and the already encoded `parts` of its versions, in
/// order: the format's 4 bytes, a frame of the header's fields and the number of versions,
/// then each part's frame. Decompressed one after the other, the frames are the postcard
/// encoding of the whole batch (postcard writes a struct as its fields in order, the versions
/// last, and a sequence as its length, then its elements), so `decode` reads them as it reads
/// a batch compressed in one frame.
pub fn encode_with(header: &Header<'_>, parts: &[EncodedVersions]) -> Vec<u8> {
    let scopes: Vec<String> = header.hello.scopes.iter().map(ToString::to_string).collect();
    let wire = WireHeaderRef {
        from: header.from.as_str(),
        to: header.to.as_str(),
        hello: WireHelloRef {
            site: header.hello.site.as_str(),
            scope: header.hello.scope.as_str(),
            level: level_code(header.hello.level),
            scopes: &scopes,
            sites: &header.hello.sites,
        },
        up_to: header.up_to,
        repair: header.repair,
        count: parts.iter().map(|p| p.count).sum(),
    };
    let raw = postcard::to_extend(&wire, Vec::with_capacity(1024)).unwrap_or_default();
    let parts_len: usize = parts.iter().map(|p| p.frame.len()).sum();
    let mut out = Vec::with_capacity(4 + zstd::zstd_safe::compress_bound(raw.len()) + parts_len);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_V1);
    compress_into(&raw, &mut out);
    for part in parts {
        out.extend_from_slice(&part.frame);
    }
    out
}

/// Bytes a version takes on the wire besides its spec, for sizing the encoding buffer: key,
/// timestamps, origin, a short vector, author, hash and a few labels.
const WIRE_VERSION_OVERHEAD: usize = 256;

thread_local! {
    /// Each thread's zstd compressor: a new one allocates (and the kernel zeroes) about a
    /// megabyte of working memory, for every batch.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Appends `raw` to `out` as one zstd frame at [`ZSTD_LEVEL`].
fn compress_into(raw: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    let mut cursor = std::io::Cursor::new(std::mem::take(out));
    cursor.set_position(start as u64);
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        // The buffer holds the bound of the compressed size, so compressing cannot run out.
        cell.as_mut().map(|c| c.compress_to_buffer(raw, &mut cursor))
    });
    *out = cursor.into_inner();
    if !matches!(compressed, Some(Ok(_))) {
        // Not reached with a buffer of the bound's size; a fresh compressor says why if it is.
        out.truncate(start);
        out.extend_from_slice(&zstd::bulk::compress(raw, ZSTD_LEVEL).unwrap_or_default());
    }
}

/// The decompressed size the frames of `compressed` claim, in total; frames that do not say
/// theirs count nothing. Reads at most [`MAX_SIZED_FRAMES`] frame headers.
fn claimed_size(mut compressed: &[u8]) -> u64 {
    let mut total = 0u64;
    for _ in 0..MAX_SIZED_FRAMES {
        let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(compressed) else { break };
        let Ok(len) = zstd::zstd_safe::find_frame_compressed_size(compressed) else { break };
        total = total.saturating_add(size);
        match compressed.get(len..) {
            Some(rest) if !rest.is_empty() => compressed = rest,
            _ => break,
        }
    }
    total
}

/// The most frames whose claimed sizes are added up for the first allocation.
const MAX_SIZED_FRAMES: usize = 4;

/// Decompresses at most [`MAX_DECODED_BYTES`], allocating in proportion to what the input
/// really holds: a frame header may claim any size, so a claim is believed only up to
/// [`MAX_RATIO`] times the compressed size (beyond that the buffer grows as output arrives),
/// and the decoder's window is bounded by [`MAX_WINDOW_LOG`].
fn decompress(compressed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let failed = |e: std::io::Error| DecodeError::Decompress(e.to_string());
    let claimed = claimed_size(compressed);
    let believable = compressed.len().saturating_mul(MAX_RATIO).min(MAX_DECODED_BYTES);
    let mut raw = Vec::with_capacity(usize::try_from(claimed).unwrap_or(usize::MAX).min(believable));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(failed)?;
    decoder.window_log_max(MAX_WINDOW_LOG).map_err(failed)?;
    let limit = u64::try_from(MAX_DECODED_BYTES).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(limit).read_to_end(&mut raw).map_err(failed)?;
    if raw.len() > MAX_DECODED_BYTES {
        return Err(DecodeError::Decompress("the decompressed batch is larger than the limit".into()));
    }
    Ok(raw)
}

/// Decodes and validates a batch.
pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
    decode_raw(bytes).map(|(batch, _)| batch)
}

/// Decodes and validates a batch, as [`decode`], and keeps its versions as they arrived when
/// they are frames of their own after the batch's own fields (as [`encode_with`] writes them):
/// a site that sends the same versions on sends those bytes, which decode to what this site
/// decoded, instead of encoding them again.
pub fn decode_keeping_versions(bytes: &[u8]) -> Result<(Batch, Option<EncodedVersions>), DecodeError> {
    let (batch, raw) = decode_raw(bytes)?;
    if batch.versions.is_empty() {
        return Ok((batch, None));
    }
    let frames = &bytes[4..];
    // The first frame holds exactly the batch's fields and the versions' count, or its
    // versions are not apart.
    let first_len = zstd::zstd_safe::find_frame_compressed_size(frames).ok();
    let first_size = zstd::zstd_safe::get_frame_content_size(frames).ok().flatten();
    let head_len = postcard::take_from_bytes::<WireHead>(&raw).ok().map(|(_, rest)| raw.len() - rest.len());
    // Sent on under this site's header, the versions must still fit the limit a receiver
    // holds a batch to; half of it leaves the header room.
    let kept = match (first_len, first_size, head_len) {
        (Some(len), Some(size), Some(head))
            if u64::try_from(head).ok() == Some(size)
                && len < frames.len()
                && raw.len() - head <= MAX_DECODED_BYTES / 2 =>
        {
            Some(EncodedVersions { count: batch.versions.len(), frame: frames[len..].into() })
        }
        _ => None,
    };
    Ok((batch, kept))
}

/// [`WireBatch`] up to its versions, and their count: what the first frame of a batch written
/// by [`encode_with`] holds.
#[derive(Deserialize)]
struct WireHead {
    _from: String,
    _to: String,
    _hello: WireHello,
    _up_to: u64,
    _repair: bool,
    _count: usize,
}

fn decode_raw(bytes: &[u8]) -> Result<(Batch, Vec<u8>), DecodeError> {
    if bytes.len() < 4 || &bytes[..3] != MAGIC {
        return Err(DecodeError::BadHeader);
    }
    if bytes[3] != FORMAT_V1 {
        return Err(DecodeError::UnsupportedFormat(bytes[3]));
    }
    let raw = decompress(&bytes[4..])?;
    let wire: WireBatch = postcard::from_bytes(&raw).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if wire.versions.len() > MAX_VERSIONS {
        return Err(DecodeError::TooManyVersions(wire.versions.len()));
    }
    let id = |what: &str, s: &str| SiteId::new(s).map_err(|e| DecodeError::Malformed(format!("{what}: {e}")));
    let scope =
        |what: &str, s: &str| Scope::new(s).map_err(|e| DecodeError::Malformed(format!("{what}: {e}")));
    let hello = Hello {
        site: id("hello.site", &wire.hello.site)?,
        scope: scope("hello.scope", &wire.hello.scope)?,
        level: level_from(wire.hello.level)?,
        scopes: wire.hello.scopes.iter().map(|s| scope("hello.scopes", s)).collect::<Result<_, _>>()?,
        sites: wire.hello.sites,
    };
    if hello.sites.len() > MAX_SITES {
        return Err(DecodeError::Malformed(format!(
            "the hello lists {} sites; the limit is {MAX_SITES}",
            hello.sites.len()
        )));
    }
    let mut versions = Vec::with_capacity(wire.versions.len());
    for (index, w) in wire.versions.into_iter().enumerate() {
        versions.push(version_from_wire(w).map_err(|reason| DecodeError::BadVersion { index, reason })?);
    }
    let batch = Batch {
        from: id("from", &wire.from)?,
        to: id("to", &wire.to)?,
        hello,
        up_to: wire.up_to,
        repair: wire.repair,
        versions,
    };
    Ok((batch, raw))
}

fn version_from_wire(w: WireVersion) -> Result<RemoteVersion, String> {
    let key = ObjectKey::new(
        w.kind.parse().map_err(|e: model::IdError| e.to_string())?,
        Scope::new(w.scope).map_err(|e| e.to_string())?,
        ObjectName::new(w.name).map_err(|e| e.to_string())?,
    );
    let origin = SiteId::new(w.origin).map_err(|e| e.to_string())?;
    let vv =
        w.vv.into_iter()
            .map(|(site, counter)| SiteId::new(site).map(|s| (s, counter)).map_err(|e| e.to_string()))
            .collect::<Result<VersionVector, String>>()?;
    let labels: BTreeMap<String, String> = w.labels.into_iter().collect();
    // Kept as received: the hash binds these bytes, and they are stored and sent on unchanged.
    let spec = SpecText::parse(w.spec).map_err(|e| format!("spec is not JSON: {e}"))?;
    let Ok(claimed) = <[u8; 32]>::try_from(w.content_hash.as_slice()) else {
        return Err(format!("the content hash is {} bytes, not 32", w.content_hash.len()));
    };
    let actual = ContentHash::digest_of_text(&key, &model::labels_text(&labels), spec.as_str(), w.deleted);
    if claimed != actual {
        return Err(format!("{key}: the content does not match its hash"));
    }
    if w.author.len() > 256 {
        return Err("the author is longer than 256 bytes".into());
    }
    Ok(RemoteVersion {
        key,
        version: Version {
            hlc: Hlc::new(w.wall_ms, w.logical),
            origin,
            vv,
            author: w.author,
            content_hash: ContentHash::from_digest(&claimed),
            deleted: w.deleted,
        },
        labels,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Kind;

    fn sample() -> Batch {
        let key =
            ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("baseline").unwrap());
        let labels = BTreeMap::from([("team".to_owned(), "sec".to_owned())]);
        let spec = serde_json::json!({"rules": [1, 2, {"x": null}]});
        let origin = SiteId::new("global-control").unwrap();
        let mut vv = VersionVector::new();
        vv.increment(&origin);
        Batch {
            from: origin.clone(),
            to: SiteId::new("region-a-control").unwrap(),
            hello: Hello {
                site: origin.clone(),
                scope: Scope::new("global").unwrap(),
                level: Level::Global,
                scopes: BTreeSet::from([Scope::new("global").unwrap()]),
                sites: vec![SiteCard {
                    id: SiteId::new("global-control").unwrap(),
                    scope: Scope::new("global").unwrap(),
                    parent: None,
                    level: Level::Global,
                    autonomy: model::Autonomy::Full,
                    can_operate_isolated: true,
                    can_modify_policies: true,
                    can_deploy_versions: true,
                    strategy: model::Strategy::LastWriteWins,
                }],
            },
            up_to: 42,
            repair: false,
            versions: vec![RemoteVersion {
                version: Version {
                    hlc: Hlc::new(1_764_000_000_000, 3),
                    origin,
                    vv,
                    author: "alice".into(),
                    content_hash: ContentHash::of(&key, &labels, &spec, false),
                    deleted: false,
                },
                key,
                labels,
                spec: SpecText::of(&spec),
            }],
        }
    }

    /// `version` with one more label, and the content hash that goes with it.
    fn labelled(version: &RemoteVersion, label: &str, value: &str) -> RemoteVersion {
        let mut more = version.clone();
        more.labels.insert(label.into(), value.into());
        more.version.content_hash = ContentHash::of_text(
            &more.key,
            &model::labels_text(&more.labels),
            more.spec.as_str(),
            more.version.deleted,
        );
        more
    }

    #[test]
    fn round_trips() {
        let batch = sample();
        assert_eq!(decode(&encode(&batch)).unwrap(), batch);
    }

    /// The borrowed form `encode` serializes writes the same bytes as the owned [`WireBatch`]
    /// that `decode` reads, with several versions, labels and vector entries, and a batch
    /// encoded twice on one thread (its compressor reused) is the same both times.
    #[test]
    fn the_borrowed_encoding_is_the_wire_format() {
        let mut batch = sample();
        let mut second = labelled(&batch.versions[0], "zone", "b1");
        second.version.vv.increment(&SiteId::new("region-a-control").unwrap());
        batch.versions.push(second);
        let owned = WireBatch {
            from: batch.from.to_string(),
            to: batch.to.to_string(),
            hello: WireHello {
                site: batch.hello.site.to_string(),
                scope: batch.hello.scope.to_string(),
                level: level_code(batch.hello.level),
                scopes: batch.hello.scopes.iter().map(ToString::to_string).collect(),
                sites: batch.hello.sites.clone(),
            },
            up_to: batch.up_to,
            repair: batch.repair,
            versions: batch
                .versions
                .iter()
                .map(|v| WireVersion {
                    kind: v.key.kind.to_string(),
                    scope: v.key.scope.to_string(),
                    name: v.key.name.to_string(),
                    wall_ms: v.version.hlc.wall_ms,
                    logical: v.version.hlc.logical,
                    origin: v.version.origin.to_string(),
                    vv: v.version.vv.entries().map(|(s, c)| (s.to_string(), c)).collect(),
                    author: v.version.author.clone(),
                    content_hash: hex::decode(v.version.content_hash.as_str()).unwrap(),
                    deleted: v.version.deleted,
                    labels: v.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    spec: v.spec.as_str().to_owned(),
                })
                .collect(),
        };
        let encoded = encode(&batch);
        let raw = decompress(&encoded[4..]).unwrap();
        assert_eq!(raw, postcard::to_stdvec(&owned).unwrap());
        assert_eq!(encode(&batch), encoded);
        assert_eq!(decode(&encoded).unwrap(), batch);
    }

    /// A batch compressed in one frame and in several (its own fields, then its versions in
    /// parts) decodes to the same batch, and the first allocation holds what the frames claim.
    /// Parts encoded once arrive under each link's own header, in any split.
    #[test]
    fn one_frame_or_several_decode_alike_and_links_share_the_parts() {
        let mut batch = sample();
        for i in 0..4 {
            let more = labelled(&batch.versions[0], "n", &i.to_string());
            batch.versions.push(more);
        }
        let several = encode(&batch);
        let raw = decompress(&several[4..]).unwrap();
        assert_eq!(claimed_size(&several[4..]), raw.len() as u64);
        let mut one = b"SXB\x01".to_vec();
        one.extend(zstd::bulk::compress(&raw, ZSTD_LEVEL).unwrap());
        assert_eq!(decode(&one).unwrap(), batch);
        assert_eq!(decode(&several).unwrap(), batch);

        let versions: Vec<&RemoteVersion> = batch.versions.iter().collect();
        let (front, back) = (encode_versions(&versions[..2]), encode_versions(&versions[2..]));
        let other = SiteId::new("region-b-control").unwrap();
        let header = Header { from: &batch.from, to: &other, hello: &batch.hello, up_to: 7, repair: false };
        let decoded = decode(&encode_with(&header, &[front.clone(), back])).unwrap();
        assert_eq!((&decoded.to, decoded.up_to), (&other, 7));
        assert_eq!(decoded.versions, batch.versions);
        let header =
            Header { from: &batch.from, to: &batch.to, hello: &batch.hello, up_to: 3, repair: false };
        let decoded = decode(&encode_with(&header, &[front, encode_versions(&[])])).unwrap();
        assert_eq!(decoded.versions, batch.versions[..2]);
        let decoded = decode(&encode_with(&header, &[])).unwrap();
        assert!(decoded.versions.is_empty());
    }

    /// A site that received a batch written in parts sends its versions on as they arrived,
    /// under a header of its own, and they decode to what it decoded; a batch compressed in
    /// one frame, or without versions, has none to keep.
    #[test]
    fn versions_kept_as_they_arrived_decode_as_they_did() {
        let mut batch = sample();
        let second = labelled(&batch.versions[0], "zone", "b1");
        batch.versions.push(second);
        let versions: Vec<&RemoteVersion> = batch.versions.iter().collect();
        let parts = [encode_versions(&versions[..1]), encode_versions(&versions[1..])];
        let header =
            Header { from: &batch.from, to: &batch.to, hello: &batch.hello, up_to: 42, repair: false };
        let (decoded, kept) = decode_keeping_versions(&encode_with(&header, &parts)).unwrap();
        assert_eq!(decoded, batch);
        let kept = kept.expect("the versions are frames of their own");
        assert_eq!(kept.count(), 2);

        let (region, edge) = (SiteId::new("region-a-control").unwrap(), SiteId::new("edge-zone-a1").unwrap());
        let mut hello = batch.hello.clone();
        hello.site = region.clone();
        let on = Header { from: &region, to: &edge, hello: &hello, up_to: 9, repair: false };
        let forwarded = decode(&encode_with(&on, &[kept])).unwrap();
        assert_eq!((&forwarded.from, &forwarded.to, forwarded.up_to), (&region, &edge, 9));
        assert_eq!(forwarded.versions, batch.versions);

        let raw = decompress(&encode(&batch)[4..]).unwrap();
        let mut one = b"SXB\x01".to_vec();
        one.extend(zstd::bulk::compress(&raw, ZSTD_LEVEL).unwrap());
        let (decoded, kept) = decode_keeping_versions(&one).unwrap();
        assert_eq!(decoded, batch);
        assert!(kept.is_none(), "one frame: the versions are not apart");
        // Bytes after the versions, which decoding ignores, count against the limit the next
        // site holds the batch to: too many, and the versions are encoded again instead.
        let (_, rest) = postcard::take_from_bytes::<WireHead>(&raw).unwrap();
        let head = raw.len() - rest.len();
        let mut padded = rest.to_vec();
        padded.resize(rest.len() + MAX_DECODED_BYTES / 2, 0);
        let mut body = b"SXB\x01".to_vec();
        body.extend(zstd::bulk::compress(&raw[..head], ZSTD_LEVEL).unwrap());
        body.extend(zstd::bulk::compress(&padded, ZSTD_LEVEL).unwrap());
        let (decoded, kept) = decode_keeping_versions(&body).unwrap();
        assert_eq!(decoded, batch);
        assert!(kept.is_none(), "the versions and what follows them are over half the limit");

        batch.versions.clear();
        let (_, kept) = decode_keeping_versions(&encode(&batch)).unwrap();
        assert!(kept.is_none());
    }

    /// A number that serde_json's fast float parsing reads to a neighbour of the nearest
    /// double (here an integer beyond u64) must cross the wire unchanged, or the receiver's
    /// content hash differs and it refuses every batch carrying the version (the object
    /// document fuzz target found it: the spec did not survive being written back).
    #[test]
    fn a_spec_number_crosses_the_wire_unchanged() {
        for text in [
            r#"{"delayed": 10666666660000000000000011486264296503334228}"#,
            r#"{"delayed": 1.066666666e+43, "small": 0.30000000000000004, "tiny": 5e-324}"#,
        ] {
            let mut batch = sample();
            let version = &mut batch.versions[0];
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            version.spec = SpecText::of(&value);
            version.version.content_hash =
                ContentHash::of(&version.key, &version.labels, &value, version.version.deleted);
            assert_eq!(decode(&encode(&batch)).unwrap(), batch, "{text}");
        }
    }

    /// A spec is hashed, kept and relayed as the bytes its origin wrote: text that is JSON but
    /// not in the canonical form arrives unchanged, and its hash is checked over those bytes.
    #[test]
    fn a_spec_travels_as_the_bytes_its_origin_hashed() {
        let mut batch = sample();
        let version = &mut batch.versions[0];
        let text = "{ \"b\": 1.50, \"a\": [ ] }";
        version.spec = SpecText::parse(text.to_owned()).unwrap();
        version.version.content_hash = ContentHash::of_text(
            &version.key,
            &model::labels_text(&version.labels),
            text,
            version.version.deleted,
        );
        let decoded = decode(&encode(&batch)).unwrap();
        assert_eq!(decoded.versions[0].spec.as_str(), text);
        assert_eq!(decoded, batch);
    }

    #[test]
    fn refuses_garbage_and_tampering() {
        assert!(matches!(decode(b"hello"), Err(DecodeError::BadHeader)));
        assert!(matches!(decode(b"SXB\x09rest"), Err(DecodeError::UnsupportedFormat(9))));
        assert!(matches!(decode(b"SXB\x01not zstd"), Err(DecodeError::Decompress(_))));
        let mut tampered = sample();
        tampered.versions[0].spec = SpecText::of(&serde_json::json!({"rules": "changed"}));
        let err = decode(&encode(&tampered)).unwrap_err().to_string();
        assert!(err.contains("does not match its hash"), "{err}");
    }

    /// A frame that does not say its size is decompressed into a buffer that grows with the
    /// output, not into one of the largest size allowed (the fuzzer's malloc limit found a
    /// 64 MiB allocation for every such input).
    #[test]
    fn decompressing_reserves_what_the_input_holds_not_the_limit() {
        let raw = vec![7u8; 1000];
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut encoder, &raw).unwrap();
        let unsized_frame = encoder.finish().unwrap();
        let sized_frame = zstd::bulk::compress(&raw, ZSTD_LEVEL).unwrap();
        for frame in [unsized_frame, sized_frame] {
            let out = decompress(&frame).unwrap();
            assert_eq!(out, raw);
            assert!(out.capacity() < 64 * 1024, "{} bytes reserved", out.capacity());
        }
    }

    #[test]
    fn a_batch_larger_than_the_limit_is_refused() {
        let zeros = vec![0u8; MAX_DECODED_BYTES + 1];
        let compressed = zstd::bulk::compress(&zeros, ZSTD_LEVEL).unwrap();
        let err = decompress(&compressed).unwrap_err().to_string();
        assert!(err.contains("larger than the limit"), "{err}");
    }

    #[test]
    fn a_thousand_similar_versions_compress_well() {
        let mut batch = sample();
        let one = batch.versions[0].clone();
        batch.versions = (0..1000).map(|_| one.clone()).collect();
        let encoded = encode(&batch);
        assert!(encoded.len() < 20_000, "{} bytes", encoded.len());
    }

    proptest::proptest! {
        /// Any bytes after a valid header decode to an error or a batch, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut bytes = b"SXB\x01".to_vec();
            bytes.extend(tail);
            let _ = decode(&bytes);
        }
    }
}
