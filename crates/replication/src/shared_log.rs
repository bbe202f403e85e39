//! The change log as a site's links read it: once for all of them.
//!
//! Every link of a site walks the same log: a change from the parent goes down every child
//! link and is stepped over by the upstream one, a change from a child goes up and to no other
//! child. Read link by link, a site with three links reads every page of the log three times.
//! [`SharedLog`] keeps the latest stretch of the log in memory, read once by whichever link
//! reaches its end first; each link then picks what it carries (its scopes, nothing from its
//! peer) from the stretch, in log order. A link further behind than the stretch reads the log on
//! its own, as the only link of a site does. The site's commits hand the stretch the changes
//! they just made ([`SharedLog::committed`]): when those follow its end, the links send them
//! without the log being read back at all.
//!
//! The links encode from the stretch in parts ([`SharedLog::encode`]): a part one link encoded
//! is sent as it is by every other link whose batch starts with the same changes from the same
//! position, and a batch received whole hands over its versions as they arrived, so a site
//! encodes once what several links send and nothing of what it forwards.
//!
//! A batch taken from the stretch is exactly what the link's own read would have returned,
//! except that a version superseded since the stretch was read may still be in it: the peer
//! applies it and then the newer one, as it would if the two had been sent a moment apart.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use model::{Scope, SiteId};
use store::{LinkChange, LinkQuery, RemoteVersion, Store, StoreError};

use crate::codec::{self, EncodedVersions};
use crate::engine::lock;

/// The most changes the stretch holds.
const MAX_ROWS: usize = 8_192;
/// The most content bytes the stretch holds (it always keeps the latest read, however large).
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// The most times one link's read extends the stretch: a link that carries few of the changes
/// (an upstream link while the parent's changes stream down) steps over at most this many
/// reads' worth before it sends what it has.
const MAX_EXTENDS: usize = 8;
/// The most encoded parts of batches kept for the other links ([`SharedLog::encode`]): a few
/// for each link, as each may read one ahead while another is on the wire. They hold at most
/// [`MAX_BYTES`] too.
const MAX_ENCODINGS: usize = 16;

/// One change of the log, as a link sends it.
#[derive(Debug)]
pub(crate) struct Row {
    pub seq: u64,
    /// The neighbour it arrived from; `None` for a write made at this site.
    pub from: Option<SiteId>,
    pub version: RemoteVersion,
}

impl Row {
    fn of(mut change: LinkChange) -> Row {
        let from = change.from_site.take();
        Row { seq: change.seq, from, version: RemoteVersion::from(change) }
    }

    fn bytes(&self) -> usize {
        self.version.spec.as_str().len()
    }
}

/// What a link sends next: its versions in log order, the log position they bring the peer up
/// to, and whether the log may hold more after it.
#[derive(Debug)]
pub(crate) struct LinkRead {
    pub rows: Vec<Arc<Row>>,
    pub scanned_to: u64,
    pub more: bool,
}

/// The versions of `rows`, encoded as one part of a batch.
pub(crate) fn encode_rows(rows: &[Arc<Row>]) -> EncodedVersions {
    let versions: Vec<&RemoteVersion> = rows.iter().map(|r| &r.version).collect();
    codec::encode_versions(&versions)
}

/// Reads a link's next batch from the log on its own (`Store::changes_for_link`).
pub(crate) fn read_alone(store: &dyn Store, query: &LinkQuery, limit: usize) -> Result<LinkRead, StoreError> {
    let batch = store.changes_for_link(query, limit)?;
    let more = batch.changes.len() >= limit;
    Ok(LinkRead {
        rows: batch.changes.into_iter().map(|c| Arc::new(Row::of(c))).collect(),
        scanned_to: batch.scanned_to,
        more,
    })
}

/// Every change of the log with `lo < seq <= hi` as it was read, superseded ones left out, and
/// those no link carries (`unwanted`) perhaps too.
struct Stretch {
    unwanted: Unwanted,
    lo: u64,
    hi: u64,
    rows: VecDeque<Arc<Row>>,
    bytes: usize,
    /// The last read stopped at its limit: the log may hold more after `hi`.
    more: bool,
}

impl Stretch {
    fn starting_at(at: u64, unwanted: &Unwanted) -> Stretch {
        Stretch { unwanted: unwanted.clone(), lo: at, hi: at, rows: VecDeque::new(), bytes: 0, more: true }
    }

