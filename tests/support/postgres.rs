//! PostgreSQL for tests: a private schema per test, dropped when the test is
//! done, and a TCP proxy in front of the server that a test can make
//! unreachable and bring back.
//!
//! The server is `TEST_DATABASE_URL` (default
//! `postgres://root@127.0.0.1:5432/test`, as on the development machines and in
//! CI).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub const DEFAULT_DATABASE_URL: &str = "postgres://root@127.0.0.1:5432/test";

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

pub fn server_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&database_url())
        .expect("TEST_DATABASE_URL is a PostgreSQL URL")
        // Connections come and go by the hundred; their log lines are noise.
        .disable_statement_logging()
}

/// A schema of its own for one test, so tests run in parallel without seeing
/// each other's tables or notices; dropped with everything in it on drop.
pub struct TestSchema {
    name: String,
}

impl TestSchema {
    pub async fn new() -> Self {
        let name = format!("api_tokens_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin().await;
        admin
            .execute(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .await
            .expect("the test schema is created");
        admin.close().await.ok();
        Self { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connect options whose connections work in this schema.
    pub fn options(&self) -> PgConnectOptions {
        self.options_via(server_options())
    }

    /// `base` (pointing at a proxy, say), working in this schema.
    pub fn options_via(&self, base: PgConnectOptions) -> PgConnectOptions {
        base.options([("search_path", self.name.as_str())])
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name
        );
        // Drop runs inside the test's runtime, which cannot block on itself.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = server_options().connect().await?;
                admin.execute(AssertSqlSafe(sql)).await?;
                admin.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {dropped:?}", self.name);
        }
    }
}

/// A plain connection to the server, outside any test schema.
pub async fn admin() -> PgConnection {
    server_options()
        .connect()
        .await
        .expect("PostgreSQL at TEST_DATABASE_URL answers")
}

/// Ends a server process (`pg_terminate_backend`), as an administrator or a
/// crashed network would.
pub async fn terminate_backend(pid: u32) {
    let mut admin = admin().await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(i32::try_from(pid).expect("a PostgreSQL pid fits an int4"))
        .fetch_one(&mut admin)
        .await
        .expect("pg_terminate_backend runs");
    assert!(ended, "backend {pid} was not running");
    admin.close().await.ok();
}

/// A TCP proxy on 127.0.0.1 in front of the server. Closing its port and
/// cutting its connections makes the server unreachable to whoever connects
/// through it, deterministically and without touching the server.
pub struct Proxy {
    addr: SocketAddr,
    target: (String, u16),
    acceptor: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    pub async fn start() -> Self {
        let server = server_options();
        let target = (server.get_host().to_owned(), server.get_port());
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = socket.local_addr().unwrap();
        let proxy = Self {
            addr,
            target,
            acceptor: Mutex::new(None),
            connections: Arc::default(),
        };
        proxy.serve(socket);
        proxy
    }

    /// Connect options for the server through this proxy.
    pub fn options(&self) -> PgConnectOptions {
        server_options().host("127.0.0.1").port(self.addr.port())
    }

    fn serve(&self, socket: TcpSocket) {
        let listener = socket.listen(64).unwrap();
        let target = self.target.clone();
        let connections = Arc::clone(&self.connections);
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.lock().await.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.acceptor.lock().unwrap() = Some(acceptor);
    }

    /// Closes the port: new connections are refused. Open ones keep working.
    pub async fn close_port(&self) {
        let acceptor = self.acceptor.lock().unwrap().take();
        if let Some(acceptor) = acceptor {
            acceptor.abort();
            // Once the task is gone, so is its listening socket.
            let _ = acceptor.await;
        }
    }

    /// Opens the port again, at the same address.
    pub async fn open_port(&self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        self.serve(socket);
    }

    /// Cuts every open connection, as a dying server or network would.
    pub async fn cut_connections(&self) {
        self.connections.lock().await.shutdown().await;
    }
}
