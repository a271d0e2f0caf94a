//! The `gatehouse` command line.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};

mod demo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gatehouse: an identity-aware application proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The public edge: HTTPS front, tunnels, registration.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// The connector inside the private network.
    Connector {
        #[command(subcommand)]
        command: ConnectorCommand,
    },
    /// Runs everything on this machine: a sample internal app, the service, a registered
    /// connector. Prints the URL to open; Ctrl-C stops.
    Demo {
        /// HTTPS port of the front.
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        /// Port of the tunnel listener.
        #[arg(long, default_value_t = 9443)]
        tunnel_port: u16,
        /// Port of the sample internal app (loopback only).
        #[arg(long, default_value_t = 18080)]
        app_port: u16,
        /// Directory for the demo's files (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The built-in development identity provider's tools.
    DevIdp {
        #[command(subcommand)]
        command: DevIdpCommand,
    },
    /// The demo's sample internal app (started by `demo`).
    #[command(hide = true)]
    DemoApp {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
    },
}

#[derive(Subcommand, Debug)]
enum DevIdpCommand {
    /// Prints a password hash for `[[dev_idp.users]] password_hash`; reads the password
    /// from standard input (one line).
    Hash {
        /// PBKDF2 iterations.
        #[arg(long, default_value_t = 600_000)]
        iterations: u32,
    },
    /// Prints a new base32 TOTP secret for `[[dev_idp.users]] totp_secret`.
    TotpSecret,
    /// Prints the current one-time code of a TOTP secret (for trying MFA without an app).
    Code {
        /// The base32 secret.
        #[arg(long)]
        secret: String,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceCommand {
    /// Runs the service (SIGHUP reloads the configuration, SIGTERM stops).
    Run {
        /// The service configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// With `[state] backend = "etcd"`: this instance's stable id (default: the host
        /// name and the tunnel port).
        #[arg(long)]
        instance_id: Option<String>,
        /// With `[state] backend = "etcd"`: the tunnel address connectors dial for this
        /// instance, `host:port` (default: public_name and the tunnel port).
        #[arg(long)]
        advertise: Option<String>,
    },
    /// Loads and validates the configuration, then exits.
    Check {
        /// The service configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Bootstrap tokens for connector registration.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Registered connectors.
    Connector {
        #[command(subcommand)]
        command: ConnectorAdminCommand,
    },
    /// The keys that seal session cookies (shared by every instance of a shared state).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apps managed through the store (`[state] backend = "etcd"`): every instance serves
    /// the published document instead of the `[[apps]]` of its own file.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Prints the pin of the connector CA (`sha256:...`) that `connector register --sign-in
    /// --ca-pin` takes.
    CaPin {
        /// The service configuration file (for its state directory).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Creates a token and prints it once (only its hash is stored).
    Create {
        /// The service configuration file (for its state directory).
        #[arg(long)]
        config: PathBuf,
        /// `admin` (may register connectors) or `viewer`.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Lifetime: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The token registers one connector only (used up atomically, also across
        /// instances sharing their state).
        #[arg(long)]
        single_use: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Lists the key ids, the sealing key first.
    List {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Adds a new sealing key; the old keys still open the sessions they sealed. Running
    /// instances take it up within a second.
    Rotate {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Removes a key that no longer seals: sessions it sealed end at once, everywhere.
    Retire {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The key id (see `list`).
        id: u8,
    },
}

#[derive(Subcommand, Debug)]
enum AppsCommand {
    /// Checks FILE (only `[[apps]]` tables, as in the configuration file) against the
    /// configuration's providers and locations, then publishes it to every instance.
    Publish {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The app document.
        file: PathBuf,
    },
    /// Prints the published app document and its revision.
    Show {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConnectorAdminCommand {
    /// Lists registered connectors.
    List {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Revokes a connector: its tunnels drop at once and it cannot connect again.
    Revoke {
        /// The service configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The connector id (see `list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConnectorCommand {
    /// Registers this connector with a service (once).
    Register {
        /// The service's tunnel address, `https://host:port`.
        #[arg(long)]
        service: String,
        /// The bootstrap token: `-` reads it from stdin, `@FILE` from a file; without this
        /// option (and without --sign-in) it comes from the GATEHOUSE_TOKEN environment
        /// variable. A literal token works too, but other local users can see command lines.
        #[arg(long, conflicts_with = "sign_in")]
        token: Option<String>,
        /// Enrol by an administrator's sign-in instead of a token: prints a web address and a
        /// code to enter there, and waits until an administrator signed in (the service's
        /// `[registration]` says who counts as one).
        #[arg(long, requires = "ca_pin")]
        sign_in: bool,
        /// With --sign-in: the service's connector CA, as `gatehouse service ca-pin` prints it
        /// (`sha256:` and 64 hex digits), so the sign-in goes to the right service.
        #[arg(long)]
        ca_pin: Option<String>,
        /// The connector group to join.
        #[arg(long, default_value = "default")]
        group: String,
        /// Where the connector keeps its key, certificate and identity.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Runs a registered connector (SIGTERM stops).
    Run {
        /// The directory `register` wrote.
        #[arg(long)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Service { command } => service(command),
        Command::Connector { command } => connector(command),
        Command::Demo {
            https_port,
            tunnel_port,
            app_port,
            dir,
        } => demo::run(demo::DemoOptions {
            https_port,
            tunnel_port,
            app_port,
            dir,
        }),
        Command::DemoApp { port } => demo::app(port),
        Command::DevIdp { command } => match command {
            DevIdpCommand::Hash { iterations } => {
                let mut password = String::new();
                std::io::stdin().read_line(&mut password)?;
                let password = password.trim_end_matches(['\r', '\n']);
                if password.is_empty() {
                    bail!("no password on standard input");
                }
                println!(
                    "{}",
                    gatehouse_service::devidp::hash_password(password, iterations)
                );
                Ok(())
            }
            DevIdpCommand::Code { secret } => {
                let now = gatehouse_service::unix_now();
                match gatehouse_service::devidp::totp(&secret, now) {
                    Some(code) => println!("{code:06}"),
                    None => bail!("the secret is not base32"),
                }
                Ok(())
            }
            DevIdpCommand::TotpSecret => {
                println!(
                    "{}",
                    gatehouse_service::devidp::new_totp_secret().map_err(anyhow::Error::msg)?
                );
                Ok(())
            }
        },
    }
}

fn service(command: ServiceCommand) -> anyhow::Result<()> {
    use gatehouse_service::{config, unix_now, Role, StateDir};
    match command {
        ServiceCommand::Run {
            config,
            instance_id,
            advertise,
        } => Ok(gatehouse_service::run_instance(
            &config,
            &gatehouse_service::Instance {
                id: instance_id,
                advertise,
            },
        )?),
        ServiceCommand::Check { config } => {
            let loaded = config::load(&config)?;
            println!(
                "{}: valid ({} apps, state in {})",
                config.display(),
                loaded.apps.len(),
                loaded.state_dir.display()
            );
            Ok(())
        }
        ServiceCommand::Token {
            command:
                TokenCommand::Create {
                    config,
                    role,
                    ttl,
                    single_use,
                },
        } => {
            let role =
                Role::parse(&role).ok_or_else(|| anyhow!("--role must be admin or viewer"))?;
            let ttl = parse_duration(&ttl)?;
            let loaded = config::load(&config)?;
            let state = gatehouse_service::open_control(&loaded)?;
            let ca = state.load_or_create_ca(unix_now())?;
            let token = state.create_token(role, ttl, single_use, &ca, unix_now())?;
            println!("{token}");
            Ok(())
        }
        ServiceCommand::Keys { command } => keys(command),
        ServiceCommand::Apps { command } => apps(command),
        ServiceCommand::CaPin { config } => {
            let loaded = config::load(&config)?;
            let state = gatehouse_service::open_control(&loaded)?;
            let ca = state.load_or_create_ca(unix_now())?;
            println!("sha256:{}", gatehouse_service::state::ca_pin(&ca));
            Ok(())
        }
        ServiceCommand::Connector { command } => {
            let config_path = match &command {
                ConnectorAdminCommand::List { config }
                | ConnectorAdminCommand::Revoke { config, .. } => config.clone(),
            };
            let loaded = config::load(&config_path)?;
            let state = gatehouse_service::open_control(&loaded)?;
            match command {
                ConnectorAdminCommand::List { .. } => {
                    println!(
                        "{:<20} {:<16} {:<10} {:<8} host",
                        "id", "group", "registered", "state"
                    );
                    for c in state.connectors() {
                        println!(
                            "{:<20} {:<16} {:<10} {:<8} {}",
                            c.id,
                            c.group,
                            c.registered,
                            if c.revoked { "revoked" } else { "active" },
                            c.hostname
                        );
                    }
                    Ok(())
                }
                ConnectorAdminCommand::Revoke { id, .. } => {
                    if !state.revoke(&id)? {
                        bail!("no connector {id} is registered");
                    }
                    // Tell a running service on this host at once (it also notices within
                    // 100 ms, and other instances through etcd).
                    if let Some(pid) = StateDir::open(&loaded.state_dir)?.pid() {
                        let _ = std::process::Command::new("kill")
                            .args(["-HUP", &pid.to_string()])
                            .status();
                    }
                    println!("connector {id} revoked");
                    Ok(())
                }
            }
        }
    }
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use gatehouse_core::cookie::keyfile;
    let (KeysCommand::List { config }
    | KeysCommand::Rotate { config }
    | KeysCommand::Retire { config, .. }) = &command;
    let loaded = gatehouse_service::config::load(config)?;
    let state = gatehouse_service::open_control(&loaded)?;
    let text = match command {
        KeysCommand::List { .. } => state.cookie_keys()?,
        KeysCommand::Rotate { .. } => {
            state.change_cookie_keys(&|text| Ok(keyfile::rotated(text)?.0))?
        }
        KeysCommand::Retire { id, .. } => {
            state.change_cookie_keys(&|text| keyfile::retired(text, id))?
        }
    };
    let ring = keyfile::from_text(&text)?;
    let ids: Vec<String> = ring.key_ids().map(|id| id.to_string()).collect();
    println!(
        "cookie keys: {} (key {} seals)",
        ids.join(" "),
        ring.current_key_id()
    );
    Ok(())
}

fn apps(command: AppsCommand) -> anyhow::Result<()> {
    let (AppsCommand::Publish { config, .. } | AppsCommand::Show { config }) = &command;
    let loaded = gatehouse_service::config::load(config)?;
    let state = gatehouse_service::open_control(&loaded)?;
    match command {
        AppsCommand::Publish { config, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Checked here against this configuration, so a mistake names the file, line and
            // key before any instance sees it.
            let checked = gatehouse_service::config::with_apps(&loaded, &config, &file, &text)?;
            let revision = state.publish_apps(&text)?;
            println!(
                "{} apps published at revision {revision}; every instance takes them up within a second",
                checked.apps.len()
            );
        }
        AppsCommand::Show { .. } => match state.shared_apps() {
            Some((text, revision)) => println!("# revision {revision}\n{text}"),
            None => {
                println!("# no app document published: apps come from each instance's file")
            }
        },
    }
    Ok(())
}

fn connector(command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Register {
            service,
            token,
            sign_in,
            ca_pin,
            group,
            state_dir,
        } => {
            let identity = match (sign_in, ca_pin) {
                (true, Some(pin)) => {
                    gatehouse_connector::enrol(&service, &pin, &group, &state_dir, |started| {
                        let complete = started
                            .verification_uri_complete
                            .as_deref()
                            .map(|uri| format!("\n  (or open {uri})"))
                            .unwrap_or_default();
                        println!(
                            "To enrol this connector, an administrator opens\n  {}\nand enters the code\n  {}{complete}\nWaiting (the code expires in {} s)...",
                            started.verification_uri, started.user_code, started.expires_in
                        );
                    })?
                }
                _ => {
                    let token = read_token(token)?;
                    gatehouse_connector::register(&service, &token, &group, &state_dir)?
                }
            };
            println!(
                "registered connector {} in group {}; state in {}",
                identity.connector_id,
                identity.group,
                state_dir.display()
            );
            Ok(())
        }
        ConnectorCommand::Run { state_dir } => Ok(gatehouse_connector::run(&state_dir)?),
    }
}

/// The token from `-` (stdin), `@FILE`, a literal, or GATEHOUSE_TOKEN.
fn read_token(arg: Option<String>) -> anyhow::Result<String> {
    let token = match arg.as_deref() {
        None => std::env::var("GATEHOUSE_TOKEN")
            .context("no --token given and GATEHOUSE_TOKEN is not set")?,
        Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(Path::new(file))
                .with_context(|| format!("reading the token from {file}"))?,
            None => arg.to_owned(),
        },
    };
    Ok(token.trim().to_owned())
}

/// `90`, `90s`, `15m`, `1h`, `7d` → seconds.
fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("bad duration {text}"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("bad duration {text}: use s, m, h or d"),
    };
    n.checked_mul(factor)
        .ok_or_else(|| anyhow!("duration {text} is too long"))
}
