//! `dl-tenancy`: thin command-line front of `dl_tenancy_ctl`. Prints the JSON response on
//! stdout; on failure `{"error":{"code","message"}}` on stderr and a non-zero exit
//! (2 = bad input, nothing changed; 1 = anything else).

use clap::{Args, Parser, Subcommand, ValueEnum};
use dl_tenancy_ctl::names::{ServerName, WorkspaceId};
use dl_tenancy_ctl::{
    fences::LimitsChange, local, names, Config, Error, ErrorCode, Kind, ServerSpec, Tenancy,
    UpgradeEvent, UpgradeOptions,
};
use serde::Serialize;
use std::path::PathBuf;

mod cli;
use cli::fleet;

#[derive(Parser, Debug)]
#[command(
    name = "dl-tenancy",
    version,
    about = "Provision and run dl_tenancy workspace databases"
)]
struct Cli {
    /// Local cluster directory; also holds secret.key.
    #[arg(
        long,
        global = true,
        env = "DL_TENANCY_DATA_DIR",
        default_value = ".dl-tenancy"
    )]
    data_dir: PathBuf,
    /// Use an existing server (superuser connection URL) for the control database instead of
    /// the local cluster. Goes before the subcommand.
    #[arg(long, env = "DL_TENANCY_ADMIN_URL", hide_env_values = true)]
    admin_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The local PostgreSQL cluster and PgBouncer.
    #[command(subcommand)]
    Local(LocalCmd),
    /// With --admin-url: bootstrap the control plane on that server once (secret key, control
    /// database, the server registered as `primary`). Harmless to repeat.
    Init,
    /// Status of a workspace database (verified against the server when active).
    Status(Ws),
    /// Create the workspace's database and logins (idempotent).
    Provision(Ws),
    /// Connection URIs.
    #[command(subcommand, name = "connection-uris")]
    ConnectionUris(UrisCmd),
    /// The machine-readable schema contract (dl_sql_schema()).
    SqlSchema(Ws),
    /// All workspaces with their recorded state.
    List,
    #[command(flatten)]
    Fleet(fleet::FleetCmd),
    /// Servers workspaces are placed on.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Serve the tenant HTTP API (/api/v2/tenants/...) until SIGTERM/SIGINT.
    Serve(ServeArgs),
    /// Bearer tokens of the HTTP API (one workspace each; shown once, stored as a hash).
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// ALTER EXTENSION dl_tenancy UPDATE in workspace databases, each in its own transaction;
    /// failures are recorded and reported, and a re-run retries them.
    Upgrade(UpgradeArgs),
    /// Give workspaces provisioned before 0.4.0 (`ws_<id>`) opaque names (`dlw_<handle>`):
    /// ends their sessions once; passwords stay, user and database names in the URIs change.
    MigrateNames(Selection),
    /// A workspace's limits (connection caps, session defaults of its logins): shown, or
    /// changed (given ones only) and applied at once.
    Limits(cli::limits::LimitsArgs),
}

/// One workspace, or every one.
#[derive(Args, Debug)]
struct Selection {
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    workspace: Option<WorkspaceId>,
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
struct UpgradeArgs {
    /// Target version (default: each server's newest installed version).
    #[arg(long)]
    to: Option<String>,
    /// Upgrade this workspace only.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    workspace: Option<WorkspaceId>,
    /// Upgrade every active workspace.
    #[arg(long)]
    all: bool,
    /// Workspaces upgraded at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Upgrade this many workspaces first, one at a time, and stop if one of them fails
    /// (one that stays busy does not stop the run).
    #[arg(long, default_value_t = 0)]
    canary: usize,
    /// How long one attempt waits for a lock a customer transaction holds.
    #[arg(long, default_value_t = dl_tenancy_ctl::DEFAULT_LOCK_TIMEOUT_MS)]
    lock_timeout_ms: u64,
    /// Attempts per workspace (with a doubling wait between them) before it counts as busy.
    #[arg(long, default_value_t = dl_tenancy_ctl::DEFAULT_LOCK_ATTEMPTS)]
    lock_attempts: u32,
}

#[derive(Subcommand, Debug)]
enum LocalCmd {
    /// Create (first time) and start the cluster, control database, template and PgBouncer.
    Up {
        /// PostgreSQL's own port, the platform's (default 55432, or a free one; remembered in
        /// local.json).
        #[arg(long)]
        pg_port: Option<u16>,
        /// PgBouncer port: pooled URIs (default 56432, or a free one; remembered).
        #[arg(long)]
        pooler_port: Option<u16>,
        /// The direct front's port: direct URIs (default 55433, or a free one; remembered).
        #[arg(long)]
        direct_port: Option<u16>,
        /// PostgreSQL's max_connections (default 200, at least 40; remembered; takes effect
        /// when the server starts). What the platform (13), the pooler's lookups (10) and the
        /// direct logins (a fifth) leave is the pooler's budget for the workspaces (README
        /// "One server, many workspaces").
        #[arg(long)]
        max_connections: Option<u32>,
        /// Full backups the pgBackRest repository keeps (default 2; remembered).
        #[arg(long)]
        backup_retention_full: Option<u32>,
    },
    /// Rebuild a lost cluster from its pgBackRest repository (to the last archived WAL),
    /// then bring everything up. Its data directory must be gone (moved away).
    Recover,
    /// Stop PgBouncer and PostgreSQL (data stays).
    Down,
    /// Are they running?
    Status,
}

#[derive(Args, Debug)]
struct Ws {
    /// Workspace id, ^[a-z][a-z0-9_-]{0,47}$
    #[arg(long, allow_hyphen_values = true)]
    workspace: WorkspaceId,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    Read,
    Override,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Read => Kind::Read,
            KindArg::Override => Kind::Override,
        }
    }
}

