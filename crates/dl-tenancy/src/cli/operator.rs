//! The CLI's operator additions: operator tokens of the HTTP API (`tokens create
//! --operator`), and an added server's pgBackRest repository (`server add --backrest-stanza S
//! --backrest-config FILE`, and `server archive` to give or change it later). The settings
//! file is read here and handed to the library as text: its values (object-store keys) never
//! appear on a command line or in an answer.

use clap::Args;
use dl_tenancy_ctl::names::{ServerName, WorkspaceId};
use dl_tenancy_ctl::{Error, ErrorCode, ServerArchive, ServerInfo, Tenancy};
use std::path::{Path, PathBuf};

/// `tokens create`.
#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// The workspace the token speaks for (provisioned or not).
    #[arg(
        long,
        allow_hyphen_values = true,
        required_unless_present = "operator",
        conflicts_with = "operator"
    )]
    workspace: Option<WorkspaceId>,
    /// An operator token instead: the /api/v2/operator/ endpoints (every workspace), no
    /// tenant endpoint.
    #[arg(long)]
    operator: bool,
}

pub fn token_create(t: &Tenancy, args: &TokenCreateArgs) -> Result<(), Error> {
    let issued = match &args.workspace {
        Some(ws) => dl_tenancy_ctl::tokens::create(t, ws)?,
        None => dl_tenancy_ctl::tokens::create_operator(t)?,
    };
    print(&issued);
    Ok(())
}

/// `server add`'s repository options.
#[derive(Args, Debug, Default)]
pub struct BackrestArgs {
    /// The pgBackRest stanza the server's host archives its WAL to (its archive_command;
    /// README "Point-in-time recovery"): `restore --at` of its workspaces reads it.
    #[arg(long, requires = "backrest_config")]
    pub backrest_stanza: Option<String>,
    /// A pgBackRest file of the repository's `repo1-*` options (a directory or an object
    /// store, keys included): stored 0600 under the data directory, never printed.
    #[arg(long, requires = "backrest_stanza")]
    pub backrest_config: Option<PathBuf>,
}

/// `server archive`: give (or change) a registered server's repository.
#[derive(Args, Debug)]
pub struct ServerArchiveArgs {
    #[arg(long)]
    name: ServerName,
    #[arg(long)]
    backrest_stanza: String,
    #[arg(long)]
    backrest_config: PathBuf,
}

fn read_settings(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

pub fn server_archive(t: &Tenancy, args: &ServerArchiveArgs) -> Result<(), Error> {
    let settings = read_settings(&args.backrest_config)?;
    print(&t.server_archive(&args.name, &args.backrest_stanza, &settings)?);
    Ok(())
}

/// After `server add` registered a server: its repository, when given (the server stays
/// registered when the repository is refused; `server archive` retries), and the answer:
/// the server, with `archive` when one was given.
pub fn print_added(t: &Tenancy, added: ServerInfo, args: &BackrestArgs) -> Result<(), Error> {
    let server = added.id.clone();
    let Some(archive) = archive_of_added(t, &server, args)? else {
        print(&added);
        return Ok(());
    };
    let mut v = serde_json::to_value(&added).expect("serializable");
    v["archive"] = serde_json::to_value(&archive).expect("serializable");
    print(&v);
    Ok(())
}

fn archive_of_added(
    t: &Tenancy,
    server: &str,
    args: &BackrestArgs,
) -> Result<Option<ServerArchive>, Error> {
    let (Some(stanza), Some(file)) = (&args.backrest_stanza, &args.backrest_config) else {
        return Ok(None);
    };
    let settings = read_settings(file)?;
    t.server_archive(server, stanza, &settings)
        .map(Some)
        .map_err(|e| {
            e.with_context(&format!(
                "server {server} is registered, but its repository was refused (fix it, then `dl-tenancy server archive --name {server} ...`)"
            ))
        })
}

fn print<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}
