//! A federation file: the whole tree of sites (the design's Federation Model) in one file, for
//! `souverix demo` and for tests.
//!
//! ```yaml
//! Federation:
//!   name: demo
//!   sites:
//!     global-control:             # the key is the site id
//!       Site: {trust_domain: global}
//!       Authority: {level: global, master: global-control}
//!     region-a-control:           # its documents are those of a site file
//!       Authority:
//!         level: regional
//!         region: region-a
//!         sync: {upstream: global-control, frequency: 15s, mode: continuous}
//! ```
//!
//! Each entry is read exactly like a site file, and its errors name the full path
//! (`Federation.sites.region-a-control.Authority.sync.mode`). Then the tree is checked: exactly
//! one global site at the root, every other site names an existing parent, no cycles, one
//! site per scope, and downstream targets (when written) are exactly the children. Addresses
//! and data directories are not part of the file: whoever runs the federation assigns them
//! ([`FederationConfig::site_configs_for_run`]).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use model::{Level, SiteId};
use serde_yaml_ng::{Mapping, Value};

use crate::error::{ConfigError, Location};
use crate::file::{RawFederationFile, RawFile};
use crate::locate::{FieldPath, Target};
use crate::site::{Doc, MAX_FILE_SIZE, SiteConfig, label_problem, read_bounded};

/// The design's Federation Model as a federation file, with frequencies scaled from minutes to
/// seconds so that a person watching sees changes move. Also `crates/config/demo-federation.yaml`.
pub const EMBEDDED_DEMO: &str = include_str!("../demo-federation.yaml");

/// How [`EMBEDDED_DEMO`] is named in its sites' `source`.
const EMBEDDED_DEMO_FILE: &str = "<embedded demo-federation.yaml>";

/// How many site ids a message lists before it stops.
const LISTED: usize = 8;

/// One site of a federation, placed in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedSite {
    /// The site as the federation file configures it; `source` is the federation file. A
    /// federation file does not set `listen`, `data_dir` or `peers`, so they hold their
    /// defaults here: [`FederationConfig::site_configs_for_run`] assigns them.
    pub config: SiteConfig,
    /// Its upstream; `None` for the global site only.
    pub parent: Option<SiteId>,
    /// The sites whose upstream it is, in file order: its downstream targets.
    pub children: Vec<SiteId>,
}

impl FederatedSite {
    pub fn id(&self) -> &SiteId {
        &self.config.site_id
    }
}

/// A federation: every site, resolved, in file order, arranged in a tree under the one global
/// site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    name: String,
    source: PathBuf,
    sites: Vec<FederatedSite>,
    index: BTreeMap<SiteId, usize>,
}

/// Why a federation cannot be laid out for a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationRunError {
    /// Some site's port (`base_port` plus its position) is 0 or past 65535.
    #[error(
        "base port {base_port} gives the {sites} sites the ports {base_port} to {last}, but ports run from 1 to 65535; choose a base port from 1 to {max}",
        last = usize::from(*base_port) + sites - 1,
        max = 65_536 - sites
    )]
    PortsOutOfRange { base_port: u16, sites: usize },
    /// The site asked for is not in the federation.
    #[error("`{site}` is not a site of federation `{federation}`; its sites are {known}")]
    UnknownSite { site: SiteId, federation: String, known: String },
}

