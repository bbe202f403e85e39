//! The operator commands that talk to a site over HTTP.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use model::{ObjectDocument, ObjectKey, ObjectName, Scope};

use crate::client::Client;
use crate::diff;
use crate::manifest;
use crate::output::{Format, Table, print};

pub async fn apply(client: &Client, file: &Path) -> anyhow::Result<()> {
    let (text, source) = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("failed to read standard input")?;
        (text, "standard input".to_owned())
    } else {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("failed to read {}", file.display()))?;
        (text, file.display().to_string())
    };
    let documents = manifest::parse(&text, &source)?;
    if let [(document, valid)] = documents.as_slice() {
        let written = client
            .put(&valid.key, document, None)
            .await
            .with_context(|| format!("{} was not applied", valid.key))?;
        let version = written.document.metadata.version.unwrap_or_default();
        let verb = if written.created { "created" } else { "updated" };
        println!("{} {verb} (version {version})", valid.key);
        return Ok(());
    }
    // Several documents: in requests of at most APPLY_CHUNK, each committed together by the
    // site; every document gets its own line, and any refusal makes the command fail.
    let mut refused = 0;
    let all: Vec<&ObjectDocument> = documents.iter().map(|(d, _)| d).collect();
    for chunk in chunks(&all) {
        let answer = client.apply_many(&chunk).await.context("the documents were not applied")?;
        for item in &answer.items {
            match (&item.version, &item.problem) {
                (Some(version), _) => {
                    let verb = if item.status == 201 { "created" } else { "updated" };
                    println!("{} {verb} (version {version})", item.object);
                }
                (None, problem) => {
                    refused += 1;
                    let detail = problem
                        .as_ref()
                        .and_then(|p| p["detail"].as_str())
                        .unwrap_or("refused without a reason")
                        .to_owned();
                    eprintln!("{} was not applied ({}): {detail}", item.object, item.status);
                }
            }
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} of {} documents were not applied", all.len());
    }
    Ok(())
}

/// The most documents one `POST /v1/apply` carries (the site takes up to
/// [`server::MAX_APPLY_DOCUMENTS`]).
const APPLY_CHUNK: usize = 500;
/// The most JSON bytes of documents one request carries: under the site's default body limit
/// ([`server::DEFAULT_MAX_BODY`]).
const APPLY_CHUNK_BYTES: usize = server::DEFAULT_MAX_BODY * 3 / 4;

/// Splits documents into requests of at most [`APPLY_CHUNK`] documents and about
/// [`APPLY_CHUNK_BYTES`] (a document larger than that goes alone).
fn chunks<'a>(documents: &[&'a ObjectDocument]) -> Vec<Vec<&'a ObjectDocument>> {
    let mut chunks: Vec<Vec<&ObjectDocument>> = Vec::new();
    let mut bytes = 0;
    for document in documents {
        let size = serde_json::to_vec(document).map_or(0, |b| b.len());
        let full = chunks
            .last()
            .is_none_or(|c| c.len() >= APPLY_CHUNK || (!c.is_empty() && bytes + size > APPLY_CHUNK_BYTES));
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(document);
        }
    }
    chunks
}

/// The object's key, with the scope defaulting to that of the site answering.
async fn key(client: &Client, kind: &str, name: &str, scope: Option<String>) -> anyhow::Result<ObjectKey> {
    let scope = match scope {
        Some(s) => s,
        None => client.site().await?.scope,
    };
    Ok(ObjectKey::new(kind.parse()?, Scope::new(scope)?, ObjectName::new(name)?))
}

pub async fn get(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    scope: Option<String>,
    include_deleted: bool,
    output: Format,
) -> anyhow::Result<()> {
    let kind_parsed: model::Kind = kind.parse()?;
    if let Some(name) = name {
        let key = key(client, kind, name, scope).await?;
        let document = client.get(&key).await?;
        return print(output, &document, || {
            let mut t = Table::new(vec!["KIND", "SCOPE", "NAME", "VERSION", "ORIGIN", "UPDATED"], "");
            t.row(row(&document));
            t
        });
    }
    let mut query = vec![("kind", kind_parsed.to_string())];
    if let Some(scope) = scope {
        query.push(("scope", Scope::new(scope)?.to_string()));
    }
    if include_deleted {
        query.push(("include_deleted", "true".to_owned()));
    }
    // Read every page: lists are bounded per page, and the loop by the number of objects.
    let mut items = Vec::new();
    loop {
        let page = client.list(&query).await?;
        items.extend(page.items);
        match page.next {
            Some(next) => {
                query.retain(|(k, _)| *k != "after");
                query.push(("after", next));
            }
            None => break,
        }
    }
    print(output, &items, || {
        let mut t = Table::new(vec!["KIND", "SCOPE", "NAME", "VERSION", "ORIGIN", "UPDATED"], "no objects");
        for d in &items {
            t.row(row(d));
        }
        t
    })
}

