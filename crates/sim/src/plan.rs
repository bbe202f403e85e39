//! What a run will do, drawn from its seed before it starts: the client writes and the faults,
//! each at a simulated time in the fault phase. The plan is a pure function of the seed and
//! the topology, so it can be printed and replayed.

use model::{Kind, ObjectKey, ObjectName, Scope, SiteId};
use replication::Signal;

use crate::Params;
use crate::dice::Dice;
use crate::topology::Topology;

/// One client write (or delete) at a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSpec {
    pub no: u64,
    pub site: SiteId,
    pub key: ObjectKey,
    pub delete: bool,
    /// Read the current version first and write with it as the precondition.
    pub if_match: bool,
    /// How long the request and the answer take on the client's network.
    pub request_ms: u64,
    pub answer_ms: u64,
}

/// A kind of partition, for the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// One link, both ways.
    Link,
    /// One link, one way.
    OneWay,
    /// A region and its zones cut off from global.
    Subtree,
    /// Every link of one site.
    Site,
}

impl PartitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionKind::Link => "link",
            PartitionKind::OneWay => "one-way",
            PartitionKind::Subtree => "subtree",
            PartitionKind::Site => "site",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Write(WriteSpec),
    /// Messages from the first site to the second are dropped (on top of any other cut).
    Cut {
        kind: PartitionKind,
        pairs: Vec<(SiteId, SiteId)>,
    },
    Uncut {
        pairs: Vec<(SiteId, SiteId)>,
    },
    /// The site's process dies; `before_ack` marks a crash placed between a write's commit and
    /// its answer.
    Crash {
        site: SiteId,
        before_ack: bool,
    },
    Restart {
        site: SiteId,
    },
    /// The site's process dies just before its `after_calls`-th store call from now, wherever
    /// that falls, and stays down `down_ms`.
    ArmCrash {
        site: SiteId,
        after_calls: u64,
        down_ms: u64,
    },
    /// The site's clock runs `ms` ahead (or behind); `beyond` when that is more than a
    /// neighbour's maximum skew.
    Skew {
        site: SiteId,
        ms: i64,
        beyond: bool,
    },
    Signal {
        site: SiteId,
        peer: SiteId,
        signal: Signal,
    },
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The fault phase lasts this long; then everything heals.
    pub fault_ms: u64,
    pub loss_pm: u32,
    pub dup_pm: u32,
    pub delay_pm: u32,
    /// In time order.
    pub actions: Vec<(u64, Action)>,
}