impl FederationConfig {
    /// Reads and checks the federation file at `path`.
    pub fn load(path: &Path) -> Result<FederationConfig, ConfigError> {
        let text = read_bounded(path)?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, path, base_dir)
    }

    /// Reads and checks a federation `text`. `file` names it in error messages and in every
    /// site's `source`; `base_dir` is what the sites' default data directories are resolved
    /// against (a run assigns its own: see [`FederationConfig::site_configs_for_run`]).
    pub fn parse(
        text: &str,
        file: impl AsRef<Path>,
        base_dir: &Path,
    ) -> Result<FederationConfig, ConfigError> {
        let file = file.as_ref();
        if text.len() > MAX_FILE_SIZE {
            return Err(ConfigError::TooLarge { file: file.to_owned(), limit: MAX_FILE_SIZE });
        }
        let doc = Doc::new(text, file);
        let value: Value = serde_yaml_ng::from_str(text).map_err(|err| doc.syntax_error(&err))?;
        let value = match value {
            // An empty file: serde then says that `Federation` is missing.
            Value::Null => Value::Mapping(Mapping::new()),
            Value::Mapping(_) => value,
            _ => {
                return Err(ConfigError::Syntax {
                    file: file.to_owned(),
                    at: Location::START,
                    message: "a federation file is a YAML mapping with one document, `Federation:`, holding `name:` and `sites:`; this file holds something else".to_owned(),
                });
            }
        };
        let raw: RawFederationFile =
            serde_path_to_error::deserialize(value).map_err(|err| doc.serde_error(&err))?;
        let name = raw.federation.name;
        if let Some(problem) = label_problem(&name) {
            return Err(doc.at(
                &["Federation", "name"],
                Target::Value,
                format!(
                    "`{name}` is not a federation name: {problem}; use lowercase letters, digits and `-`, such as `demo`"
                ),
            ));
        }
        let entries = raw
            .federation
            .sites
            .into_iter()
            .map(|(key, value)| read_entry(text, file, key, value, base_dir))
            .collect::<Result<Vec<_>, _>>()?;
        let sites = place(&doc, entries)?;
        let index = sites.iter().enumerate().map(|(i, site)| (site.id().clone(), i)).collect();
        Ok(FederationConfig { name, source: file.to_owned(), sites, index })
    }

    /// [`EMBEDDED_DEMO`], the design's seven sites: `global-control`; `region-a-control` with
    /// `edge-zone-a1` and `edge-zone-a2`; `region-b-control` with `edge-zone-b1`; `edge-zone-c`.
    pub fn embedded_demo() -> FederationConfig {
        Self::parse(EMBEDDED_DEMO, EMBEDDED_DEMO_FILE, Path::new(""))
            .expect("the embedded demo federation is valid")
    }

    /// `Federation.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Every site, in file order.
    pub fn sites(&self) -> &[FederatedSite] {
        &self.sites
    }

    pub fn get(&self, site: &SiteId) -> Option<&FederatedSite> {
        self.index.get(site).map(|&i| &self.sites[i])
    }

    /// The global site, at the root of the tree.
    pub fn root(&self) -> &FederatedSite {
        self.sites
            .iter()
            .find(|site| site.parent.is_none())
            .expect("a federation has a global site: parsing checks it")
    }

    /// The site's parent, its parent's parent, and so on up to the global site; empty for the
    /// global site and for a site that is not in the federation.
    pub fn ancestors(&self, site: &SiteId) -> Vec<SiteId> {
        let parent_of = |id: &SiteId| self.get(id).and_then(|s| s.parent.as_ref());
        // The tree has no cycles (parsing checks it); the bound only makes that visible.
        std::iter::successors(parent_of(site), |id| parent_of(id)).take(self.sites.len()).cloned().collect()
    }

    /// The site itself, then every site below it, depth first with children in file order;
    /// empty for a site that is not in the federation.
    pub fn subtree(&self, site: &SiteId) -> Vec<SiteId> {
        let mut found = Vec::new();
        let mut stack: Vec<&SiteId> = self.get(site).map(FederatedSite::id).into_iter().collect();
        while let Some(id) = stack.pop() {
            found.push(id.clone());
            if let Some(site) = self.get(id) {
                stack.extend(site.children.iter().rev());
            }
        }
        found
    }

    /// Every site's configuration for a run on this machine, in file order: site `i` listens
    /// on `127.0.0.1:<base_port + i>`, every site keeps its store in `data_dir` (the store of
    /// site `s` is `<data_dir>/<s>.sqlite3`), and `peers` holds the address of the site's
    /// parent and children.
    pub fn site_configs_for_run(
        &self,
        base_port: u16,
        data_dir: &Path,
    ) -> Result<Vec<SiteConfig>, FederationRunError> {
        let ports = self.ports(base_port)?;
        let url = |id: &SiteId| self.index.get(id).map(|&i| format!("http://127.0.0.1:{}", ports[i]));
        let configs = self.sites.iter().zip(&ports).map(|(site, &port)| {
            let mut config = site.config.clone();
            config.listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
            config.data_dir = data_dir.to_owned();
            config.peers = site
                .parent
                .iter()
                .chain(&site.children)
                .filter_map(|peer| Some((peer.clone(), url(peer)?)))
                .collect();
            config
        });
        Ok(configs.collect())
    }

    /// A site file for `site` as [`FederationConfig::site_configs_for_run`] lays it out, so
    /// that it can run on its own with `souverix serve --config <file>`. `SiteConfig::load`
    /// reads it back to the same configuration (apart from `source`) when `data_dir` is
    /// absolute; a relative one is resolved against the directory the file is saved in.
    pub fn render_site_file(
        &self,
        site: &SiteId,
        base_port: u16,
        data_dir: &Path,
    ) -> Result<String, FederationRunError> {
        let unknown = || FederationRunError::UnknownSite {
            site: site.clone(),
            federation: self.name.clone(),
            known: listed(self.sites.iter().map(FederatedSite::id)),
        };
        let i = *self.index.get(site).ok_or_else(unknown)?;
        let configs = self.site_configs_for_run(base_port, data_dir)?;
        let config = configs.get(i).ok_or_else(unknown)?;
        Ok(format!(
            "# Site `{site}` of federation `{}`, on its own; run it with\n#   souverix serve --config <this file>\n{}",
            self.name,
            config.to_yaml()
        ))
    }

    /// `base_port + i` for every site `i`, when they are all ports.
    fn ports(&self, base_port: u16) -> Result<Vec<u16>, FederationRunError> {
        (0..self.sites.len())
            .map(|i| u16::try_from(usize::from(base_port) + i).ok().filter(|&port| port != 0))
            .collect::<Option<Vec<u16>>>()
            .ok_or(FederationRunError::PortsOutOfRange { base_port, sites: self.sites.len() })
    }
}