fn row(d: &model::ObjectDocument) -> Vec<String> {
    let m = &d.metadata;
    let name = if m.deleted == Some(true) { format!("{} (deleted)", m.name) } else { m.name.clone() };
    vec![
        d.kind.clone(),
        m.scope.clone(),
        name,
        m.version.clone().unwrap_or_default(),
        m.origin.clone().unwrap_or_default(),
        m.updated_at.clone().unwrap_or_default(),
    ]
}

pub async fn delete(
    client: &Client,
    kind: &str,
    name: &str,
    scope: Option<String>,
    if_match: Option<&str>,
) -> anyhow::Result<()> {
    let key = key(client, kind, name, scope).await?;
    let tombstone = client.delete(&key, if_match).await?;
    println!("{key} deleted (version {})", tombstone.metadata.version.unwrap_or_default());
    Ok(())
}

pub async fn history(
    client: &Client,
    kind: &str,
    name: &str,
    scope: Option<String>,
    output: Format,
) -> anyhow::Result<()> {
    let key = key(client, kind, name, scope).await?;
    let page = client.history(&key).await?;
    print(output, &page, || {
        let mut t =
            Table::new(vec!["SEQ", "VERSION", "ORIGIN", "AUTHOR", "TIME", "CHANGE", "HASH"], "no versions");
        for item in &page.items {
            t.row(vec![
                item.seq.to_string(),
                item.version.clone(),
                item.origin.clone(),
                item.author.clone(),
                item.time.clone(),
                if item.deleted { "delete".into() } else { "write".into() },
                item.content_hash.chars().take(12).collect(),
            ]);
        }
        t
    })
}