impl Plan {
    /// `names` are the object names clients write (a few, so writes collide).
    pub fn random(dice: &mut Dice, topo: &Topology, params: &Params, names: &[ObjectName]) -> Plan {
        let fault_ms = params.fault_secs * 1000;
        let ids: Vec<SiteId> = topo.sites.keys().cloned().collect();
        let pick_site =
            |dice: &mut Dice| ids[usize::try_from(dice.below(ids.len() as u64)).unwrap_or(0)].clone();
        let mut actions: Vec<(u64, Action)> = Vec::new();
        let loss_pm = dice.pick(&[0, 0, 20, 100, 300]);
        let dup_pm = dice.pick(&[0, 50, 200]);
        let delay_pm = dice.pick(&[0, 50, 200]);

        // Client writes.
        let writes = dice.range(params.writes.0, params.writes.1);
        for no in 0..writes {
            let at = dice.below(fault_ms);
            let site = pick_site(dice);
            let spec = &topo.sites[&site];
            let scope = choose_scope(dice, topo, &site, &spec.scope);
            let kind = match dice.below(20) {
                0 => Kind::Release,
                1 => Kind::Rollout,
                _ => Kind::Policy,
            };
            let name = names[usize::try_from(dice.below(names.len() as u64)).unwrap_or(0)].clone();
            let key = ObjectKey::new(kind, scope, name);
            let write = WriteSpec {
                no,
                site: site.clone(),
                key,
                delete: dice.chance(150),
                if_match: dice.chance(250),
                request_ms: dice.range(1, 20),
                answer_ms: dice.range(2, 20),
            };
            if dice.chance(params.crash_before_ack_pm) {
                let crash_at = at + write.request_ms + write.answer_ms / 2;
                actions.push((crash_at, Action::Crash { site: site.clone(), before_ack: true }));
                let down = dice.pick(&[50, 1_000, 5_000]);
                actions.push((crash_at + down, Action::Restart { site: site.clone() }));
            }
            actions.push((at, Action::Write(write)));
        }

        // Partitions.
        let links: Vec<(SiteId, SiteId)> =
            topo.sites.values().filter_map(|s| s.parent.clone().map(|p| (s.id.clone(), p))).collect();
        for _ in 0..dice.below(params.max_partitions + 1) {
            let at = dice.below(fault_ms);
            let lasts = dice.pick(&[1_000, 5_000, 20_000, 60_000, 120_000]);
            let (kind, pairs) = match dice.below(10) {
                0..4 => {
                    let (a, b) = links[usize::try_from(dice.below(links.len() as u64)).unwrap_or(0)].clone();
                    (PartitionKind::Link, vec![(a.clone(), b.clone()), (b, a)])
                }
                4..6 => {
                    let (a, b) = links[usize::try_from(dice.below(links.len() as u64)).unwrap_or(0)].clone();
                    let pair = if dice.chance(500) { (a, b) } else { (b, a) };
                    (PartitionKind::OneWay, vec![pair])
                }
                6..8 => {
                    let regions: Vec<&SiteId> = topo
                        .sites
                        .values()
                        .filter(|s| s.card.level == model::Level::Regional)
                        .map(|s| &s.id)
                        .collect();
                    let region =
                        regions[usize::try_from(dice.below(regions.len() as u64)).unwrap_or(0)].clone();
                    let global = topo.sites[&region].parent.clone().unwrap_or_else(|| region.clone());
                    (PartitionKind::Subtree, vec![(region.clone(), global.clone()), (global, region)])
                }
                _ => {
                    let site = pick_site(dice);
                    let pairs = topo.sites[&site]
                        .engine
                        .links
                        .iter()
                        .flat_map(|l| [(site.clone(), l.peer.clone()), (l.peer.clone(), site.clone())])
                        .collect();
                    (PartitionKind::Site, pairs)
                }
            };
            actions.push((at, Action::Cut { kind, pairs: pairs.clone() }));
            actions.push((at + lasts, Action::Uncut { pairs }));
        }

        // Crashes at arbitrary times.
        for _ in 0..dice.below(params.max_crashes + 1) {
            let at = dice.below(fault_ms);
            let site = pick_site(dice);
            let down = dice.pick(&[100, 2_000, 10_000, 60_000]);
            if dice.chance(500) {
                actions.push((at, Action::ArmCrash { site, after_calls: dice.range(1, 40), down_ms: down }));
            } else {
                actions.push((at, Action::Crash { site: site.clone(), before_ack: false }));
                actions.push((at + down, Action::Restart { site }));
            }
        }

        // A site that joins late: down from the start, so its neighbours learn of it (and of
        // the scopes it holds) only when it comes up.
        if dice.chance(250) {
            let site = pick_site(dice);
            let after = dice.pick(&[5_000, 30_000, 90_000]);
            actions.push((0, Action::Crash { site: site.clone(), before_ack: false }));
            actions.push((after, Action::Restart { site }));
        }

        // Clock skew, within and beyond the maximum the neighbours allow.
        for _ in 0..dice.below(3) {
            let at = dice.below(fault_ms);
            let site = pick_site(dice);
            let spec = &topo.sites[&site];
            let bound = spec
                .engine
                .links
                .iter()
                .map(|l| topo.sites[&l.peer].max_skew_ms)
                .min()
                .unwrap_or(spec.max_skew_ms);
            let tenths = dice.pick(&[3, 9, 15, 30]);
            let magnitude = bound * tenths / 10;
            let ms = i64::try_from(magnitude).unwrap_or(i64::MAX);
            let ms = if dice.chance(300) { -ms } else { ms };
            let lasts = dice.pick(&[5_000, 30_000, 120_000]);
            actions.push((at, Action::Skew { site: site.clone(), ms, beyond: magnitude > bound }));
            actions.push((at + lasts, Action::Skew { site, ms: 0, beyond: false }));
        }

        // Connectivity signals: a link cut or metered by the connectivity manager.
        for _ in 0..dice.below(3) {
            let at = dice.below(fault_ms);
            let site = pick_site(dice);
            let links = &topo.sites[&site].engine.links;
            if links.is_empty() {
                continue;
            }
            let peer = links[usize::try_from(dice.below(links.len() as u64)).unwrap_or(0)].peer.clone();
            let signal = if dice.chance(700) { Signal::Down } else { Signal::Metered };
            let lasts = dice.pick(&[2_000, 20_000, 90_000]);
            actions.push((at, Action::Signal { site: site.clone(), peer: peer.clone(), signal }));
            actions.push((at + lasts, Action::Signal { site, peer, signal: Signal::Up }));
        }

        // Everything that would end after the fault phase ends with it (the heal).
        actions.retain(|(at, _)| *at < fault_ms);
        actions.sort_by_key(|(at, _)| *at);
        Plan { fault_ms, loss_pm, dup_pm, delay_pm, actions }
    }
}

/// A scope for a client at `site` to write: its own, a descendant's, an ancestor's (an
/// override, which its authority may refuse) or an unrelated one (always refused).
fn choose_scope(dice: &mut Dice, topo: &Topology, site: &SiteId, own: &Scope) -> Scope {
    let dir = &topo.directory;
    let ancestors = dir.ancestors(site);
    let descendants: Vec<&SiteId> = topo.sites.keys().filter(|id| dir.ancestors(id).contains(site)).collect();
    let unrelated: Vec<&SiteId> = topo
        .sites
        .keys()
        .filter(|id| *id != site && !ancestors.contains(id) && !descendants.contains(id))
        .collect();
    let scope_of = |id: &SiteId| topo.sites[id].scope.clone();
    let roll = dice.below(100);
    if roll < 25 && !descendants.is_empty() {
        return scope_of(descendants[usize::try_from(dice.below(descendants.len() as u64)).unwrap_or(0)]);
    }
    if roll < 45 && !ancestors.is_empty() {
        return scope_of(&ancestors[usize::try_from(dice.below(ancestors.len() as u64)).unwrap_or(0)]);
    }
    if roll < 50 && !unrelated.is_empty() {
        return scope_of(unrelated[usize::try_from(dice.below(unrelated.len() as u64)).unwrap_or(0)]);
    }
    own.clone()
}
