//! A random federation: one global site, 2–3 regions and 3–6 edge zones (some straight under
//! global), each with random sync settings (modes, frequencies, batch sizes), authority
//! (autonomy and its flags), conflict strategy, isolation threshold and maximum clock skew.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use config::SyncMode;
use model::{Autonomy, Directory, Level, Scope, SiteCard, SiteId, Strategy};
use replication::backoff::Backoff;
use replication::{Direction, EngineConfig, LinkConfig};

use crate::SimError;
use crate::dice::Dice;

/// One site of the simulated federation.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub id: SiteId,
    pub scope: Scope,
    pub parent: Option<SiteId>,
    pub card: SiteCard,
    pub engine: EngineConfig,
    /// Remote timestamps further ahead than this are refused (the store's bound).
    pub max_skew_ms: u64,
}

/// The whole federation.
#[derive(Debug, Clone)]
pub struct Topology {
    /// In id order.
    pub sites: BTreeMap<SiteId, SiteSpec>,
    /// Every site's card: the authority rules the checks apply.
    pub directory: Directory,
}

/// The address the simulated network knows a site by.
pub fn url_of(site: &SiteId) -> String {
    format!("sim://{site}")
}

struct LinkSettings {
    mode: SyncMode,
    frequency: Duration,
    batch_size: usize,
}

fn link_settings(dice: &mut Dice) -> LinkSettings {
    let mode = match dice.below(100) {
        0..40 => SyncMode::Continuous,
        40..75 => SyncMode::Push,
        _ => SyncMode::Opportunistic,
    };
    let seconds = match mode {
        SyncMode::Continuous => dice.pick(&[5, 15, 30, 60]),
        SyncMode::Push => dice.pick(&[1, 3, 10, 30]),
        SyncMode::Opportunistic => dice.pick(&[2, 5, 15, 45]),
    };
    LinkSettings {
        mode,
        frequency: Duration::from_secs(seconds),
        batch_size: dice.pick(&[1, 2, 3, 5, 10, 50, 500]),
    }
}

fn site_id(id: &str) -> Result<SiteId, SimError> {
    SiteId::new(id).map_err(|e| SimError::Setup(format!("site id `{id}`: {e}")))
}

fn scope(id: &str) -> Result<Scope, SimError> {
    Scope::new(id).map_err(|e| SimError::Setup(format!("scope `{id}`: {e}")))
}