pub async fn audit(
    client: &Client,
    tail: usize,
    after: Option<u64>,
    limit: usize,
    output: Format,
) -> anyhow::Result<()> {
    let query = match after {
        Some(after) => vec![("after", after.to_string()), ("limit", limit.to_string())],
        None => vec![("tail", tail.to_string())],
    };
    let page = client.audit(&query).await?;
    print(output, &page, || {
        let mut t = Table::new(
            vec!["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "VERSION", "OUTCOME"],
            "no audit entries",
        );
        for item in &page.items {
            t.row(vec![
                item.seq.to_string(),
                item.time.clone(),
                item.actor.clone(),
                item.action.clone(),
                item.object.clone().unwrap_or_default(),
                item.version.clone().unwrap_or_default(),
                item.outcome.clone(),
            ]);
        }
        t
    })
}

/// Seconds as the design writes durations: `42s`, `12.5m`, `3.75h`.
pub fn human_age(seconds: f64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if seconds < 60.0 {
        format!("{}s", seconds.round() as u64)
    } else if seconds < 3600.0 {
        format!("{}m", trim(seconds / 60.0))
    } else {
        format!("{}h", trim(seconds / 3600.0))
    }
}

pub async fn sync_status(client: &Client, now: bool, output: Format) -> anyhow::Result<()> {
    let status = client.sync_status(now).await?;
    print(output, &status, || {
        let mut t = Table::new(
            vec!["PEER", "DIRECTION", "MODE", "STATE", "PENDING", "DEBT", "LAST SYNC", "ERROR"],
            "this site has no links",
        );
        for l in &status.links {
            let state = if l.signal == replication::Signal::Up {
                l.state.to_string()
            } else {
                format!("{} (signal {})", l.state, l.signal.as_str())
            };
            t.row(vec![
                l.peer.clone(),
                format!("{:?}", l.direction).to_lowercase(),
                format!("{} every {}", l.mode, l.frequency),
                state,
                format!("{} ({} B)", l.pending, l.pending_bytes),
                l.debt_seconds.map(human_age).unwrap_or_else(|| "-".into()),
                l.last_sync_age_seconds
                    .map(|a| format!("{} ago", human_age(a)))
                    .unwrap_or_else(|| "never".into()),
                l.last_error.clone().unwrap_or_default(),
            ]);
        }
        t
    })
}

pub async fn link(client: &Client, peer: &str, state: &str) -> anyhow::Result<()> {
    let link = client.signal(peer, state).await?;
    println!("link with {} is {} (signal {})", link.peer, link.state, link.signal.as_str());
    Ok(())
}

pub async fn conflicts_list(
    client: &Client,
    status: Option<String>,
    limit: Option<usize>,
    output: Format,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(status) = status {
        query.push(("status", status));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    let page = client.conflicts(&query).await?;
    print(output, &page, || {
        let mut t = Table::new(
            vec!["ID", "OBJECT", "SIDES", "STRATEGY", "WINNER", "STATUS", "DETECTED"],
            "no conflicts",
        );
        for c in &page.items {
            let sides: Vec<&str> = c.sides.iter().map(|s| s.version.as_str()).collect();
            t.row(vec![
                c.id.clone(),
                c.object.clone(),
                sides.join(" vs "),
                c.strategy.clone(),
                c.winner.clone(),
                c.status.clone(),
                c.detected_at.clone(),
            ]);
        }
        t
    })?;
    if page.more && output == Format::Table {
        eprintln!("(more conflicts match; raise --limit or narrow --status)");
    }
    Ok(())
}

/// A value as YAML text (an empty mapping or null as `{}`).
fn yaml_text(value: &serde_json::Value) -> anyhow::Result<String> {
    if value.is_null() {
        return Ok("{}\n".to_owned());
    }
    Ok(serde_yaml_ng::to_string(value)?)
}

pub async fn conflicts_show(client: &Client, id: &str, output: Format) -> anyhow::Result<()> {
    let detail = client.conflict(id).await?;
    if output != Format::Table {
        return print(output, &detail, || Table::new(vec![], ""));
    }
    let c = &detail.conflict;
    let (Some(a), Some(b)) = (detail.versions.first(), detail.versions.get(1)) else {
        anyhow::bail!("the site's answer does not hold both versions of conflict {}", c.id);
    };
    let mut out = String::new();
    out.push_str(&format!("conflict {} on {}: {}\n", c.id, c.object, c.status));
    let provisional = if c.status == "open" { " (provisional)" } else { "" };
    out.push_str(&format!(
        "strategy {}, winner {}{provisional}, detected {}\n",
        c.strategy, c.winner, c.detected_at
    ));
    if let (Some(who), Some(at)) = (&c.acknowledged_by, &c.acknowledged_at) {
        out.push_str(&format!("acknowledged by {who} at {at}\n"));
    }
    if let Some(later) = &c.resolved_by {
        out.push_str(&format!("resolved by version {later}\n"));
    }
    let current = detail.current.metadata.version.clone().unwrap_or_default();
    let which = if current == a.version {
        " (side A)"
    } else if current == b.version {
        " (side B)"
    } else {
        ""
    };
    let deleted = if detail.current.metadata.deleted == Some(true) { ", deleted" } else { "" };
    out.push_str(&format!("current version {current}{which}{deleted}\n\n"));

    let mut t = Table::new(vec!["", "A", "B"], "");
    let labels = |item: &server::HistoryItem| {
        if item.labels.is_empty() {
            "-".to_owned()
        } else {
            item.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
        }
    };
    let yes = |b: bool| if b { "yes".to_owned() } else { "no".to_owned() };
    let chosen = |item: &server::HistoryItem| {
        if item.version == c.winner { format!("winner{provisional}") } else { "-".to_owned() }
    };
    t.row(vec!["version".into(), a.version.clone(), b.version.clone()]);
    t.row(vec!["origin".into(), a.origin.clone(), b.origin.clone()]);
    t.row(vec!["author".into(), a.author.clone(), b.author.clone()]);
    t.row(vec!["time".into(), a.time.clone(), b.time.clone()]);
    t.row(vec!["deleted".into(), yes(a.deleted), yes(b.deleted)]);
    t.row(vec!["labels".into(), labels(a), labels(b)]);
    t.row(vec!["strategy".into(), chosen(a), chosen(b)]);
    out.push_str(&t.render());

    let spec = |item: &server::HistoryItem| {
        if item.deleted { Ok("(deleted)\n".to_owned()) } else { yaml_text(&item.spec) }
    };
    let (spec_a, spec_b) = (spec(a)?, spec(b)?);
    out.push_str("\nspec: A | B\n");
    out.push_str(&diff::side_by_side(&spec_a, &spec_b));
    out.push_str("\ndiff of spec: - only in A, + only in B\n");
    out.push_str(&diff::render(&diff::diff(&spec_a, &spec_b)));
    print!("{out}");
    Ok(())
}

pub async fn conflicts_ack(client: &Client, id: &str) -> anyhow::Result<()> {
    let c = client.acknowledge(id).await?;
    println!(
        "conflict {} on {} acknowledged by {}; version {} stays current",
        c.id,
        c.object,
        c.acknowledged_by.as_deref().unwrap_or("?"),
        c.winner
    );
    Ok(())
}

pub async fn conflicts_resolve(client: &Client, id: &str, pick: &str) -> anyhow::Result<()> {
    let resolution = client.resolve(id, pick).await?;
    let c = &resolution.conflict;
    let version = resolution.object.metadata.version.unwrap_or_default();
    println!("conflict {} on {} {}: version {version} holds the content of {pick}", c.id, c.object, c.status);
    Ok(())
}

/// Reads the event stream and prints each event on one line until the stream ends (with
/// `once`) or Ctrl-C.
pub async fn events(
    client: &Client,
    after: Option<u64>,
    kinds: Vec<String>,
    once: bool,
    output: Format,
) -> anyhow::Result<()> {
    let mut query = vec![("after", after.unwrap_or(0).to_string())];
    if !kinds.is_empty() {
        query.push(("kinds", kinds.join(",")));
    }
    if once {
        query.push(("follow", "false".to_owned()));
    }
    let response = client.events(&query).await?;
    let mut last = after.unwrap_or(0);
    let read = read_events(response, output, &mut last);
    tokio::select! {
        result = read => result?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    if once {
        return Ok(());
    }
    anyhow::bail!(
        "the site ended the event stream (is it stopping?); resume with `souverix events --after {last}`"
    )
}

/// The longest line of an event stream accepted: a bound on what is buffered.
const MAX_EVENT_LINE: usize = 4 * 1024 * 1024;

async fn read_events(mut response: reqwest::Response, output: Format, last: &mut u64) -> anyhow::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut data = String::new();
    while let Some(chunk) = response.chunk().await.context("the event stream broke off")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !data.is_empty() {
                    print_event(&data, output, last)?;
                    data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // `id:`, `event:` and `:` keep-alive comments: the data carries the id and kind.
        }
        anyhow::ensure!(pending.len() <= MAX_EVENT_LINE, "the event stream sent a line longer than 4 MiB");
    }
    Ok(())
}

fn print_event(data: &str, output: Format, last: &mut u64) -> anyhow::Result<()> {
    let event: server::EventItem = serde_json::from_str(data)
        .with_context(|| format!("the site sent an event that is not JSON: {data}"))?;
    *last = event.seq;
    match output {
        Format::Json => println!("{}", serde_json::to_string(&event)?),
        Format::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&event)?),
        Format::Table => println!(
            "{}  {}  {}  {}  {}",
            event.seq,
            event.time,
            event.kind,
            event.object.as_deref().unwrap_or("-"),
            serde_json::to_string(&event.data)?
        ),
    }
    Ok(())
}

pub async fn webhook_deliveries(
    client: &Client,
    webhook: Option<String>,
    limit: usize,
    output: Format,
) -> anyhow::Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(webhook) = webhook {
        query.push(("webhook", webhook));
    }
    let page = client.deliveries(&query).await?;
    print(output, &page, || {
        let mut t = Table::new(
            vec!["ID", "WEBHOOK", "EVENT", "ATTEMPT", "TIME", "STATUS", "OUTCOME", "DETAIL"],
            "no deliveries",
        );
        for d in &page.items {
            t.row(vec![
                d.id.to_string(),
                d.webhook.clone(),
                d.event.to_string(),
                d.attempt.to_string(),
                d.time.clone(),
                d.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                d.outcome.clone(),
                d.detail.clone(),
            ]);
        }
        t
    })
}

#[cfg(test)]
mod tests {
    use super::human_age;

    #[test]
    fn ages_read_like_the_seed() {
        assert_eq!(human_age(42.4), "42s");
        assert_eq!(human_age(750.0), "12.5m");
        assert_eq!(human_age(13_500.0), "3.75h");
        assert_eq!(human_age(7200.0), "2h");
    }
}