    /// Reads the next `limit` changes after `hi` from the log, and forgets the oldest beyond
    /// the bounds (never those just read).
    fn extend(&mut self, store: &dyn Store, site: &SiteId, limit: usize) -> Result<(), StoreError> {
        // No change arrives from this site itself: naming it as the peer leaves none out.
        let query = LinkQuery { after: self.hi, peer: site.clone(), scopes: None };
        let batch = store.changes_for_links(&query, &self.unwanted, limit)?;
        let read = batch.changes.len();
        self.more = read >= limit;
        for change in batch.changes {
            let row = Row::of(change);
            self.bytes += row.bytes();
            self.rows.push_back(Arc::new(row));
        }
        self.hi = self.hi.max(batch.scanned_to);
        while self.rows.len() > read && (self.rows.len() > MAX_ROWS || self.bytes > MAX_BYTES) {
            if let Some(old) = self.rows.pop_front() {
                self.bytes -= old.bytes();
                self.lo = old.seq;
            }
        }
        Ok(())
    }
}

impl Stretch {
    /// Appends the changes a commit just made, `rows` in log order, if they are the next ones
    /// after `hi` with no gap (no other commit came between), and returns them as appended;
    /// otherwise leaves the stretch as it is, for the next read of the log to find them. Whether
    /// taken or not, the stretch stays what it promises: every change after `lo` up to `hi`.
    fn append(&mut self, rows: Vec<Row>) -> Option<Vec<Arc<Row>>> {
        let follows =
            rows.iter().try_fold(self.hi, |at, row| (at.checked_add(1) == Some(row.seq)).then_some(row.seq));
        let hi = follows.filter(|_| !rows.is_empty())?;
        let added: Vec<Arc<Row>> = rows.into_iter().map(Arc::new).collect();
        for row in &added {
            self.bytes += row.bytes();
            self.rows.push_back(row.clone());
        }
        self.hi = hi;
        while self.rows.len() > added.len() && (self.rows.len() > MAX_ROWS || self.bytes > MAX_BYTES) {
            if let Some(old) = self.rows.pop_front() {
                self.bytes -= old.bytes();
                self.lo = old.seq;
            }
        }
        Some(added)
    }
}

/// Changes from these peers in these scopes, which none of a site's links carries.
pub(crate) type Unwanted = Vec<(SiteId, BTreeSet<Scope>)>;

/// The stretch of the log a site's links share, and the batches they encoded from it. Cheap to
/// clone.
#[derive(Clone, Default)]
pub(crate) struct SharedLog {
    stretch: Arc<Mutex<Option<Stretch>>>,
    encodings: Arc<Mutex<VecDeque<Encoding>>>,
}

/// A part of a batch one link took from the stretch and encoded: the versions of `rows`, every
/// change it sends with `after < seq <= scanned_to`.
struct Encoding {
    after: u64,
    scanned_to: u64,
    rows: Vec<Arc<Row>>,
    versions: EncodedVersions,
    /// What it holds: its frame and its rows' contents (which it may keep after the stretch
    /// has forgotten them).
    bytes: usize,
}

impl Encoding {
    fn new(after: u64, scanned_to: u64, rows: Vec<Arc<Row>>, versions: EncodedVersions) -> Encoding {
        let bytes = versions.len() + rows.iter().map(|r| r.bytes()).sum::<usize>();
        Encoding { after, scanned_to, rows, versions, bytes }
    }

    /// Whether a link that sends `rows` next from `after`, up to `scanned_to`, sends exactly
    /// this part's rows first: the same changes of the same stretch, and none besides before
    /// the part's end.
    fn starts(&self, after: u64, rows: &[Arc<Row>], scanned_to: u64) -> bool {
        self.after == after
            && self.scanned_to <= scanned_to
            && !self.rows.is_empty()
            && self.rows.len() <= rows.len()
            && self.rows.iter().zip(rows).all(|(a, b)| Arc::ptr_eq(a, b))
            && rows.get(self.rows.len()).is_none_or(|next| next.seq > self.scanned_to)
    }
}

/// Which changes a link carries (the conditions of `Store::changes_for_link`).
pub(crate) struct LinkFilter<'a> {
    pub peer: &'a SiteId,
    /// `None` for every scope.
    pub scopes: Option<&'a BTreeSet<Scope>>,
}

impl LinkFilter<'_> {
    fn carries(&self, row: &Row) -> bool {
        row.from.as_ref() != Some(self.peer) && self.scopes.is_none_or(|s| s.contains(&row.version.key.scope))
    }
}