/// One site entry, resolved but not yet placed in the tree.
struct Entry<'a> {
    doc: Doc<'a>,
    written: Written,
    config: SiteConfig,
}

/// Where an entry writes what the tree checks are about, for placing their errors.
struct Written {
    /// The field that names the parent.
    upstream: &'static [&'static str],
    /// Whether `SyncStrategy.downstream.targets` is written.
    targets: bool,
    /// The field the site's scope comes from (`Site.scope` even when absent and derived from
    /// the site id).
    scope: &'static [&'static str],
}

impl Written {
    fn of(raw: &RawFile) -> Self {
        let authority = raw.authority.as_ref();
        let strategy = raw.sync_strategy.as_ref();
        let in_authority = authority.and_then(|a| a.sync.as_ref()).is_some_and(|s| s.upstream.is_some());
        let in_strategy = strategy.and_then(|s| s.upstream.as_ref()).is_some_and(|u| u.target.is_some());
        let upstream: &'static [&'static str] = match (in_authority, in_strategy) {
            (false, true) => &["SyncStrategy", "upstream", "target"],
            _ => &["Authority", "sync", "upstream"],
        };
        let targets = strategy.and_then(|s| s.downstream.as_ref()).is_some_and(|d| d.targets.is_some());
        let regional = authority.is_some_and(|a| a.level == Level::Regional);
        let scope: &'static [&'static str] = if raw.site.as_ref().is_some_and(|s| s.scope.is_some()) {
            &["Site", "scope"]
        } else if regional && authority.is_some_and(|a| a.region.is_some()) {
            &["Authority", "region"]
        } else if regional && strategy.is_some_and(|s| s.region.is_some()) {
            &["SyncStrategy", "region"]
        } else {
            &["Site", "scope"]
        };
        Written { upstream, targets, scope }
    }
}

/// Reads the entry `key: value` of `Federation.sites` as a site file whose id is the key.
fn read_entry<'a>(
    text: &'a str,
    file: &'a Path,
    key: Value,
    value: Value,
    base_dir: &Path,
) -> Result<Entry<'a>, ConfigError> {
    let top = Doc::new(text, file);
    let sites = FieldPath::keys(&["Federation", "sites"]);
    let Value::String(key) = key else {
        let shown = serde_yaml_ng::to_string(&key).unwrap_or_default();
        return Err(top.error(
            &sites,
            Target::Key,
            format!(
                "the key `{}` is not a site id; every key under `sites` names a site, such as `edge-zone-a1` (quote one that is all digits)",
                shown.trim()
            ),
        ));
    };
    let path = sites.key(&key);
    let id = SiteId::new(key.as_str())
        .map_err(|err| top.error(&path, Target::Key, format!("the key names a site, but {err}")))?;
    let doc = Doc::nested(text, file, path.clone());
    let mut raw: RawFile = match value {
        Value::Null => RawFile::default(),
        Value::Mapping(_) => serde_path_to_error::deserialize(value).map_err(|err| doc.serde_error(&err))?,
        _ => {
            return Err(top.error(
                &path,
                Target::Value,
                "a site is a mapping with the documents `Site:`, `Authority:` and `SyncStrategy:`, as in a site file",
            ));
        }
    };

    if let Some(site) = &raw.site {
        let assigned = [
            (
                "listen",
                site.listen.is_some(),
                "the listen address is assigned when the federation runs (the base port plus the site's position in the file)",
            ),
            (
                "data_dir",
                site.data_dir.is_some(),
                "the data directory is chosen when the federation runs (each site's store is `<data dir>/<site id>.sqlite3`)",
            ),
            (
                "peers",
                site.peers.is_some(),
                "peers' addresses are assigned when the federation runs (those of the site's parent and children)",
            ),
        ];
        if let Some((field, _, why)) = assigned.iter().find(|(_, written, _)| *written) {
            return Err(doc.at(
                &["Site", field],
                Target::Key,
                format!("{why}; remove it here, or run this site from its own site file"),
            ));
        }
    }

    // The key names the site; `Site.id` and `Authority.master` may repeat it.
    let site_id = raw.site.as_ref().and_then(|s| s.id.clone());
    let master = raw.authority.as_ref().and_then(|a| a.master.clone());
    let named = match (site_id, master) {
        (Some(named), _) => Some((named, ["Site", "id"])),
        (None, Some(named)) => Some((named, ["Authority", "master"])),
        (None, None) => None,
    };
    match named {
        Some((named, field)) if named != id => {
            return Err(doc.at(
                &field,
                Target::Value,
                format!(
                    "`{named}` differs from this entry's key `{id}` (line {}); the key names the site: make them equal, or remove `{}`",
                    doc.line(&[]),
                    field[1]
                ),
            ));
        }
        Some(_) => {}
        None => raw.site.get_or_insert_default().id = Some(id),
    }

    let written = Written::of(&raw);
    let config = doc.resolve(raw, base_dir)?;
    Ok(Entry { doc, written, config })
}

