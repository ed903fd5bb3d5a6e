//! A load run with a correctness oracle: a real hyper server with the layer and
//! 64 concurrent keep-alive clients sending a mix of valid, expired, revoked,
//! policy-refused, wrong-checksum, unknown and malformed tokens (and requests
//! without one), while a changer thread revokes tokens and flips the policy
//! `all_users` → `selected` (role `dev`) → `none` → … at irregular moments
//! *during* the load (`--changes` of them, at random points of the run).
//!
//! Every change is logged with `begin` (just before the call) and `end` (just
//! after it returned: `revoke` and `set_policy` take effect on this instance
//! before they return). Every request is logged with `sent` (just before
//! sending) and `received` (just after the response head). After the run each
//! response is judged by the moment it was in flight:
//!
//! * a change with `end <= sent` was in effect;
//! * a change with `begin >= received` was not;
//! * the changes in between overlapped the request, which may have seen any
//!   prefix of them (in order): the acceptable statuses are the union of the
//!   decisions of those states. Such requests are counted as "ambiguous".
//!
//! A status outside the acceptable set is a wrong decision; any 5xx is an
//! unplanned 5xx. Either makes the exit status 1.
//!
//! `--break-oracle [revocations|selected|timing]` judges with a deliberately
//! wrong rule, to show the oracle can fail: `revocations` (the default) ignores
//! revocations, `selected` treats `selected` as `all_users`, `timing` ignores
//! the in-flight window and judges every request by the state at `received`.
//!
//! `cargo run --release --all-features --example oracle -- [--requests 204800]
//! [--changes 160] [--seed N] [--break-oracle [RULE]]`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use time::macros::datetime;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_api_tokens::ApiTokens;
use tower_api_tokens::clock::ManualClock;
use tower_api_tokens::policy::{Lifetime, Policy, Rule};
use tower_api_tokens::store::{Directory, MemoryStore, TokenId, User, UserId};

const CONNECTIONS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    AllUsers,
    DevOnly,
    Nobody,
}

impl Mode {
    fn next(self) -> Self {
        match self {
            Self::AllUsers => Self::DevOnly,
            Self::DevOnly => Self::Nobody,
            Self::Nobody => Self::AllUsers,
        }
    }

    fn policy(self) -> Policy {
        match self {
            Self::AllUsers => Policy::AllUsers {
                lifetime: Lifetime::days(90),
            },
            Self::DevOnly => Policy::Selected {
                rules: vec![Rule::role("dev", Lifetime::days(90))],
            },
            Self::Nobody => Policy::None,
        }
    }
}

/// A token of the pool: its decision depends on the state.
struct Tok {
    header: String,
    id: TokenId,
    dev: bool,
    expired: bool,
}

/// How a request's answer is judged.
#[derive(Clone, Copy)]
enum Judge {
    /// A pool token (index into the pool).
    Token(usize),
    /// Junk or no credential: the same answer in every state.
    Fixed(StatusCode),
}

/// What a request carries (`None`: no `Authorization` header) and how it is judged.
struct Case {
    header: Option<String>,
    judge: Judge,
}

#[derive(Clone, Copy, Debug)]
enum ChangeKind {
    Revoke(usize),
    Policy(Mode),
}

struct Change {
    begin: Instant,
    end: Instant,
    kind: ChangeKind,
}

struct Sample {
    case: usize,
    sent: Instant,
    received: Instant,
    got: StatusCode,
}

/// Which wrong rule `--break-oracle` uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OracleRule {
    Correct,
    IgnoreRevocations,
    SelectedIsAllUsers,
    StateAtReceived,
}

/// The expected decisions, from the change log.
struct Oracle<'a> {
    pool: &'a [Tok],
    /// `modes[k]`: the mode after the first `k` changes.
    modes: Vec<Mode>,
    /// Per pool token: the index of the change that revoked it (`usize::MAX`: none).
    revoked_by: Vec<usize>,
    begins: Vec<Instant>,
    ends: Vec<Instant>,
    rule: OracleRule,
}

