//! `souverix`: runs a control plane site (`serve`) and operates one from the command line.

mod agent;
mod client;
mod commands;
mod diff;
mod fleet;
mod manifest;
mod output;
mod serve;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::output::Format;

/// mimalloc instead of glibc's malloc: a site allocates and frees a batch's worth of versions,
/// bodies and buffers many times a second, and glibc's malloc spent about a fifth of a fan-out's
/// CPU on it (BENCHMARKS.md, fourth round).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The default site address for operator commands.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";

#[derive(Debug, Parser)]
#[command(
    name = "souverix",
    version,
    about = "Souverix Federation: a federated control plane for fleets of machines"
)]
struct Cli {
    /// The site to talk to.
    #[arg(long, global = true, env = "SOUVERIX_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Who makes the change, recorded in versions and the audit log (default: $USER).
    #[arg(long, global = true, env = "SOUVERIX_AUTHOR")]
    author: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a site. Without --config: one global site on 127.0.0.1:7400, data in ./souverix-data.
    Serve {
        /// The site's configuration file (YAML).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Listen on this address instead of the configured one (port 0: any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Keep data in this directory instead of the configured one.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run a whole federation in this process (default: the seven sites of the design's
    /// federation model, frequencies scaled to seconds), each site on its own port with its own
    /// store under one data directory. Ctrl-C stops them; running it again resumes.
    Demo {
        /// A federation file describing another tree of sites.
        #[arg(long)]
        federation: Option<PathBuf>,
        /// The first site's port; the others follow in file order.
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// Where every site keeps its store (`<site-id>.sqlite3`).
        #[arg(long, default_value = "souverix-data")]
        data_dir: PathBuf,
        /// Do not start the design's simulated fleet (on by default for the embedded demo).
        #[arg(long, conflicts_with = "fleet")]
        no_fleet: bool,
        /// Start the design's simulated fleet also with --federation: the file must have the
        /// seed's zones `edge-zone-a1`, `edge-zone-a2`, `edge-zone-b1` and `edge-zone-c`.
        #[arg(long)]
        fleet: bool,
    },
    /// Run a managed node's agent, or simulate many.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// List the managed nodes that heartbeat to the site.
    Nodes {
        #[arg(long, value_parser = ["Live", "Delayed", "Offline"])]
        status: Option<String>,
        /// At most this many nodes (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// List the objects in effect that some nodes have not applied in their current version.
    Drift {
        /// The site whose zone to look at: the site --server names or one of its direct
        /// neighbours (default: the site --server names).
        #[arg(long)]
        site: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Print the design's fleet view: the whole federation, or one site's children.
    View {
        /// Show this site's children (such as `region-a-control`) instead of the global view.
        #[arg(long)]
        site: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: fleet::ViewFormat,
    },
    /// Write one standalone site file per site of a federation, to run each site on its own
    /// machine with `souverix serve --config <file>`.
    SiteFiles {
        /// The federation file (default: the demo federation).
        #[arg(long)]
        federation: Option<PathBuf>,
        /// The first site's port; the others follow in file order.
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// The data directory each site file names.
        #[arg(long, default_value = "souverix-data")]
        data_dir: PathBuf,
        /// Where to write `<site-id>.yaml`.
        #[arg(long)]
        out: PathBuf,
    },
    /// See and drive synchronisation with neighbouring sites.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Tell a site that its link with a neighbour is up, down (cut) or metered.
    Link {
        /// The neighbour at the other end of the link.
        peer: String,
        #[arg(value_parser = ["up", "down", "metered"])]
        state: String,
    },
    /// Work with site configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create or update the objects described in a file (YAML or JSON; several per file).
    Apply {
        /// The file, or `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Show objects: one by name, or a list.
    Get {
        /// Policy, Release, Rollout or SiteStatus.
        kind: String,
        /// One object's name; without it, every object of the kind.
        name: Option<String>,
        /// The scope (default: the scope of the site you talk to, for a single object).
        #[arg(long, short = 's')]
        scope: Option<String>,
        /// Include deleted objects in a list.
        #[arg(long)]
        include_deleted: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Delete an object (its history is kept).
    Delete {
        kind: String,
        name: String,
        #[arg(long, short = 's')]
        scope: Option<String>,
        /// Delete only if this is the current version.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Show every version of an object.
    History {
        kind: String,
        name: String,
        #[arg(long, short = 's')]
        scope: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Show the audit log (the newest entries, or a page after a position).
    Audit {
        /// The newest N entries.
        #[arg(long, default_value_t = 50, conflicts_with = "after")]
        tail: usize,
        /// Entries after this position, oldest first.
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// See and settle conflicts: versions of one object written concurrently at different sites.
    Conflicts {
        #[command(subcommand)]
        command: ConflictsCommand,
    },
    /// Print the site's events (writes, deletes, conflicts, refusals, link changes): the stored
    /// ones, then new ones as they happen, until Ctrl-C.
    Events {
        /// Start after this event (default: from the first stored event).
        #[arg(long)]
        after: Option<u64>,
        /// Only these kinds (comma-separated).
        #[arg(long, value_delimiter = ',', value_parser = ["write", "delete", "conflict", "refusal", "link"])]
        kinds: Vec<String>,
        /// Print the stored events and exit instead of following new ones.
        #[arg(long)]
        once: bool,
        /// `table`: one line per event; `json`: one JSON object per line; `yaml`: a document each.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// See what the site's webhooks delivered.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Apply the objects in effect at the site of this node's zone to files in a directory,
    /// each as `<apply-dir>/<Kind>/<scope>/<name>.json`, and heartbeat; until Ctrl-C.
    Run {
        /// The node's id (like an object name: lowercase letters, digits, `-` and `.`).
        #[arg(long)]
        node_id: String,
        /// Where the objects in effect are written; `.souverix-applied.json` there records
        /// which versions are applied.
        #[arg(long)]
        apply_dir: PathBuf,
        /// How often to heartbeat and pick up changes.
        #[arg(long, default_value = "5s")]
        interval: config::Duration,
    },
    /// Run many simulated nodes in this process (nothing is written to disk), printing a
    /// summary every interval; until Ctrl-C.
    Simulate {
        /// How many nodes.
        #[arg(long)]
        nodes: usize,
        /// How often each heartbeats.
        #[arg(long, default_value = "5s")]
        interval: config::Duration,
        /// Node ids are `<prefix>-<i>`, from 1, zero-padded to at least two digits.
        #[arg(long, default_value = "sim-node")]
        prefix: String,
        /// How long applying one object takes.
        #[arg(long, default_value = "200ms")]
        apply_delay: config::Duration,
        /// The share of object applications that fail (0.0 to 1.0).
        #[arg(long, default_value_t = 0.0)]
        failure_rate: f64,
        /// How many nodes (the last ones) heartbeat only every --delayed-period while declaring
        /// --interval, so the site marks them Delayed.
        #[arg(long, default_value_t = 0)]
        delayed: usize,
        /// How often the delayed nodes heartbeat: the default lies between the sites' default
        /// `delayed_after` (15s) and the demo's `offline_after` (60s).
        #[arg(long, default_value = "30s")]
        delayed_period: config::Duration,
        /// Seeds start offsets, jitter and failures.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Each link: state, pending changes, debt and last sync.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Run a round on every link now, then show the status.
    Now {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
enum ConflictsCommand {
    /// The conflicts this site recorded, newest first (default: open and acknowledged).
    List {
        #[arg(long, value_parser = ["open", "acknowledged", "resolved", "all"])]
        status: Option<String>,
        /// At most this many (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Both versions side by side (metadata, spec as YAML, a diff of the specs) and the current one.
    Show {
        id: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Accept the provisional winner of an open conflict.
    Ack { id: String },
    /// Settle a conflict with one side's content: writes a new version that supersedes both.
    Resolve {
        id: String,
        /// The version to keep: one of the conflict's two sides.
        #[arg(long)]
        pick: String,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Delivery attempts, newest first.
    Deliveries {
        /// Only this webhook's.
        #[arg(long)]
        webhook: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a site configuration file without starting the site.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let author = cli.author.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".to_owned());
    match cli.command {
        Command::Serve { config, listen, data_dir } => serve::serve(config, listen, data_dir).await,
        Command::Demo { federation, base_port, data_dir, no_fleet, fleet } => {
            // The design's fleet runs by default only against the embedded demo federation.
            let with_fleet = if federation.is_some() { fleet } else { !no_fleet };
            serve::demo(federation, base_port, data_dir, with_fleet).await
        }
        Command::Agent { command: AgentCommand::Run { node_id, apply_dir, interval } } => {
            serve::init_logging();
            agent::run(&cli.server, &node_id, &apply_dir, interval.as_std()).await
        }
        Command::Agent {
            command:
                AgentCommand::Simulate {
                    nodes,
                    interval,
                    prefix,
                    apply_delay,
                    failure_rate,
                    delayed,
                    delayed_period,
                    seed,
                },
        } => {
            serve::init_logging();
            let group = simulate::Group { server: cli.server.clone(), prefix, nodes, delayed };
            let plan = simulate::Plan {
                interval: interval.as_std(),
                delayed_period: delayed_period.as_std(),
                apply_delay: apply_delay.as_std(),
                failure_rate,
                seed,
            };
            simulate::simulate(group, plan, interval.as_std()).await
        }
        Command::Nodes { status, limit, output } => {
            fleet::nodes(&client(&cli.server, author)?, status, limit, output).await
        }
        Command::Drift { site, output } => {
            fleet::drift(&client(&cli.server, author)?, site.as_deref(), output).await
        }
        Command::View { site, output } => {
            fleet::view(&client(&cli.server, author)?, site.as_deref(), output).await
        }
        Command::Config { command: ConfigCommand::Check { file } } => serve::check(&file),
        Command::SiteFiles { federation, base_port, data_dir, out } => {
            serve::site_files(federation, base_port, &data_dir, &out)
        }
        Command::Sync { command: SyncCommand::Status { output } } => {
            commands::sync_status(&client(&cli.server, author)?, false, output).await
        }
        Command::Sync { command: SyncCommand::Now { output } } => {
            commands::sync_status(&client(&cli.server, author)?, true, output).await
        }
        Command::Link { peer, state } => commands::link(&client(&cli.server, author)?, &peer, &state).await,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "souverix", &mut std::io::stdout());
            Ok(())
        }
        Command::Apply { file } => commands::apply(&client(&cli.server, author)?, &file).await,
        Command::Get { kind, name, scope, include_deleted, output } => {
            commands::get(
                &client(&cli.server, author)?,
                &kind,
                name.as_deref(),
                scope,
                include_deleted,
                output,
            )
            .await
        }
        Command::Delete { kind, name, scope, if_match } => {
            commands::delete(&client(&cli.server, author)?, &kind, &name, scope, if_match.as_deref()).await
        }
        Command::History { kind, name, scope, output } => {
            commands::history(&client(&cli.server, author)?, &kind, &name, scope, output).await
        }
        Command::Audit { tail, after, limit, output } => {
            commands::audit(&client(&cli.server, author)?, tail, after, limit, output).await
        }
        Command::Conflicts { command } => {
            let client = client(&cli.server, author)?;
            match command {
                ConflictsCommand::List { status, limit, output } => {
                    commands::conflicts_list(&client, status, limit, output).await
                }
                ConflictsCommand::Show { id, output } => commands::conflicts_show(&client, &id, output).await,
                ConflictsCommand::Ack { id } => commands::conflicts_ack(&client, &id).await,
                ConflictsCommand::Resolve { id, pick } => {
                    commands::conflicts_resolve(&client, &id, &pick).await
                }
            }
        }
        Command::Events { after, kinds, once, output } => {
            commands::events(&client(&cli.server, author)?, after, kinds, once, output).await
        }
        Command::Webhooks { command: WebhooksCommand::Deliveries { webhook, limit, output } } => {
            commands::webhook_deliveries(&client(&cli.server, author)?, webhook, limit, output).await
        }
    }
}

fn client(server: &str, author: String) -> anyhow::Result<client::Client> {
    client::Client::new(server, author)
}