/// Checks that the entries form a tree under one global site and places them in it.
fn place(top: &Doc, entries: Vec<Entry>) -> Result<Vec<FederatedSite>, ConfigError> {
    let sites_path = FieldPath::keys(&["Federation", "sites"]);
    let index: BTreeMap<&SiteId, usize> =
        entries.iter().enumerate().map(|(i, entry)| (&entry.config.site_id, i)).collect();
    let all_sites = || listed(entries.iter().map(|e| &e.config.site_id));

    let globals: Vec<&Entry> = entries.iter().filter(|e| e.config.level == Level::Global).collect();
    match globals.as_slice() {
        [] if entries.is_empty() => {
            return Err(top.error(
                &sites_path,
                Target::Value,
                "lists no sites; add one entry per site, keyed by its site id, starting with the global site, such as `global-control:`",
            ));
        }
        [] => {
            return Err(top.error(
                &sites_path,
                Target::Key,
                "no site is global; a federation is a tree with exactly one global site at its root: give the top site `Authority: {level: global}`",
            ));
        }
        [_] => {}
        [first, second, ..] => {
            return Err(second.doc.at(
                &["Authority", "level"],
                Target::Value,
                format!(
                    "`{}` is global, and so is `{}` (line {}); a federation has exactly one global site at its root: make this one `regional` with an upstream, or remove it",
                    second.config.site_id,
                    first.config.site_id,
                    first.doc.line(&[])
                ),
            ));
        }
    }

    let mut parent_of: Vec<Option<usize>> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let config = &entry.config;
        let parent = match &config.upstream {
            None if config.level == Level::Global => None,
            None => {
                return Err(entry.doc.at(
                    &["Authority", "sync", "upstream"],
                    Target::Key,
                    format!(
                        "this {} site has no upstream; every site but the global one syncs with a parent: add `upstream:` with the parent's site id (or set `SyncStrategy.upstream.target`)",
                        config.level
                    ),
                ));
            }
            Some(up) => match index.get(&up.target) {
                Some(&parent) => Some(parent),
                None => {
                    return Err(entry.doc.at(
                        entry.written.upstream,
                        Target::Value,
                        format!(
                            "`{}` is not a site of this federation; name one of its sites ({}), or add an entry for it",
                            up.target,
                            all_sites()
                        ),
                    ));
                }
            },
        };
        parent_of.push(parent);
    }

    if let Some(cycle) = find_cycle(&parent_of) {
        let entry = &entries[cycle[0]];
        let chain: Vec<String> =
            cycle.iter().chain(&cycle[..1]).map(|&i| format!("`{}`", entries[i].config.site_id)).collect();
        return Err(entry.doc.at(
            entry.written.upstream,
            Target::Value,
            format!(
                "the upstreams form a cycle, {} (each arrow points to the upstream), so these sites never reach the global site; a federation is a tree under its global site: make one of them sync with a site outside the cycle",
                chain.join(" → ")
            ),
        ));
    }

    let mut scopes = BTreeMap::new();
    for entry in &entries {
        match scopes.entry(&entry.config.scope) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(entry);
            }
            MapEntry::Occupied(first) => {
                let first = first.get();
                return Err(entry.doc.at(
                    entry.written.scope,
                    Target::Value,
                    format!(
                        "`{}` is already the scope of `{}` (line {}); each site is master of record for its own scope: give this site another one with `Site.scope`",
                        entry.config.scope,
                        first.config.site_id,
                        first.doc.line(&[])
                    ),
                ));
            }
        }
    }

    let mut children: Vec<Vec<SiteId>> = vec![Vec::new(); entries.len()];
    for (i, parent) in parent_of.iter().enumerate() {
        if let Some(parent) = parent {
            children[*parent].push(entries[i].config.site_id.clone());
        }
    }

    for (entry, kids) in entries.iter().zip(&children) {
        if !entry.written.targets {
            continue;
        }
        let targets = &entry.config.downstream.targets;
        let fix = format!(
            "a site's downstream targets are its children ({}): list exactly them, or remove `targets` to default to them",
            listed(kids)
        );
        let targets_path = FieldPath::keys(&["SyncStrategy", "downstream", "targets"]);
        if let Some((t, target)) = targets.iter().enumerate().find(|(_, target)| !kids.contains(target)) {
            let why = match index.get(target).map(|&i| &entries[i].config.upstream) {
                None => format!("`{target}` is not a site of this federation"),
                Some(Some(up)) => {
                    format!("`{target}` is not a child of this site: its upstream is `{}`", up.target)
                }
                Some(None) => format!("`{target}` is the global site, which has no upstream"),
            };
            return Err(entry.doc.error(&targets_path.index(t), Target::Value, format!("{why}; {fix}")));
        }
        if let Some(missing) = kids.iter().find(|kid| !targets.contains(kid)) {
            let line = index.get(missing).map_or(0, |&i| entries[i].doc.line(entries[i].written.upstream));
            return Err(entry.doc.error(
                &targets_path,
                Target::Value,
                format!("`{missing}` is missing, yet this site is its upstream (line {line}); {fix}"),
            ));
        }
    }

    let sites = entries
        .into_iter()
        .zip(children)
        .map(|(entry, children)| {
            let mut config = entry.config;
            if !entry.written.targets {
                config.downstream.targets = children.clone();
            }
            let parent = config.upstream.as_ref().map(|up| up.target.clone());
            FederatedSite { config, parent, children }
        })
        .collect();
    Ok(sites)
}