impl SharedLog {
    /// Whether changes starting at `seq` would follow the stretch's end now: worth building
    /// for [`SharedLog::committed`] (which checks again, as another commit may come between).
    pub(crate) fn follows_end(&self, seq: u64) -> bool {
        lock(&self.stretch).as_ref().is_some_and(|stretch| stretch.hi.checked_add(1) == Some(seq))
    }

    /// Hands the stretch the changes a commit of this site just made (`rows`, in log order:
    /// a received batch as it was decoded, local writes as they were recorded), so that the
    /// links send them without reading them back from the log. Taken only when they follow the
    /// stretch's end directly; returns whether they were. `encoded` is the rows' versions as
    /// they arrived, when they are all of a received batch in its order: the links that send
    /// them on send those bytes ([`SharedLog::encode`]).
    pub(crate) fn committed(&self, rows: Vec<Row>, encoded: Option<EncodedVersions>) -> bool {
        let Some(first) = rows.first() else { return false };
        let after = first.seq.saturating_sub(1);
        let added = match lock(&self.stretch).as_mut() {
            Some(stretch) => stretch.append(rows),
            None => None,
        };
        let Some(added) = added else { return false };
        if let (Some(versions), Some(last)) = (encoded.filter(|e| e.count() == added.len()), added.last()) {
            let scanned_to = last.seq;
            self.keep(Encoding::new(after, scanned_to, added, versions));
        }
        true
    }

    /// Keeps an encoded part for the links; the oldest beyond the bounds are forgotten.
    fn keep(&self, encoding: Encoding) {
        let mut encodings = lock(&self.encodings);
        encodings.push_back(encoding);
        // The newest is always kept, however large.
        while encodings.len() > 1
            && (encodings.len() > MAX_ENCODINGS
                || encodings.iter().map(|e| e.bytes).sum::<usize>() > MAX_BYTES)
        {
            encodings.pop_front();
        }
    }