impl<'a> Oracle<'a> {
    fn new(pool: &'a [Tok], log: &[Change], rule: OracleRule) -> Self {
        let mut modes = vec![Mode::AllUsers];
        let mut revoked_by = vec![usize::MAX; pool.len()];
        for (k, change) in log.iter().enumerate() {
            let mut mode = modes[k];
            match change.kind {
                ChangeKind::Revoke(i) => revoked_by[i] = revoked_by[i].min(k),
                ChangeKind::Policy(m) => mode = m,
            }
            modes.push(mode);
        }
        Self {
            pool,
            modes,
            revoked_by,
            begins: log.iter().map(|c| c.begin).collect(),
            ends: log.iter().map(|c| c.end).collect(),
            rule,
        }
    }

    /// The decision for pool token `tok` in the state after the first `k` changes.
    fn decision(&self, tok: usize, k: usize) -> StatusCode {
        let t = &self.pool[tok];
        let revoked = self.revoked_by[tok] < k && self.rule != OracleRule::IgnoreRevocations;
        let refused_by_policy = match self.modes[k] {
            Mode::AllUsers => false,
            Mode::DevOnly => !t.dev && self.rule != OracleRule::SelectedIsAllUsers,
            Mode::Nobody => true,
        };
        if t.expired || revoked || refused_by_policy {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        }
    }

    /// The states a request in flight from `sent` to `received` may have seen:
    /// those after the first `k` changes, for `k` in the returned range.
    fn window(&self, sent: Instant, received: Instant) -> (usize, usize) {
        // Changes run one after another, so both lists are sorted.
        let surely_in = self.ends.partition_point(|end| *end <= sent);
        let maybe_in = self.begins.partition_point(|begin| *begin < received);
        (surely_in, maybe_in.max(surely_in))
    }
}

/// xorshift64*: enough randomness for a load mix, and reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        // `n` is small; the modulo bias is irrelevant here.
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(u64::MAX)).unwrap_or(0)
    }
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn break_rule() -> OracleRule {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--break-oracle") else {
        return OracleRule::Correct;
    };
    match args.get(i + 1).map(String::as_str) {
        None | Some("revocations") => OracleRule::IgnoreRevocations,
        Some(v) if v.starts_with("--") => OracleRule::IgnoreRevocations,
        Some("selected") => OracleRule::SelectedIsAllUsers,
        Some("timing") => OracleRule::StateAtReceived,
        Some(other) => {
            eprintln!("--break-oracle: unknown rule {other:?} (revocations, selected, timing)");
            std::process::exit(2);
        }
    }
}

fn user(name: &str, role: &str) -> User {
    User {
        id: UserId::new(),
        username: name.into(),
        roles: vec![role.into()],
        identity_provider: "local".into(),
    }
}