/// The sites of a cycle in the parent links, starting with the one first in the file and
/// following the links; `None` when every chain of parents ends.
fn find_cycle(parent_of: &[Option<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; parent_of.len()];
    for start in 0..parent_of.len() {
        let mut path = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            match marks[i] {
                Mark::Done => break,
                Mark::OnPath => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    let first =
                        cycle.iter().enumerate().min_by_key(|(_, site)| **site).map_or(0, |(pos, _)| pos);
                    cycle.rotate_left(first);
                    return Some(cycle);
                }
                Mark::New => {
                    marks[i] = Mark::OnPath;
                    path.push(i);
                    at = parent_of[i];
                }
            }
        }
        for i in path {
            marks[i] = Mark::Done;
        }
    }
    None
}

/// `` `a`, `b`, `c` `` (at most [`LISTED`], then `…`), or `none`.
fn listed<'a>(ids: impl IntoIterator<Item = &'a SiteId>) -> String {
    let mut names: Vec<String> = ids.into_iter().take(LISTED + 1).map(|id| format!("`{id}`")).collect();
    if names.is_empty() {
        return "none".to_owned();
    }
    if names.len() > LISTED {
        names[LISTED] = "…".to_owned();
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_and_starts_them_at_the_first_site_in_the_file() {
        assert_eq!(find_cycle(&[None, Some(0), Some(1)]), None);
        assert_eq!(find_cycle(&[None, Some(2), Some(3), Some(1)]), Some(vec![1, 2, 3]));
        assert_eq!(find_cycle(&[None, Some(0), Some(3), Some(2)]), Some(vec![2, 3]));
        assert_eq!(find_cycle(&[Some(0)]), Some(vec![0]));
    }

    #[test]
    fn lists_a_few_ids_then_stops() {
        let ids: Vec<SiteId> = (0..12).map(|i| SiteId::new(format!("s{i}")).expect("id")).collect();
        assert_eq!(listed(&ids[..2]), "`s0`, `s1`");
        assert_eq!(listed(&ids[..0]), "none");
        assert!(listed(&ids).ends_with("`s7`, …"), "{}", listed(&ids));
    }
}
