//! The example service: personal API tokens over HTTP, on SQLite (or PostgreSQL).
//!
//! ```text
//! cargo run --all-features --example server -- [--listen 127.0.0.1:8080]
//!     [--database-url sqlite://api-tokens.db | postgres://user@host/db]
//!     [--admin-password …]
//! ```
//!
//! Environment: `API_TOKENS_ADMIN_PASSWORD` (the first start's admin password),
//! `API_TOKENS_SERVER_KEY` (≥ 32 bytes; shared by every instance), `RUST_LOG`.
//!
//! With PostgreSQL, run as many instances as you like on one database: each
//! hears the others' revocations, user and policy changes. Give them all the
//! same `API_TOKENS_SERVER_KEY` (or start them in one working directory, where
//! the key file lives), or a token re-fetched on one is not the one issued on
//! another.

mod app;

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tower_api_tokens::password::Password;
#[cfg(feature = "postgres")]
use tower_api_tokens::store::PostgresStore;
use tower_api_tokens::store::{Directory, SqliteStore, TokenStore, User, UserId};
use tower_api_tokens::{ApiTokens, ManageError, ServerKey, StoreError};

const USAGE: &str = "usage: server [--listen ADDR] [--database-url sqlite://PATH | postgres://URL] \
     [--admin-password PASSWORD]";
const KEY_FILE: &str = "api-tokens.key";
/// How long in-flight requests may take to finish after SIGTERM or Ctrl-C.
const DRAIN: Duration = Duration::from_secs(10);
/// The shortest admin password accepted (as for users created over the API).
const MIN_PASSWORD_CHARS: usize = 8;