    /// The next batch of a link after `after`, `limit` versions at most, from the shared
    /// stretch; `None` when the link is behind the stretch: it reads alone. `unwanted` is what
    /// no link of the site carries now: a stretch read with other conditions starts again.
    pub(crate) fn read(
        &self,
        store: &dyn Store,
        site: &SiteId,
        unwanted: &Unwanted,
        filter: &LinkFilter<'_>,
        after: u64,
        limit: usize,
    ) -> Result<Option<LinkRead>, StoreError> {
        let mut rows = Vec::new();
        let mut at = after;
        let mut extends = 0;
        loop {
            // The lock is taken for each step and released between them, so that a link
            // stepping over many changes it does not carry (an upstream link while its parent's
            // changes stream down) lets the others take theirs as soon as each read is in.
            let mut guard = lock(&self.stretch);
            let stretch = match guard.as_mut() {
                Some(s) if s.unwanted == *unwanted && at < s.lo && extends == 0 => return Ok(None),
                // Forgotten under this link while it was stepping: what it has so far.
                Some(s) if s.unwanted == *unwanted && at < s.lo => {
                    return Ok(Some(LinkRead { rows, scanned_to: at, more: true }));
                }
                Some(s) if s.unwanted == *unwanted && at <= s.hi => s,
                // Ahead of the stretch, the first read, or the links' scopes changed: it starts
                // again here.
                _ => guard.insert(Stretch::starting_at(at, unwanted)),
            };
            let start = stretch.rows.partition_point(|r| r.seq <= at);
            for row in stretch.rows.range(start..) {
                if rows.len() == limit {
                    // Full: the batch ends at its last change, and the log holds more.
                    return Ok(Some(LinkRead { rows, scanned_to: at, more: true }));
                }
                if filter.carries(row) {
                    rows.push(row.clone());
                }
                at = row.seq;
            }
            // Every change up to the end of the stretch is stepped over or taken.
            at = stretch.hi;
            if extends > 0 && !stretch.more {
                // The last read of the log, this link's or another's since, found its end here.
                return Ok(Some(LinkRead { rows, scanned_to: at, more: false }));
            }
            if rows.len() == limit || extends == MAX_EXTENDS {
                return Ok(Some(LinkRead { rows, scanned_to: at, more: true }));
            }
            // The end of the stretch: whatever was committed since is read once, here, for
            // every link that reaches it.
            stretch.extend(store, site, limit)?;
            extends += 1;
        }
    }
    /// The versions of `read`, a batch a link read from the stretch after `after`, encoded in
    /// parts: the leading ones as other links already encoded them (from the same position, the
    /// same changes and none besides up to each part's end), the rest here, kept for the others.
    /// Links that carry the same changes thus encode each once, however their batches split.
    pub(crate) fn encode(&self, after: u64, read: &LinkRead) -> Vec<EncodedVersions> {
        let (mut parts, mut at, mut taken) = (Vec::new(), after, 0);
        {
            let encodings = lock(&self.encodings);
            // Each part taken ends further on, so each is taken at most once.
            while let Some(done) =
                encodings.iter().rev().find(|e| e.starts(at, &read.rows[taken..], read.scanned_to))
            {
                parts.push(done.versions.clone());
                taken += done.rows.len();
                at = done.scanned_to;
            }
        }
        let rest = &read.rows[taken..];
        if !rest.is_empty() {
            let encoded = encode_rows(rest);
            self.keep(Encoding::new(at, read.scanned_to, rest.to_vec(), encoded.clone()));
            parts.push(encoded);
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::{ContentHash, Hlc, Kind, ObjectKey, ObjectName, SpecText, Version, VersionVector};
    use store::{LastWriteWins, LocalWrite, SqliteStore};

    use super::*;

    fn id(s: &str) -> SiteId {
        SiteId::new(s).expect("a site id")
    }

    fn scope(s: &str) -> Scope {
        Scope::new(s).expect("a scope")
    }

    fn key(scope_name: &str, name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Policy, scope(scope_name), ObjectName::new(name).expect("a name"))
    }

    /// A version of `key` as `origin` stamped it at `wall`.
    fn remote(key: &ObjectKey, origin: &SiteId, wall: u64) -> RemoteVersion {
        let labels = BTreeMap::new();
        let spec = serde_json::json!({ "wall": wall });
        let mut vv = VersionVector::new();
        vv.increment(origin);
        let version = Version {
            hlc: Hlc::new(wall, 0),
            origin: origin.clone(),
            vv,
            author: format!("operator@{origin}"),
            content_hash: ContentHash::of(key, &labels, &spec, false),
            deleted: false,
        };
        RemoteVersion { key: key.clone(), version, labels, spec: SpecText::of(&spec) }
    }

    /// A region's store holding, in a shuffled order: its own writes and the global site's in
    /// the ancestry, changes from each edge zone in its own scope (and a few from a2 in the
    /// region's), and the global site's writes into each edge zone's scope.
    fn region_log(dir: &std::path::Path) -> SqliteStore {
        let region = id("region-a-control");
        let store = SqliteStore::open(&dir.join("region.db"), region, 60_000).expect("the store opens");
        let (global, a1, a2) = (id("global-control"), id("edge-zone-a1"), id("edge-zone-a2"));
        let now = 1_700_000_000_000;
        for i in 0..120u64 {
            let name = format!("p-{i:03}");
            match i % 6 {
                0 | 3 => {
                    let v = remote(&key("global", &name), &global, now + i);
                    store.apply_remote(&global, &[v], now + i, &LastWriteWins).expect("applies");
                }
                1 => {
                    let v = remote(&key("edge-zone-a1", &name), &a1, now + i);
                    store.apply_remote(&a1, &[v], now + i, &LastWriteWins).expect("applies");
                }
                2 => {
                    let v = remote(&key("edge-zone-a2", &name), &global, now + i);
                    store.apply_remote(&global, &[v], now + i, &LastWriteWins).expect("applies");
                }
                4 => {
                    // Some in the region's scope: relayed up from a2, due to a1 but not back.
                    let at = if i % 12 == 4 { "region-a" } else { "edge-zone-a2" };
                    let v = remote(&key(at, &name), &a2, now + i);
                    store.apply_remote(&a2, &[v], now + i, &LastWriteWins).expect("applies");
                }
                _ => {
                    store
                        .write(LocalWrite {
                            key: key("region-a", &name),
                            labels: BTreeMap::new(),
                            spec: serde_json::json!({ "i": i }),
                            deleted: false,
                            author: "operator".into(),
                            precondition: None,
                            now_ms: now + i,
                        })
                        .expect("a local write");
                }
            }
        }
        store
    }

    /// The scopes a region's link to `edge` carries.
    fn link_scopes(edge: &str) -> BTreeSet<Scope> {
        [scope("global"), scope("region-a"), scope(edge)].into()
    }

    /// The region's three links: to its parent (every scope) and to its two edge zones.
    fn links() -> Vec<(SiteId, Option<BTreeSet<Scope>>)> {
        vec![
            (id("global-control"), None),
            (id("edge-zone-a1"), Some(link_scopes("edge-zone-a1"))),
            (id("edge-zone-a2"), Some(link_scopes("edge-zone-a2"))),
        ]
    }

    /// Every batch a link sends from `after` 0 until it is caught up: its sequence numbers.
    fn drain(mut next: impl FnMut(u64) -> LinkRead) -> Vec<Vec<u64>> {
        let (mut after, mut batches) = (0, Vec::new());
        for _ in 0..1_000 {
            let read = next(after);
            assert!(read.scanned_to >= after, "a batch never moves the cursor back");
            batches.push(read.rows.iter().map(|r| r.seq).collect());
            after = read.scanned_to;
            if !read.more {
                return batches;
            }
        }
        panic!("the link never caught up");
    }

    fn seqs(batches: &[Vec<u64>]) -> Vec<u64> {
        batches.iter().flatten().copied().collect()
    }

    #[test]
    fn links_sharing_the_log_are_sent_what_each_would_read_alone() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        for limit in [1, 4, 7, 50, 1_000] {
            let alone: Vec<Vec<u64>> = links()
                .iter()
                .map(|(peer, scopes)| {
                    seqs(&drain(|after| {
                        let query = LinkQuery { after, peer: peer.clone(), scopes: scopes.clone() };
                        read_alone(&store, &query, limit).expect("reads")
                    }))
                })
                .collect();
            // The three links take turns, each a batch at a time, on one shared log.
            let log = SharedLog::default();
            let links = links();
            let mut cursors = vec![(0u64, true, Vec::new()); links.len()];
            for _ in 0..10_000 {
                let mut any = false;
                for ((peer, scopes), (after, more, sent)) in links.iter().zip(cursors.iter_mut()) {
                    if !*more {
                        continue;
                    }
                    any = true;
                    let filter = LinkFilter { peer, scopes: scopes.as_ref() };
                    let read = log.read(&store, &site, &Vec::new(), &filter, *after, limit).expect("reads");
                    let read = read.expect("no link falls behind the stretch here");
                    assert!(read.rows.len() <= limit, "a batch over {limit}");
                    assert!(read.scanned_to >= *after);
                    sent.extend(read.rows.iter().map(|r| r.seq));
                    (*after, *more) = (read.scanned_to, read.more);
                }
                if !any {
                    break;
                }
            }
            for (((peer, _), (_, more, sent)), alone) in links.iter().zip(&cursors).zip(&alone) {
                assert!(!more, "{peer} caught up");
                assert_eq!(sent, alone, "{peer}, batches of {limit}");
                assert!(!sent.is_empty(), "{peer}");
            }
        }
    }