impl Topology {
    /// A random federation drawn from `dice`.
    pub fn random(dice: &mut Dice) -> Result<Topology, SimError> {
        // (id, scope, level, parent index)
        let mut shape: Vec<(String, String, Level, Option<usize>)> =
            vec![("global-control".into(), "global".into(), Level::Global, None)];
        let regions = usize::try_from(dice.range(2, 3)).unwrap_or(2);
        let letters = ['a', 'b', 'c'];
        for letter in letters.iter().take(regions) {
            shape.push((
                format!("region-{letter}-control"),
                format!("region-{letter}"),
                Level::Regional,
                Some(0),
            ));
        }
        let zones = dice.range(3, 6);
        let mut per_region = [0u32; 3];
        let mut direct = 0u32;
        for _ in 0..zones {
            if dice.chance(150) {
                direct += 1;
                let id = format!("edge-zone-x{direct}");
                shape.push((id.clone(), id, Level::Autonomous, Some(0)));
            } else {
                let r = usize::try_from(dice.below(regions as u64)).unwrap_or(0);
                per_region[r] += 1;
                let id = format!("edge-zone-{}{}", letters[r], per_region[r]);
                shape.push((id.clone(), id, Level::Local, Some(r + 1)));
            }
        }

        let ids: Vec<SiteId> = shape.iter().map(|(id, ..)| site_id(id)).collect::<Result<_, _>>()?;
        let upstream: Vec<Option<LinkSettings>> =
            shape.iter().map(|(.., parent)| parent.map(|_| link_settings(dice))).collect();
        let downstream: Vec<LinkSettings> = shape.iter().map(|_| link_settings(dice)).collect();

        let mut sites = BTreeMap::new();
        let mut directory = Directory::new();
        for (i, (_, scope_name, level, parent)) in shape.iter().enumerate() {
            let id = ids[i].clone();
            let autonomy = match level {
                Level::Global => Autonomy::Full,
                _ => {
                    dice.pick(&[Autonomy::Full, Autonomy::Conditional, Autonomy::Conditional, Autonomy::None])
                }
            };
            let card = SiteCard {
                id: id.clone(),
                scope: scope(scope_name)?,
                parent: parent.map(|p| ids[p].clone()),
                level: *level,
                autonomy,
                can_operate_isolated: dice.chance(850),
                can_modify_policies: dice.chance(600),
                can_deploy_versions: dice.chance(700),
                strategy: dice.pick(&[
                    Strategy::LastWriteWins,
                    Strategy::LastWriteWins,
                    Strategy::AuthorityWins,
                    Strategy::Manual,
                ]),
            };
            let mut links = Vec::new();
            if let (Some(p), Some(up)) = (parent, &upstream[i]) {
                links.push(LinkConfig {
                    peer: ids[*p].clone(),
                    url: Some(url_of(&ids[*p])),
                    direction: Direction::Upstream,
                    mode: up.mode,
                    frequency: up.frequency,
                    batch_size: up.batch_size,
                });
            }
            for (c, (.., child_parent)) in shape.iter().enumerate() {
                if *child_parent == Some(i) {
                    let down = &downstream[i];
                    links.push(LinkConfig {
                        peer: ids[c].clone(),
                        url: Some(url_of(&ids[c])),
                        direction: Direction::Downstream,
                        mode: down.mode,
                        frequency: down.frequency,
                        batch_size: down.batch_size,
                    });
                }
            }
            let engine = EngineConfig {
                site: id.clone(),
                scope: card.scope.clone(),
                level: *level,
                isolation_after: Duration::from_secs(dice.pick(&[3, 10, 30])),
                links,
                backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
                card: card.clone(),
                audit_conflicts: dice.chance(850),
            };
            directory.insert(card.clone());
            let spec = SiteSpec {
                id: id.clone(),
                scope: card.scope.clone(),
                parent: card.parent.clone(),
                card,
                engine,
                max_skew_ms: dice.pick(&[5_000, 15_000, 60_000]),
            };
            sites.insert(id, spec);
        }
        Ok(Topology { sites, directory })
    }

    /// The sites that hold objects of `scope` (its owner, the owner's ancestors and
    /// descendants).
    pub fn holders(&self, scope: &Scope) -> Vec<SiteId> {
        self.directory.holders(scope)
    }

    /// One line per site: what a trace starts with.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for site in self.sites.values() {
            let c = &site.card;
            let _ = write!(
                out,
                "{} scope={} level={} parent={} autonomy={} isolated-ok={} modify={} deploy={} strategy={} audit={} isolate-after={}s max-skew={}s links:",
                site.id,
                site.scope,
                c.level,
                c.parent.as_ref().map_or("-", |p| p.as_str()),
                c.autonomy.as_str(),
                c.can_operate_isolated,
                c.can_modify_policies,
                c.can_deploy_versions,
                c.strategy.as_str(),
                site.engine.audit_conflicts,
                site.engine.isolation_after.as_secs(),
                site.max_skew_ms / 1000,
            );
            for link in &site.engine.links {
                let _ = write!(
                    out,
                    " {}({},{},{}s,batch {})",
                    link.peer,
                    if link.direction == Direction::Upstream { "up" } else { "down" },
                    link.mode.as_str(),
                    link.frequency.as_secs(),
                    link.batch_size
                );
            }
            out.push('\n');
        }
        out
    }
}