struct Args {
    listen: SocketAddr,
    database_url: String,
    admin_password: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        database_url: "sqlite://api-tokens.db".to_owned(),
        admin_password: std::env::var("API_TOKENS_ADMIN_PASSWORD").ok(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => {
                args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?;
            }
            "--database-url" => args.database_url = value()?,
            "--admin-password" => args.admin_password = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if let Some(pw) = &args.admin_password
        && pw.chars().count() < MIN_PASSWORD_CHARS
    {
        return Err(format!(
            "the admin password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match start(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Checks everything that can be checked before anything is written (the key,
/// the address), then opens the store and serves.
async fn start(args: &Args) -> Result<(), Box<dyn Error>> {
    let url = &args.database_url;
    if url.starts_with("sqlite:") {
        let dir = sqlite_dir(url)?;
        let key = existing_server_key(&dir)?;
        let listener = bind(args.listen).await?;
        // A SQLite URL carries no password: safe to name in the error.
        let store = SqliteStore::connect(url)
            .await
            .map_err(|e| format!("opening {url}: {e}"))?;
        let key = key.map_or_else(|| create_server_key(&dir), Ok)?;
        let tokens = build(store, key, args).await?;
        serve(tokens, listener).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Several instances share the database; the key file, if any, lives in
        // the working directory, never in the database beside the hashes.
        let key = existing_server_key(Path::new("."))?;
        let listener = bind(args.listen).await?;
        run_postgres(url, key, listener, args).await
    } else {
        // The URL is not echoed: it may carry a password.
        Err("unsupported --database-url: use sqlite://PATH or postgres://…".into())
    }
}

#[cfg(feature = "postgres")]
async fn run_postgres(
    url: &str,
    key: Option<ServerKey>,
    listener: TcpListener,
    args: &Args,
) -> Result<(), Box<dyn Error>> {
    let store = PostgresStore::connect(url).await?;
    let key = key.map_or_else(|| create_server_key(Path::new(".")), Ok)?;
    let tokens = build(store.clone(), key, args).await?;
    // The other instances' revocations, user and policy changes, for as long
    // as this one serves.
    let changes = store.listen(tokens.clone())?;
    let served = serve(tokens, listener).await;
    changes.shutdown().await;
    served
}

#[cfg(not(feature = "postgres"))]
async fn run_postgres(
    _url: &str,
    _key: Option<ServerKey>,
    _listener: TcpListener,
    _args: &Args,
) -> Result<(), Box<dyn Error>> {
    Err("this build has no PostgreSQL support: build with --features postgres".into())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Box<dyn Error>> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}").into())
}

/// Builds everything through the builder, and the admin user on first start.
async fn build<B>(backend: B, key: ServerKey, args: &Args) -> Result<ApiTokens, Box<dyn Error>>
where
    B: TokenStore + Directory + Clone,
{
    let tokens = ApiTokens::builder()
        .backend(backend)
        .server_key(key)
        .realm(app::REALM)
        .build()
        .await?;
    ensure_admin(&tokens, args.admin_password.as_deref()).await?;
    Ok(tokens)
}

/// Serves until SIGTERM or Ctrl-C.
async fn serve(tokens: ApiTokens, listener: TcpListener) -> Result<(), Box<dyn Error>> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signalled = {
        let stopping = Arc::clone(&stopping);
        async move {
            shutdown_signal().await;
            stopping.notify_waiters();
        }
    };
    // The peer's address identifies the client for the password-attempt limit.
    let app = app::router(tokens.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signalled)
        .into_future();
    // In-flight requests get `DRAIN` to finish; a client that never completes
    // its request cannot hold the shutdown hostage.
    tokio::select! {
        served = server => served?,
        () = async { stopping.notified().await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("connections still open after {DRAIN:?}; closing them");
        }
    }
    // Write the last `last_used_at` notes.
    tokens.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// The folder of a `sqlite:` URL's file (the key file lives beside it).
fn sqlite_dir(url: &str) -> Result<PathBuf, String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(format!(
            "--database-url {url:?} names no file: use sqlite://PATH"
        ));
    }
    Ok(match Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && path != ":memory:" => dir.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// `API_TOKENS_SERVER_KEY`, or the key file in `dir` if it exists; `None` if a
/// key file must be created (which waits until the store has opened, so a
/// failed start leaves no key behind).
fn existing_server_key(dir: &Path) -> Result<Option<ServerKey>, Box<dyn Error>> {
    if let Ok(key) = std::env::var("API_TOKENS_SERVER_KEY") {
        return match ServerKey::new(key) {
            Ok(key) => Ok(Some(key)),
            Err(e) => Err(format!("API_TOKENS_SERVER_KEY: {e}").into()),
        };
    }
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(key) => Ok(Some(
            ServerKey::new(key.trim()).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display()).into()),
    }
}

/// Creates the key file in `dir` with a random key (or reads the one another
/// instance created a moment earlier).
fn create_server_key(dir: &Path) -> Result<ServerKey, Box<dyn Error>> {
    let path = dir.join(KEY_FILE);
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let key = hex::encode(bytes);
    // Written aside, then linked into place: an instance starting at the same
    // moment reads the whole key or none, and only one key wins.
    let draft = dir.join(format!("{KEY_FILE}.{}.new", std::process::id()));
    write_private(&draft, key.as_bytes())
        .map_err(|e| format!("writing {}: {e}", draft.display()))?;
    let linked = std::fs::hard_link(&draft, &path);
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new server key");
            Ok(ServerKey::new(key)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => existing_server_key(dir)?
            .ok_or_else(|| format!("{} vanished while starting", path.display()).into()),
        Err(e) => Err(format!("writing {}: {e}", path.display()).into()),
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

/// Creates the `admin` user on first start.
async fn ensure_admin(tokens: &ApiTokens, password: Option<&str>) -> Result<(), Box<dyn Error>> {
    let exists = || {
        if password.is_some() {
            println!("user admin exists already: the given admin password is not applied");
        }
        Ok(())
    };
    if tokens.user_by_name("admin").await?.is_some() {
        return exists();
    }
    let (password, generated) = match password {
        Some(p) => (p.to_owned(), false),
        None => (random_password()?, true),
    };
    let admin = User {
        id: UserId::new(),
        username: "admin".into(),
        roles: vec!["admin".into()],
        identity_provider: "local".into(),
    };
    match tokens
        .create_user(&admin, &Password::new(password.clone()))
        .await
    {
        Ok(()) => {}
        // Another instance on the same database, starting at the same moment,
        // created it first: its password is the one that counts.
        Err(ManageError::Store(StoreError::Conflict(_))) => return exists(),
        Err(e) => return Err(e.into()),
    }
    if generated {
        // Printed once, to the terminal, never to the log.
        println!("created user admin with password: {password}");
    } else {
        println!("created user admin with the given password");
    }
    Ok(())
}

fn random_password() -> Result<String, Box<dyn Error>> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    // 256 is not a multiple of 56; the bias (< 1 bit over 20 characters) is harmless here.
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