#[derive(Subcommand, Debug)]
enum UrisCmd {
    /// Server, database, role names, hosts and ports (no secrets).
    Metadata(Ws),
    /// The connection URI (with password) of the read or override login.
    Reveal {
        #[arg(long, allow_hyphen_values = true)]
        workspace: WorkspaceId,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Through PgBouncer instead of straight to PostgreSQL.
        #[arg(long)]
        pooled: bool,
    },
    /// New password (on the standby login); the old one stops working now or after --grace.
    Rotate {
        #[arg(long, allow_hyphen_values = true)]
        workspace: WorkspaceId,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// How long the previous credential keeps working (e.g. 0, 90s, 10m, 1h).
        #[arg(long, default_value = "0")]
        grace: String,
    },
}

#[derive(Subcommand, Debug)]
enum ServerCmd {
    /// Register (or update) a server new workspaces can be placed on.
    Add {
        #[arg(long)]
        name: ServerName,
        /// Superuser connection string of the server to add (stored encrypted), or from
        /// DL_TENANCY_SERVER_ADMIN_URL. One with a password is refused here: the command line
        /// is visible to every user of the machine (use the variable or --admin-url-file). The
        /// control server is still chosen by the top-level --admin-url / DL_TENANCY_ADMIN_URL.
        #[arg(
            long = "admin-url",
            alias = "server-url",
            env = "DL_TENANCY_SERVER_ADMIN_URL",
            hide_env_values = true,
            required_unless_present = "admin_url_file"
        )]
        server_url: Option<String>,
        /// A file holding the connection string of the server to add.
        #[arg(long, conflicts_with = "server_url")]
        admin_url_file: Option<PathBuf>,
        /// Host/port tenants connect to directly (default: from --server-url).
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// PostgreSQL's own port on --host when --port is a front for tenants (a session-mode
        /// PgBouncer, README "PostgreSQL's port"): other servers stream moves from it.
        #[arg(long)]
        platform_port: Option<u16>,
        /// The server's PgBouncer.
        #[arg(long)]
        pooler_host: Option<String>,
        #[arg(long)]
        pooler_port: Option<u16>,
        /// The CA certificate (PEM) that signs the server's and its pooler's TLS certificates:
        /// revealed URIs then verify them (`sslmode=verify-full`); without it, `require`.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[command(flatten)]
        backrest: cli::operator::BackrestArgs,
    },
    /// Give (or change) a registered server's pgBackRest repository (its host archives).
    Archive(cli::operator::ServerArchiveArgs),
    /// Registered servers and their workspace counts.
    List,
    /// No new workspaces on a server, and move every one it holds to the others.
    Drain {
        name: ServerName,
        /// Workspaces moved at once.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
    },
    /// Forget a server; refused while it holds workspaces.
    Remove { name: ServerName },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 = any free port; the address is printed as JSON).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Reveal + rotate requests per token per minute (0 = no limit).
    #[arg(long, default_value_t = 20)]
    rate_limit_per_minute: u32,
    /// Requests per workspace per minute, every endpoint (0 = no limit).
    #[arg(long, default_value_t = dl_tenancy_http::limit::CALLS_PER_MINUTE)]
    calls_per_minute: u32,
    /// Time limit of each database operation, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_seconds: u64,
    /// How often deleted workspaces whose retention is over are purged (first at start).
    #[arg(long, default_value_t = dl_tenancy_ctl::PURGE_SWEEP_INTERVAL.as_secs())]
    purge_sweep_seconds: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (the operator's network only: they
    /// name every workspace). Off unless given.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// The benchmark's baseline: status from the control database alone.
    #[arg(long, hide = true)]
    baseline: bool,
    /// Back up the local server's continuous archive this often (e.g. 1h, 1d; the first one
    /// an interval after start). Off unless given (`archive backup` from cron instead).
    #[arg(long)]
    backup_every: Option<String>,
    /// The kind of those backups: full, diff or incr.
    #[arg(long, default_value = "incr")]
    backup_type: String,
}