fn micros(t0: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(t0).as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let requests = usize::try_from(arg("--requests", 204_800)).unwrap_or(usize::MAX);
    let changes = usize::try_from(arg("--changes", 160)).unwrap_or(usize::MAX);
    let default_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let seed = arg("--seed", default_seed) | 1;
    let rule = break_rule();

    let store = MemoryStore::new();
    let dev = user("dev", "dev");
    let ops = user("ops", "ops");
    for u in [&dev, &ops] {
        store.create_user(u, &"pw".into()).await.expect("user");
    }
    let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
    let tokens = ApiTokens::builder()
        .backend(store)
        .clock(clock.clone())
        .build()
        .await
        .expect("tokens");

    // Expired: issued under a 1 h lifetime, then the clock moves 2 h on.
    let one_hour = Policy::AllUsers {
        lifetime: "1h".parse().expect("lifetime"),
    };
    tokens.set_policy(one_hour).await.expect("policy");
    let mut pool: Vec<Tok> = Vec::new();
    for (u, is_dev) in [(&dev, true), (&ops, false)] {
        for _ in 0..20 {
            let t = tokens.issue(u.id).await.expect("issue");
            pool.push(Tok {
                header: format!("Bearer {}", t.token.expose()),
                id: t.record.id,
                dev: is_dev,
                expired: true,
            });
        }
    }
    clock.advance(Duration::from_secs(2 * 3600));
    // The run starts under Mode::AllUsers (the oracle's state 0).
    tokens
        .set_policy(Mode::AllUsers.policy())
        .await
        .expect("policy");
    // Valid tokens of both users.
    for (u, is_dev) in [(&dev, true), (&ops, false)] {
        for _ in 0..200 {
            let t = tokens.issue(u.id).await.expect("issue");
            pool.push(Tok {
                header: format!("Bearer {}", t.token.expose()),
                id: t.record.id,
                dev: is_dev,
                expired: false,
            });
        }
    }
    let mut cases: Vec<Case> = pool
        .iter()
        .enumerate()
        .map(|(i, t)| Case {
            header: Some(t.header.clone()),
            judge: Judge::Token(i),
        })
        .collect();
    // Wrong checksum (a valid token with its last character changed), unknown,
    // malformed, none.
    for t in pool.iter().take(50) {
        let mut h = t.header.clone();
        let last = h.pop().unwrap_or('0');
        h.push(if last == 'A' { 'B' } else { 'A' });
        cases.push(Case {
            header: Some(h),
            judge: Judge::Fixed(StatusCode::UNAUTHORIZED),
        });
    }
    for _ in 0..50 {
        let t = tokens.format().generate().expect("random");
        cases.push(Case {
            header: Some(format!("Bearer {}", t.expose())),
            judge: Judge::Fixed(StatusCode::UNAUTHORIZED),
        });
    }
    for h in ["Bearer", "Bearer a b", "Bearer \"x\""] {
        cases.push(Case {
            header: Some(h.to_owned()),
            judge: Judge::Fixed(StatusCode::BAD_REQUEST),
        });
    }
    cases.push(Case {
        header: None,
        judge: Judge::Fixed(StatusCode::UNAUTHORIZED),
    });
    let cases = Arc::new(cases);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = ServiceBuilder::new()
        .layer(tokens.layer())
        .service_fn(hello);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    // Connect every client first, so the load is running when the changer starts.
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        senders.push(sender);
    }

    let per_connection = requests.div_ceil(CONNECTIONS);
    let total = per_connection * CONNECTIONS;
    let done = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for (c, mut sender) in senders.into_iter().enumerate() {
        let (cases, completed) = (Arc::clone(&cases), Arc::clone(&completed));
        let n = per_connection;
        let mut rng = Rng(seed ^ (u64::try_from(c).unwrap_or(0) + 1).wrapping_mul(0x9e37_79b9));
        clients.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let case = rng.below(cases.len());
                let mut req = Request::get("/").header("host", "127.0.0.1");
                if let Some(h) = &cases[case].header {
                    req = req.header("authorization", h.as_str());
                }
                let req = req.body(Full::<Bytes>::default()).expect("req");
                let sent = Instant::now();
                let res = sender.send_request(req).await.expect("response");
                let received = Instant::now();
                let got = res.status();
                let _ = res.into_body().collect().await;
                completed.fetch_add(1, Ordering::Relaxed);
                samples.push(Sample {
                    case,
                    sent,
                    received,
                    got,
                });
            }
            samples
        }));
    }

    // The changer: its own OS thread. It makes `changes` changes at random
    // points of the run (drawn as request counts, so the number of changes does
    // not depend on the machine's speed), each after a further random 0–500 µs
    // delay, so changes land anywhere inside requests. Points drawn close
    // together make several changes overlap one request.
    let changer = {
        let tokens = tokens.clone();
        let (done, completed) = (Arc::clone(&done), Arc::clone(&completed));
        let handle = tokio::runtime::Handle::current();
        let ids: Vec<TokenId> = pool.iter().map(|t| t.id).collect();
        let mut revocable: Vec<usize> = (0..pool.len()).filter(|&i| !pool[i].expired).collect();
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let mut points: Vec<usize> = (0..changes).map(|_| rng.below(total)).collect();
        points.sort_unstable();
        std::thread::spawn(move || {
            let mut log: Vec<Change> = Vec::new();
            let mut mode = Mode::AllUsers;
            for point in points {
                while completed.load(Ordering::Relaxed) < point {
                    if done.load(Ordering::Acquire) {
                        return log;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                std::thread::sleep(Duration::from_micros(rng.next() % 500));
                let kind = if !revocable.is_empty() && rng.below(2) == 0 {
                    ChangeKind::Revoke(revocable.swap_remove(rng.below(revocable.len())))
                } else {
                    mode = mode.next();
                    ChangeKind::Policy(mode)
                };
                let begin = Instant::now();
                match kind {
                    ChangeKind::Revoke(i) => {
                        handle.block_on(tokens.revoke(ids[i])).expect("revoke");
                    }
                    ChangeKind::Policy(m) => {
                        handle
                            .block_on(tokens.set_policy(m.policy()))
                            .expect("policy");
                    }
                }
                let end = Instant::now();
                log.push(Change { begin, end, kind });
            }
            log
        })
    };

    let mut samples = Vec::with_capacity(total);
    for t in clients {
        samples.extend(t.await.expect("client"));
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    let log = tokio::task::spawn_blocking(move || changer.join().expect("changer"))
        .await
        .expect("join");

    // Judge every response by the window it was in flight.
    let oracle = Oracle::new(&pool, &log, rule);
    let last_received = samples.iter().map(|s| s.received).max().unwrap_or(started);
    let mid_run = log.iter().filter(|c| c.begin < last_received).count();
    let mid_run_revokes = log
        .iter()
        .filter(|c| c.begin < last_received && matches!(c.kind, ChangeKind::Revoke(_)))
        .count();
    let (mut wrong, mut fivexx, mut ambiguous, mut two_answers, mut saw_earlier) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut most_overlapping = 0;
    for s in &samples {
        if s.got.is_server_error() {
            fivexx += 1;
        }
        let (from, to) = oracle.window(s.sent, s.received);
        if to > from {
            ambiguous += 1;
            most_overlapping = most_overlapping.max(to - from);
        }
        if let Judge::Token(tok) = cases[s.case].judge {
            let latest = oracle.decision(tok, to);
            if (from..to).any(|k| oracle.decision(tok, k) != latest) {
                two_answers += 1;
                if s.got != latest {
                    saw_earlier += 1;
                }
            }
        }
        // The broken `timing` rule forgets the window: only the state at `received`.
        let from = if rule == OracleRule::StateAtReceived {
            to
        } else {
            from
        };
        let ok = match cases[s.case].judge {
            Judge::Fixed(want) => s.got == want,
            Judge::Token(tok) => (from..=to).any(|k| oracle.decision(tok, k) == s.got),
        };
        if !ok {
            wrong += 1;
            if wrong <= 10 {
                let what = match cases[s.case].judge {
                    Judge::Fixed(want) => format!("fixed case #{} (want {want})", s.case),
                    Judge::Token(tok) => {
                        let t = &pool[tok];
                        let accept: Vec<u16> = (from..=to)
                            .map(|k| oracle.decision(tok, k).as_u16())
                            .collect();
                        format!(
                            "{} token #{tok}{}{}, acceptable {accept:?} over states {from}..={to}",
                            if t.dev { "dev" } else { "ops" },
                            if t.expired { " (expired)" } else { "" },
                            match oracle.revoked_by[tok] {
                                usize::MAX => String::new(),
                                k => format!(" (revoked by change {k})"),
                            },
                        )
                    }
                };
                let near: Vec<String> = log
                    .iter()
                    .enumerate()
                    .skip(from.saturating_sub(1))
                    .take(to - from + 2)
                    .map(|(k, c)| {
                        format!(
                            "change {k} {:?} {:.1}..{:.1} µs",
                            c.kind,
                            micros(started, c.begin),
                            micros(started, c.end)
                        )
                    })
                    .collect();
                eprintln!(
                    "WRONG: got {} for {what}; in flight {:.1}..{:.1} µs; nearby: {near:?}",
                    s.got,
                    micros(started, s.sent),
                    micros(started, s.received),
                );
            }
        }
    }
    let total = samples.len();
    let (rate, share) = (
        total as f64 / elapsed.as_secs_f64(),
        100.0 * ambiguous as f64 / total.max(1) as f64,
    );
    println!(
        "oracle (seed {seed}, rule {rule:?}): {total} requests in {elapsed:.2?} ({rate:.0} req/s), {CONNECTIONS} connections"
    );
    println!(
        "  changes mid-run: {mid_run} ({mid_run_revokes} revocations, {} policy flips)",
        mid_run - mid_run_revokes
    );
    println!(
        "  ambiguous (in flight across a change): {ambiguous} ({share:.2} %), at most {most_overlapping} changes across one request; {two_answers} with two acceptable answers, {saw_earlier} of those answered by an earlier state"
    );
    println!("  wrong decisions: {wrong}; unplanned 5xx: {fivexx}");
    if wrong > 0 || fivexx > 0 {
        std::process::exit(1);
    }
}
