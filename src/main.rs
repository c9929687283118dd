//! The `actiond` command line: serve [--dev] | token | migrate | openapi.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actiond::auth::{Scope, mint, parse_ttl};
use actiond::domain::TenantId;
use actiond::settings::{JWT_SECRET_MIN_BYTES, Settings};
use actiond::store::{Store, redacted};
use actiond::whatsapp::sandbox::{SANDBOX_ACCESS_TOKEN, SANDBOX_WABA_ID, Sandbox};
use actiond::{App, dev, openapi};
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc rather than glibc's malloc: creates and sends ran 15-30 % faster
/// under `scripts/bench`. Built without transparent huge pages, with which
/// its peak RSS there was 101-105 MB rather than 75.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3 keeps each thread's freed pages for a second before giving
/// them back (`purge_delay`, 1,000 ms), so every thread that ever allocated
/// holds a reserve: at 10 ms, mimalloc 2's default, peak RSS under
/// `scripts/bench` fell from 68-71 to 58-63 MB on PostgreSQL (a thread per
/// session) and from 52-56 to 48-53 MB on SQLite, at the same rates.
/// `MIMALLOC_PURGE_DELAY` still overrides it.
fn purge_freed_memory_sooner() {
    /// `mi_option_purge_delay` in mimalloc.h's `mi_option_t`.
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        /// Sets an option unless the environment set it.
        fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: a plain store into mimalloc's option table, which takes any value.
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, 10) }
}

#[derive(Parser)]
#[command(name = "actiond", version, about = "Stores, validates and runs WhatsApp actions for AI voice agents")]
struct Cli {
    /// A TOML file with the same keys as the ACTIOND_* variables (which override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Zero setup: embedded SQLite, generated secrets and the WhatsApp sandbox.
        #[arg(long)]
        dev: bool,
        /// Where dev mode keeps its database and generated secrets.
        #[arg(long, default_value = dev::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Dev mode: milliseconds after a send at which the sandbox reports sent, delivered, read.
        #[arg(long, value_delimiter = ',', default_values_t = [200, 600, 1200])]
        sandbox_delays_ms: Vec<u64>,
    },
    /// Print an HS256 bearer token signed with the configured secret.
    Token {
        #[arg(long)]
        tenant: String,
        /// actions:read, actions:write, actions:execute or whatsapp:admin; repeat for more. None: every scope.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime such as 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with dev mode's generated secret.
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value = dev::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Run the WhatsApp sandbox alone, as a local stand-in for Meta's Graph
    /// API that `serve` reaches through ACTIOND_WHATSAPP_GRAPH_URL. It posts no
    /// status webhooks: it has no app to post them to.
    Sandbox {
        /// Address to listen on; port 0 picks a free one (it is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Phone numbers in the sandbox's WABA, each a sender of its own.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        phone_numbers: u16,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document that /openapi.json serves.
    Openapi,
}

fn main() -> ExitCode {
    purge_freed_memory_sooner();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("actiond: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { dev, data_dir, sandbox_delays_ms } => {
            let delays: [u64; 3] = sandbox_delays_ms
                .try_into()
                .map_err(|_| "--sandbox-delays-ms takes three numbers: sent,delivered,read (e.g. 200,600,1200)".to_owned())?;
            let delays = delays.map(Duration::from_millis);
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            let served = runtime.block_on(serve(settings, dev.then_some((data_dir, delays))));
            // What still runs is what the grace does not wait for: events under
            // way (delivered again once their leases run out) and their DNS
            // look-ups on blocking threads, which a plain drop would wait for.
            runtime.shutdown_background();
            served
        }
        Command::Token { tenant, scopes, ttl, dev, data_dir } => {
            let settings = if dev { dev::prepare(settings, &data_dir)? } else { settings };
            let secret = settings.jwt_secret.as_deref().ok_or("ACTIOND_JWT_SECRET is missing: tokens are signed with it")?;
            if secret.len() < JWT_SECRET_MIN_BYTES {
                return Err(format!("ACTIOND_JWT_SECRET must be at least {JWT_SECRET_MIN_BYTES} bytes"));
            }
            let scopes = scopes
                .iter()
                .map(|s| {
                    Scope::parse(s)
                        .ok_or_else(|| format!("--scope {s}: use actions:read, actions:write, actions:execute or whatsapp:admin"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ttl = parse_ttl(&ttl).map_err(|e| format!("--ttl {e}"))?;
            // The server's own rule: a token naming a blank tenant would be refused.
            let tenant = TenantId::new(tenant).ok_or("--tenant: must name a tenant (not blank, no NUL)")?;
            let token = mint(secret, tenant.as_str(), &scopes, ttl, settings.jwt_issuer.as_deref(), settings.jwt_audience.as_deref());
            print_out(&format!("{token}\n"))
        }
        Command::Sandbox { listen, phone_numbers } => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(sandbox(&listen, phone_numbers.into()))
        }
        Command::Migrate => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(Store::open(&settings.database_url, 1))?;
            print_out(&format!("migrations applied to {}\n", redacted(&settings.database_url)))
        }
        Command::Openapi => print_out(&openapi::document()),
    }
}

/// Writes a command's output. A reader that stopped early (`| head`) ends
/// it quietly, as it does any Unix tool, rather than with a panic.
fn print_out(text: &str) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write to standard output: {error}")),
        _ => Ok(()),
    }
}

/// Runs the service; `dev` holds dev mode's data directory and sandbox delays.
async fn serve(settings: Settings, dev: Option<(PathBuf, [Duration; 3])>) -> Result<(), String> {
    let settings = match &dev {
        Some((dir, _)) => dev::prepare(settings, dir)?,
        None => settings,
    };
    let sandbox = dev.as_ref().map(|(_, delays)| {
        let sandbox = Sandbox::new();
        sandbox.set_status_delays(*delays);
        sandbox
    });
    let dev_data_dir = dev.map(|(dir, _)| dir);
    let app = App::build(&settings, sandbox.clone()).await?;
    if let Some(sandbox) = &sandbox {
        dev::connect_sandbox(sandbox, &app, &settings);
    }
    let state = app.state().clone();
    let banner = dev_data_dir.as_ref().map(|dir| dev::banner(&app, &settings, dir));
    let server = tokio::spawn(app.run(shutdown_signal()));
    if let Some(banner) = banner {
        dev::register_sandbox_sender(&state).await?;
        println!("{banner}");
    }
    server.await.map_err(|e| e.to_string())??;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the sandbox's Graph API alone until SIGTERM or Ctrl-C.
async fn sandbox(listen: &str, phone_numbers: usize) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("--listen: cannot bind {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let sandbox = Sandbox::new();
    sandbox.set_phone_numbers(phone_numbers);
    let senders = sandbox.phone_number_ids().join(",");
    println!("the sandbox Graph API is at http://{address}: sender {senders}, WABA {SANDBOX_WABA_ID}, access token {SANDBOX_ACCESS_TOKEN}");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    actiond::http::server::serve(listener, sandbox.router(), stopping).await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACTIOND_LOG").unwrap_or_else(|_| "info".into());
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}