#[derive(Subcommand, Debug)]
enum TokensCmd {
    /// Issue a token for a workspace (provisioned or not), or with --operator one for the
    /// operator endpoints; prints it once.
    Create(cli::operator::TokenCreateArgs),
    /// Revoke a token (requests with it get 401 from then on).
    Revoke {
        #[arg(long)]
        token_id: String,
    },
    /// Tokens without their secrets, of one workspace or all.
    List {
        #[arg(long)]
        workspace: Option<WorkspaceId>,
    },
}

fn print<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

fn run(cli: Cli) -> Result<(), Error> {
    let config = Config {
        data_dir: cli.data_dir.clone(),
        admin_url: cli.admin_url.clone().filter(|s| !s.is_empty()),
    };
    // Steps of long operations go to stderr when it is a terminal (stdout keeps the JSON
    // answer, and stderr the JSON error, for scripts).
    let open = || Tenancy::open(&config).map(|t| t.with_progress(terminal_progress()));
    match cli.command {
        Command::Init => {
            Tenancy::init(&config)?;
            print(&Tenancy::open(&config)?.server_list()?)
        }
        Command::Local(cmd) => {
            if config.admin_url.is_some() {
                return Err(Error::new(
                    ErrorCode::InvalidArgument,
                    "`local` manages the local cluster; unset --admin-url / DL_TENANCY_ADMIN_URL",
                ));
            }
            match cmd {
                LocalCmd::Up {
                    pg_port,
                    pooler_port,
                    direct_port,
                    max_connections,
                    backup_retention_full,
                } => print(&local::up(&local::LocalOptions {
                    data_dir: config.data_dir,
                    pg_port,
                    pooler_port,
                    direct_port,
                    max_connections,
                    retention_full: backup_retention_full,
                })?),
                LocalCmd::Recover => print(&local::recover(&local::LocalOptions {
                    data_dir: config.data_dir,
                    ..Default::default()
                })?),
                LocalCmd::Down => print(&local::down(&config.data_dir)?),
                LocalCmd::Status => print(&local::status(&config.data_dir)?),
            }
        }
        Command::Status(w) => print(&open()?.status(&w.workspace)?),
        Command::Provision(w) => print(&open()?.provision(&w.workspace)?),
        Command::ConnectionUris(UrisCmd::Metadata(w)) => print(&open()?.metadata(&w.workspace)?),
        Command::ConnectionUris(UrisCmd::Reveal {
            workspace,
            kind,
            pooled,
        }) => print(&open()?.reveal(&workspace, kind.into(), pooled)?),
        Command::ConnectionUris(UrisCmd::Rotate {
            workspace,
            kind,
            grace,
        }) => {
            let grace = names::parse_duration(&grace)?;
            print(&open()?.rotate(&workspace, kind.into(), grace)?)
        }
        Command::SqlSchema(w) => print(&open()?.sql_schema(&w.workspace)?),
        Command::List => print(&open()?.list()?),
        Command::Fleet(cmd) => fleet::run(cmd, open)?,
        Command::Server(ServerCmd::Add {
            name,
            server_url,
            admin_url_file,
            host,
            port,
            platform_port,
            pooler_host,
            pooler_port,
            ca_file,
            backrest,
        }) => {
            let admin_url = match (server_url, admin_url_file) {
                (Some(url), _) => url,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| {
                        Error::new(
                            ErrorCode::InvalidArgument,
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
                (None, None) => unreachable!("clap requires one of them"),
            };
            let t = open()?;
            let added = t.server_add(&ServerSpec {
                name: name.to_string(),
                admin_url,
                host,
                port,
                platform_port,
                pooler_host,
                pooler_port,
                ca_file,
            })?;
            cli::operator::print_added(&t, added, &backrest)?
        }
        Command::Server(ServerCmd::Archive(a)) => cli::operator::server_archive(&open()?, &a)?,
        Command::Server(ServerCmd::List) => print(&open()?.server_list()?),
        Command::Server(ServerCmd::Drain { name, parallel }) => {
            let report = open()?.drain(&name, parallel)?;
            print(&report);
            if !report.failed.is_empty() {
                std::process::exit(1);
            }
        }
        Command::Server(ServerCmd::Remove { name }) => print(&open()?.server_remove(&name)?),
        Command::Serve(s) => {
            let timeout = std::time::Duration::from_secs(s.timeout_seconds.max(1));
            let backup_interval = match s.backup_every.as_deref() {
                Some(every) => Some(std::time::Duration::from_secs(
                    names::parse_duration(every)?.max(1),
                )),
                None => None,
            };
            let backup_kind: dl_tenancy_ctl::BackupKind = s.backup_type.parse()?;
            dl_tenancy_http::run(
                &config,
                &dl_tenancy_http::ServeOptions {
                    listen: s.listen,
                    call_timeout: timeout,
                    rate_per_minute: s.rate_limit_per_minute,
                    calls_per_minute: s.calls_per_minute,
                    drain_timeout: timeout + std::time::Duration::from_secs(5),
                    purge_sweep_interval: std::time::Duration::from_secs(
                        s.purge_sweep_seconds.max(1),
                    ),
                    metrics_listen: s.metrics_listen,
                    baseline: s.baseline,
                    backup_interval,
                    backup_kind,
                    ..Default::default()
                },
            )?
        }
        Command::Tokens(TokensCmd::Create(a)) => cli::operator::token_create(&open()?, &a)?,
        Command::Tokens(TokensCmd::Revoke { token_id }) => {
            print(&dl_tenancy_ctl::tokens::revoke(&open()?, &token_id)?)
        }
        Command::Tokens(TokensCmd::List { workspace }) => print(&dl_tenancy_ctl::tokens::list(
            &open()?,
            workspace.as_deref(),
        )?),
        Command::Upgrade(args) => upgrade(&open()?, args)?,
        Command::MigrateNames(s) => print(&open()?.migrate_names(s.workspace.as_deref())?),
        Command::Limits(l) => {
            let (t, change) = (open()?, l.change()?);
            if change == LimitsChange::default() {
                print(&t.limits(&l.workspace)?)
            } else {
                print(&t.set_limits(&l.workspace, &change)?)
            }
        }
    }
    Ok(())
}

fn terminal_progress() -> dl_tenancy_ctl::progress::Progress {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        dl_tenancy_ctl::progress::Progress::to(|step| eprintln!("{step}"))
    } else {
        Default::default()
    }
}

/// `dl-tenancy upgrade`: a progress bar on stderr when it is a terminal, the report on stdout,
/// and exit 1 when a workspace failed.
fn upgrade(tenancy: &Tenancy, args: UpgradeArgs) -> Result<(), Error> {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::hidden();
    let on_event = |event: UpgradeEvent| match event {
        UpgradeEvent::Started { total } => {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_length(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} workspaces, {msg}")
                    .expect("a valid template"),
            );
        }
        UpgradeEvent::Finished(w) => {
            bar.set_message(format!("{}: {}", w.workspace, w.status));
            bar.inc(1);
        }
    };
    let report = tenancy.upgrade(
        &UpgradeOptions {
            to: args.to,
            workspace: args.workspace.map(|w| w.to_string()),
            parallel: args.parallel,
            canary: args.canary,
            lock_timeout_ms: args.lock_timeout_ms,
            lock_attempts: args.lock_attempts,
        },
        &on_event,
    )?;
    bar.finish_and_clear();
    print(&report);
    if report.failed > 0 || report.busy > 0 || report.canary_failed {
        std::process::exit(1);
    }
    Ok(())
}

