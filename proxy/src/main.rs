use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgshift::catalog::CatalogError;
use pgshift::config_file::{self, LoadError};
use pgshift::logging;
use pgshift::rewrites::Catalogs;
use pgshift_rules::config::Config;
use pgshift_rules::rewrite::Rewrite;

/// A Postgres wire-protocol proxy for moving an application from an OLD
/// database to a NEW one without downtime.
#[derive(Parser)]
#[command(
    name = "pgshift",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Serve with this config (same as `pgshift run --config FILE`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format; overrides `telemetry.log_format`.
    #[arg(long, value_enum, global = true)]
    log_format: Option<logging::Format>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients with the given configuration.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration, print the compiled result, list every error.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Do not connect to the backends to check the rewrite maps against
        /// their catalogs (for when a backend is unreachable).
        #[arg(long)]
        skip_catalog: bool,
    },
    /// Show how a statement is classified, which rule matches, and where it
    /// goes, for a session described by the flags.
    Explain {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The session's user name.
        #[arg(long, default_value = "app")]
        user: String,
        /// The database the client asks for.
        #[arg(long, default_value = "app")]
        database: String,
        /// The session's application_name.
        #[arg(long = "application", default_value = "")]
        application_name: String,
        /// The client's address.
        #[arg(long, value_name = "IP")]
        client_addr: Option<std::net::IpAddr>,
        /// The key of `sticky: session` rules (each session draws one at
        /// random; give one to see where such a session would go).
        #[arg(long, value_name = "N", default_value_t = 0)]
        key: u64,
        /// Do not read the backends' catalogs (`SELECT *` over renamed
        /// columns is then shown unexpanded).
        #[arg(long)]
        skip_catalog: bool,
        /// The SQL text (several statements allowed).
        sql: String,
    },
    /// Start two throwaway local Postgres clusters with pgshift in front and
    /// walk through a migration.
    Demo {
        /// Run unattended and exit when done instead of waiting for Ctrl-C.
        #[arg(long)]
        yes: bool,
    },
}

const EXIT_INVALID: u8 = 1;
const EXIT_RUNTIME: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match (cli.command, cli.config) {
        (Some(c), _) => c,
        (None, Some(config)) => Command::Run { config },
        (None, None) => {
            eprintln!("pgshift: give a subcommand or --config FILE (see pgshift --help)");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    match command {
        Command::Check {
            config,
            skip_catalog,
        } => check(&config, skip_catalog),
        Command::Explain {
            config,
            user,
            database,
            application_name,
            client_addr,
            key,
            skip_catalog,
            sql,
        } => {
            let config = match config_file::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            let ctx = pgshift_rules::route::SessionContext {
                user: &user,
                database: &database,
                application_name: &application_name,
                client_addr,
                session_key: key,
            };
            let classifier = pgshift_rules::classify::Classifier::new(16);
            print!(
                "{}",
                pgshift_rules::route::explain(&config, &classifier, &ctx, &sql)
            );
            let catalogs = if skip_catalog {
                Catalogs::default()
            } else {
                let (catalogs, errors) = read_catalogs(&config);
                for e in errors {
                    println!("note: {e}; SELECT * is shown unexpanded there");
                }
                catalogs
            };
            let rewriters = pgshift::rewrites::rewriters(&config, &catalogs, None);
            for &b in pgshift_rules::config::BackendId::ALL {
                let sent = match rewriters[b.index()].as_deref() {
                    None => sql.clone(),
                    Some(rw) => match rw.rewrite_uncached(&sql) {
                        Rewrite::Unchanged => sql.clone(),
                        Rewrite::Changed(s) => s.to_string(),
                        Rewrite::Refused(reason) => format!("(refused: {reason})"),
                    },
                };
                println!("{:<11}{sent}", format!("sql {b}:"));
            }
            ExitCode::SUCCESS
        }
        Command::Run { config } => run(&config, cli.log_format),
        Command::Demo { yes } => {
            // The tour prints its own story; logs only when something is wrong.
            logging::init_with_default(cli.log_format.unwrap_or(logging::Format::Text), "warn");
            runtime_then(|| async move { pgshift::demo::run(yes).await })
        }
    }
}

/// Reads both backends' catalogs when `config` has rewrite maps.
fn read_catalogs(config: &Config) -> (Catalogs, Vec<CatalogError>) {
    if !Catalogs::default().stale_for(config) {
        return (Catalogs::default(), Vec::new());
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return (
                Catalogs::default(),
                vec![CatalogError::Runtime(e.to_string())],
            )
        }
    };
    rt.block_on(async {
        let tls = pgshift::tls::backend_connector().ok();
        Catalogs::read(config, tls.as_ref(), pgshift::catalog::DEFAULT_TIMEOUT).await
    })
}

fn check(path: &std::path::Path, skip_catalog: bool) -> ExitCode {
    match config_file::load(path) {
        Ok(config) => {
            if !skip_catalog {
                let (catalogs, errors) = read_catalogs(&config);
                if !errors.is_empty() {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    eprintln!(
                        "cannot check the rewrite maps against the catalogs; pass --skip-catalog to check without them"
                    );
                    return ExitCode::from(EXIT_RUNTIME);
                }
                let problems = catalogs.check(&config);
                if !problems.is_empty() {
                    eprintln!(
                        "{}: the rewrite maps do not match the catalogs:",
                        path.display()
                    );
                    for p in problems {
                        eprintln!("  {p}");
                    }
                    return ExitCode::from(EXIT_INVALID);
                }
            }
            println!("{} is valid.\n", path.display());
            let text = config.describe();
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn run(path: &std::path::Path, log_format: Option<logging::Format>) -> ExitCode {
    let config = match config_file::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(match e {
                LoadError::Read { .. } => EXIT_RUNTIME,
                _ => EXIT_INVALID,
            });
        }
    };
    let format = log_format.unwrap_or(match config.telemetry.log_format {
        pgshift_rules::config::LogFormat::Json => logging::Format::Json,
        pgshift_rules::config::LogFormat::Text => logging::Format::Text,
    });
    // Held until the runtime is gone, so the last spans are flushed.
    let _traces = match logging::init_with_traces(format, config.telemetry.otlp_endpoint.as_deref())
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("telemetry.otlp_endpoint: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let path = path.to_path_buf();
    runtime_then(|| async move { serve(config, path).await })
}

async fn serve(config: pgshift_rules::config::Config, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Before the proxy is reachable: SIGHUP's default action is to exit.
    let hangup = signal(SignalKind::hangup())?;
    let proxy = pgshift::server::start_with(config, Some(path)).await?;
    proxy.reload_on_sighup(hangup);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down: no new connections, waiting for sessions to finish");
    proxy.begin_shutdown();
    let mut second = std::pin::pin!(async {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    });
    let proxy_handle = &proxy;
    tokio::select! {
        _ = &mut second => {
            tracing::info!("second signal: closing sessions now");
            proxy_handle.force_shutdown();
        }
        _ = wait_idle(proxy_handle) => {}
    }
    proxy.wait().await;
    Ok(())
}

/// Polls nothing itself: resolves when the proxy's own shutdown completes.
async fn wait_idle(proxy: &pgshift::Proxy) {
    proxy.finished().await;
}

/// The main thread runs the listener, the admin server and reloads;
/// sessions and mirrors get threads of their own (see `pgshift::workers`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn runtime_then<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgshift: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgshift: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