    #[test]
    fn a_link_is_never_sent_back_what_came_from_it_nor_a_scope_it_does_not_carry() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        let log = SharedLog::default();
        // a1 is sent a2's change in the region's scope; a2 the parent's changes in its own.
        let expected = [
            ("edge-zone-a1", "edge-zone-a2", BTreeSet::from(["global", "region-a"])),
            ("edge-zone-a2", "edge-zone-a1", BTreeSet::from(["edge-zone-a2", "global", "region-a"])),
        ];
        for (edge, other, carried) in expected {
            let (peer, scopes) = (id(edge), link_scopes(edge));
            let filter = LinkFilter { peer: &peer, scopes: Some(&scopes) };
            let read =
                log.read(&store, &site, &Vec::new(), &filter, 0, 1_000).expect("reads").expect("a stretch");
            assert!(!read.more);
            for row in &read.rows {
                assert_ne!(row.from.as_ref(), Some(&peer), "{edge}: {row:?}");
                assert_ne!(row.version.key.scope.as_str(), other, "{edge}: {row:?}");
            }
            let scopes: BTreeSet<&str> = read.rows.iter().map(|r| r.version.key.scope.as_str()).collect();
            assert_eq!(scopes, carried, "{edge}");
        }
        let a2 = id("edge-zone-a2");
        let filter = LinkFilter { peer: &id("edge-zone-a1"), scopes: Some(&link_scopes("edge-zone-a1")) };
        let read =
            log.read(&store, &site, &Vec::new(), &filter, 0, 1_000).expect("reads").expect("a stretch");
        assert!(read.rows.iter().any(|r| r.from.as_ref() == Some(&a2)), "a2's change in the region's scope");
    }

    /// The changes a child sent in its own scope, which only its link carries: what a site
    /// without a parent leaves out of the shared stretch.
    fn unwanted_at_the_top() -> Unwanted {
        vec![
            (id("edge-zone-a1"), [scope("edge-zone-a1")].into()),
            (id("edge-zone-a2"), [scope("edge-zone-a2")].into()),
        ]
    }

    #[test]
    fn the_store_leaves_out_what_no_link_carries_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        let query = LinkQuery { after: 0, peer: site.clone(), scopes: None };
        let all = store.changes_for_link(&query, 1_000).expect("reads");
        let some = store.changes_for_links(&query, &unwanted_at_the_top(), 1_000).expect("reads");
        let left_out = |c: &LinkChange| {
            let from = c.from_site.as_ref().map(SiteId::as_str);
            (from == Some("edge-zone-a1") && c.key.scope.as_str() == "edge-zone-a1")
                || (from == Some("edge-zone-a2") && c.key.scope.as_str() == "edge-zone-a2")
        };
        let expected: Vec<u64> = all.changes.iter().filter(|c| !left_out(c)).map(|c| c.seq).collect();
        let got: Vec<u64> = some.changes.iter().map(|c| c.seq).collect();
        assert_eq!(got, expected);
        assert!(got.len() < all.changes.len(), "some were left out");
        assert!(some.changes.iter().any(|c| c.from_site.is_none()), "this site's own writes stay");
        assert!(
            some.changes.iter().any(|c| c.key.scope.as_str() == "edge-zone-a2"),
            "the parent's changes in a child's scope stay"
        );
        let five = store.changes_for_links(&query, &unwanted_at_the_top(), 5).expect("reads");
        assert_eq!(five.changes.len(), 5, "the limit counts what is returned");
        assert_eq!(five.scanned_to, expected[4]);
    }

    #[test]
    fn children_of_a_site_without_a_parent_are_sent_what_each_would_read_alone() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        let children: Vec<(SiteId, BTreeSet<Scope>)> =
            ["edge-zone-a1", "edge-zone-a2"].into_iter().map(|edge| (id(edge), link_scopes(edge))).collect();
        let log = SharedLog::default();
        let unwanted = unwanted_at_the_top();
        for (peer, scopes) in &children {
            let alone = seqs(&drain(|after| {
                let query = LinkQuery { after, peer: peer.clone(), scopes: Some(scopes.clone()) };
                read_alone(&store, &query, 7).expect("reads")
            }));
            let filter = LinkFilter { peer, scopes: Some(scopes) };
            let shared = seqs(&drain(|after| {
                log.read(&store, &site, &unwanted, &filter, after, 7).expect("reads").expect("a stretch")
            }));
            assert_eq!(shared, alone, "{peer}");
        }
    }

    #[test]
    fn a_link_behind_the_shared_stretch_reads_alone() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        let (a1, a2) = (id("edge-zone-a1"), id("edge-zone-a2"));
        let log = SharedLog::default();
        let ahead = LinkFilter { peer: &a1, scopes: None };
        assert!(log.read(&store, &site, &Vec::new(), &ahead, 60, 10).expect("reads").is_some());
        let behind = LinkFilter { peer: &a2, scopes: None };
        assert!(log.read(&store, &site, &Vec::new(), &behind, 10, 10).expect("reads").is_none());
        let read =
            log.read(&store, &site, &Vec::new(), &behind, 60, 10).expect("reads").expect("from the stretch");
        assert!(read.rows.iter().all(|r| r.seq > 60));
    }

    #[test]
    fn a_change_committed_after_the_stretch_was_read_is_read_by_the_next_link_to_reach_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        let (a1, a2, global) = (id("edge-zone-a1"), id("edge-zone-a2"), id("global-control"));
        let log = SharedLog::default();
        let first = LinkFilter { peer: &a1, scopes: None };
        let before =
            log.read(&store, &site, &Vec::new(), &first, 0, 1_000).expect("reads").expect("a stretch");
        assert!(!before.more);
        let late = remote(&key("global", "late"), &global, 1_800_000_000_000);
        store
            .apply_remote(&global, std::slice::from_ref(&late), 1_800_000_000_000, &LastWriteWins)
            .expect("applies");
        let second = LinkFilter { peer: &a2, scopes: None };
        let after = log
            .read(&store, &site, &Vec::new(), &second, 0, 1_000)
            .expect("reads")
            .expect("from the stretch");
        assert!(before.rows.iter().all(|r| r.version.key != late.key));
        assert_eq!(after.rows.last().map(|r| r.version.key.clone()), Some(late.key));
        assert!(after.scanned_to > before.scanned_to);
    }

    /// What a batch applied at the region hands the stretch, as the engine does after a commit.
    fn apply_and_hand_over(
        store: &SqliteStore,
        log: &SharedLog,
        from: &SiteId,
        batch: &[RemoteVersion],
    ) -> bool {
        let report = store.apply_remote(from, batch, 1_800_000_000_000, &LastWriteWins).expect("applies");
        assert_eq!(report.logged.len(), batch.len());
        let rows = report
            .logged
            .iter()
            .map(|&(index, seq)| Row { seq, from: Some(from.clone()), version: batch[index].clone() })
            .collect();
        log.committed(rows, None)
    }

    #[test]
    fn changes_handed_over_by_a_commit_are_sent_as_the_log_would_send_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let site = id("region-a-control");
        let (global, a2) = (id("global-control"), id("edge-zone-a2"));
        let log = SharedLog::default();
        let fresh = |name: &str, wall: u64| remote(&key("global", name), &global, wall);
        assert!(
            !apply_and_hand_over(&store, &log, &global, &[fresh("before", 1_800_000_000_000)]),
            "no stretch yet: the first read of the log makes it"
        );
        let links = links();
        let cursors: Vec<u64> = links
            .iter()
            .map(|(peer, scopes)| {
                let filter = LinkFilter { peer, scopes: scopes.as_ref() };
                let read = log
                    .read(&store, &site, &Vec::new(), &filter, 0, 1_000)
                    .expect("reads")
                    .expect("a stretch");
                assert!(!read.more);
                read.scanned_to
            })
            .collect();

        // Three from the parent, then one from a2: each commit follows the stretch's end.
        let batch: Vec<RemoteVersion> =
            (0..3).map(|i| fresh(&format!("next-{i}"), 1_800_000_000_001 + i)).collect();
        assert!(apply_and_hand_over(&store, &log, &global, &batch), "the batch follows the stretch");
        let up = remote(&key("region-a", "from-a2"), &a2, 1_800_000_000_010);
        assert!(apply_and_hand_over(&store, &log, &a2, std::slice::from_ref(&up)));
        // A commit nobody hands over leaves a gap: the next one is left to the log.
        store
            .apply_remote(&global, &[fresh("unseen", 1_800_000_000_020)], 1_800_000_000_020, &LastWriteWins)
            .expect("applies");
        assert!(!apply_and_hand_over(&store, &log, &global, &[fresh("after-gap", 1_800_000_000_030)]));

        for ((peer, scopes), &after) in links.iter().zip(&cursors) {
            let filter = LinkFilter { peer, scopes: scopes.as_ref() };
            let shared = drain(|at| {
                log.read(&store, &site, &Vec::new(), &filter, at.max(after), 1_000)
                    .expect("reads")
                    .expect("a stretch")
            });
            let alone = drain(|at| {
                let query = LinkQuery { after: at.max(after), peer: peer.clone(), scopes: scopes.clone() };
                read_alone(&store, &query, 1_000).expect("reads")
            });
            assert_eq!(seqs(&shared), seqs(&alone), "{peer}");
            let names: Vec<String> = log
                .read(&store, &site, &Vec::new(), &filter, after, 1_000)
                .expect("reads")
                .expect("a stretch")
                .rows
                .iter()
                .map(|r| r.version.key.name.to_string())
                .collect();
            let expected: &[&str] = if peer == &global {
                &["from-a2"]
            } else if peer == &a2 {
                &["next-0", "next-1", "next-2", "unseen", "after-gap"]
            } else {
                &["next-0", "next-1", "next-2", "from-a2", "unseen", "after-gap"]
            };
            assert_eq!(names, expected, "{peer}");
        }
    }

    /// Reads a link's next batch from the stretch and encodes it, as the engine does.
    fn read_and_encode(
        store: &SqliteStore,
        log: &SharedLog,
        peer: &SiteId,
        after: u64,
    ) -> (LinkRead, Vec<EncodedVersions>) {
        let filter = LinkFilter { peer, scopes: None };
        let site = id("region-a-control");
        let read =
            log.read(store, &site, &Vec::new(), &filter, after, 1_000).expect("reads").expect("a stretch");
        let parts = log.encode(after, &read);
        (read, parts)
    }

    #[test]
    fn links_that_carry_the_same_changes_encode_them_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let (global, a1, a2, b1) = (id("global-control"), id("edge-zone-a1"), id("edge-zone-a2"), id("b1"));
        let log = SharedLog::default();
        let kept = || lock(&log.encodings).len();
        let (caught_up, _) = read_and_encode(&store, &log, &a2, 0);
        let (end, before) = (caught_up.scanned_to, kept());
        let fresh = |name: &str, origin: &SiteId, wall: u64| remote(&key("global", name), origin, wall);
        let apply = |v: RemoteVersion, origin: &SiteId| {
            store.apply_remote(origin, &[v], 1_800_000_000_000, &LastWriteWins).expect("applies");
        };
        for (i, origin) in [&global, &global, &a1, &global].into_iter().enumerate() {
            apply(fresh(&format!("new-{i}"), origin, 1_800_000_000_000 + i as u64), origin);
        }

        let (first, parts) = read_and_encode(&store, &log, &a2, end);
        assert_eq!((first.rows.len(), parts.len(), kept()), (4, 1, before + 1), "the first link encodes");
        // Committed after the first link read: the next link sends it too, encoded apart.
        let late = fresh("late", &global, 1_800_000_000_100);
        apply(late.clone(), &global);
        let (second, parts) = read_and_encode(&store, &log, &b1, end);
        assert_eq!(second.rows.len(), 5);
        assert_eq!(parts.iter().map(EncodedVersions::count).collect::<Vec<_>>(), [4, 1]);
        assert_eq!(kept(), before + 2, "the first four as the first link encoded them");
        let hello = crate::codec::Hello {
            site: global.clone(),
            scope: scope("global"),
            level: model::Level::Global,
            scopes: BTreeSet::new(),
            sites: Vec::new(),
        };
        let header =
            codec::Header { from: &global, to: &b1, hello: &hello, up_to: second.scanned_to, repair: false };
        let decoded = codec::decode(&codec::encode_with(&header, &parts)).expect("decodes");
        let sent: Vec<&RemoteVersion> = second.rows.iter().map(|r| &r.version).collect();
        assert_eq!(decoded.versions.iter().collect::<Vec<_>>(), sent);
        assert_eq!(decoded.up_to, second.scanned_to);

        let (next, parts) = read_and_encode(&store, &log, &a2, first.scanned_to);
        assert_eq!(next.rows.iter().map(|r| &r.version.key).collect::<Vec<_>>(), [&late.key]);
        assert_eq!((parts.len(), kept()), (1, before + 2), "the late one as the second link encoded it");

        // The link to a1 is not sent a1's own change back: its batch differs, and is its own.
        let (own, parts) = read_and_encode(&store, &log, &a1, end);
        assert_eq!(own.rows.len(), 4, "three of the four, and the late one");
        assert!(own.rows.iter().all(|r| r.from.as_ref() != Some(&a1)));
        assert_eq!((parts.len(), kept()), (1, before + 3));
    }

    #[test]
    fn a_batch_received_whole_is_sent_on_as_it_arrived() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = region_log(dir.path());
        let (global, a2, b1) = (id("global-control"), id("edge-zone-a2"), id("b1"));
        let log = SharedLog::default();
        let kept = || lock(&log.encodings).len();
        let (caught_up, _) = read_and_encode(&store, &log, &a2, 0);
        let end = caught_up.scanned_to;
        let batch: Vec<RemoteVersion> = (0..3)
            .map(|i| remote(&key("global", &format!("on-{i}")), &global, 1_800_000_000_000 + i))
            .collect();
        let arrived = codec::encode_versions(&batch.iter().collect::<Vec<_>>());
        let report = store.apply_remote(&global, &batch, 1_800_000_000_000, &LastWriteWins).expect("applies");
        let rows = report
            .logged
            .iter()
            .map(|&(index, seq)| Row { seq, from: Some(global.clone()), version: batch[index].clone() })
            .collect();
        assert!(log.committed(rows, Some(arrived)));
        let before = kept();
        let hello = codec::Hello {
            site: id("region-a-control"),
            scope: scope("region-a"),
            level: model::Level::Regional,
            scopes: BTreeSet::new(),
            sites: Vec::new(),
        };
        for peer in [&a2, &b1] {
            let (read, parts) = read_and_encode(&store, &log, peer, end);
            assert_eq!(
                (read.rows.len(), parts.len(), kept()),
                (3, 1, before),
                "{peer}: nothing encoded here"
            );
            let header = codec::Header {
                from: &hello.site,
                to: peer,
                hello: &hello,
                up_to: read.scanned_to,
                repair: false,
            };
            let decoded = codec::decode(&codec::encode_with(&header, &parts)).expect("decodes");
            assert_eq!(decoded.versions, batch, "{peer}");
        }
        // The link the batch came from is not sent it back.
        let (up, parts) = read_and_encode(&store, &log, &global, end);
        assert!(up.rows.is_empty() && parts.is_empty());
    }
}