/// A connection string with a password given as an argument is refused: every user of the
/// machine can read a process's arguments (`ps`). The environment or a file can carry it.
fn refuse_password_in_arguments(matches: &clap::ArgMatches) -> Result<(), Error> {
    use clap::parser::ValueSource;
    let mut checks = vec![(matches, "admin_url", "--admin-url", "DL_TENANCY_ADMIN_URL")];
    if let Some(("server", server)) = matches.subcommand() {
        if let Some(("add", add)) = server.subcommand() {
            checks.push((
                add,
                "server_url",
                "server add --admin-url",
                "DL_TENANCY_SERVER_ADMIN_URL or --admin-url-file",
            ));
        }
    }
    for (m, id, flag, instead) in checks {
        if m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let Some(value) = m.get_one::<String>(id) else {
            continue;
        };
        // The library's parser: it also reads URLs with sslmode=verify-full and sslrootcert.
        let has_password =
            dl_tenancy_ctl::connection::parse(value).is_ok_and(|(c, _)| c.get_password().is_some());
        if has_password {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{flag} carries a password, which every user of this machine can read in the process list; pass it in {instead}"
                ),
            ));
        }
    }
    Ok(())
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((c, matches)) => {
            if let Err(e) = refuse_password_in_arguments(&matches) {
                eprintln!("{}", e.to_json());
                std::process::exit(e.exit_code());
            }
            c
        }
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // An argument parsed into a domain type (a workspace id, say) keeps its own code.
            let err = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<Error>())
                .cloned()
                .unwrap_or_else(|| {
                    Error::new(ErrorCode::InvalidArgument, e.to_string().trim().to_string())
                });
            eprintln!("{}", err.to_json());
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("{}", e.to_json());
        std::process::exit(e.exit_code());
    }
}
