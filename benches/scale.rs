//! Cache hits with 1k, 100k and 1M cached tokens, accessed uniformly at random
//! and Zipf-distributed, and the resident memory each cached token costs.
//!
//! `cargo bench --all-features --bench scale` (takes about a minute and ~2 GiB).
//! A plain harness: criterion cannot report resident memory.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use http::HeaderValue;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_api_tokens::ApiTokens;
use tower_api_tokens::store::MemoryStore;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const DRAWS: usize = 200_000;
const BATCHES: usize = 7;

/// xorshift64*: a tiny, good-enough PRNG for picking tokens.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn uniform(n: usize, rng: &mut Rng) -> Vec<usize> {
    (0..DRAWS)
        .map(|_| (rng.next_f64() * n as f64) as usize % n)
        .collect()
}

/// Zipf with exponent 1: rank k drawn with probability ∝ 1/k.
fn zipf(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for k in 1..=n {
        total += 1.0 / k as f64;
        cdf.push(total);
    }
    (0..DRAWS)
        .map(|_| {
            let u = rng.next_f64() * total;
            cdf.partition_point(|&c| c < u).min(n - 1)
        })
        .collect()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn bare(
    _r: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    Ok(http::Response::new(Default::default()))
}

/// ns per request over `order`, median of `BATCHES` passes.
async fn hit_cost<S>(svc: &mut S, headers: &[HeaderValue], order: &[usize]) -> f64
where
    S: Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<http_body_util::Full<bytes::Bytes>>,
        >,
    S::Error: std::fmt::Debug,
{
    let mut per = Vec::new();
    for _ in 0..BATCHES {
        let start = Instant::now();
        for &i in order {
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(support::request(&headers[i]))
                .await
                .unwrap();
            black_box(res);
        }
        per.push(start.elapsed().as_nanos() as f64 / order.len() as f64);
    }
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut results = Vec::new();
        for n in SIZES {
            let store = MemoryStore::new();
            let user = support::bench_user(&store).await;
            let tokens = ApiTokens::builder()
                .backend(store)
                .cache_capacity(2_000_000)
                .cache_ttl(Duration::from_secs(3600))
                .build()
                .await
                .unwrap();
            let mut headers = Vec::with_capacity(n);
            let mut digests = Vec::with_capacity(n);
            for _ in 0..n {
                let t = tokens.issue(user.id).await.unwrap();
                digests.push(support::ref_digest(t.token.expose()));
                headers.push(HeaderValue::try_from(format!("Bearer {}", t.token.expose())).unwrap());
            }

            let mut svc = ServiceBuilder::new().layer(tokens.layer()).service_fn(bare);
            let before = rss_bytes();
            for h in &headers {
                let res = svc.ready().await.unwrap().call(support::request(h)).await.unwrap();
                assert_eq!(res.status(), 200);
            }
            // The first use of each token queued a `last_used_at` note; let the
            // writer drain them so only the cache is left in the figure.
            tokens.flush().await;
            let per_token = (rss_bytes().saturating_sub(before)) as f64 / n as f64;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let uni = hit_cost(&mut svc, &headers, &uniform(n, &mut rng)).await;
            let zip = hit_cost(&mut svc, &headers, &zipf(n, &mut rng)).await;
            println!(
                "scale/{n}: hit uniform {uni:.0} ns, hit zipf {zip:.0} ns, resident memory {per_token:.0} B per cached token"
            );
            // The reference, while the layer's cache is still alive (so neither
            // figure reuses memory the other freed): the same tokens in a plain
            // moka cache of digest → principal, the same access orders.
            let before = rss_bytes();
            let cache = support::RefCache::builder().max_capacity(2_000_000).build();
            let principal = support::RefPrincipal(std::sync::Arc::new("bench".into()));
            for d in &digests {
                cache.insert(*d, principal.clone());
            }
            cache.run_pending_tasks();
            let ref_per_token = (rss_bytes().saturating_sub(before)) as f64 / n as f64;
            let mut reference = support::reference(cache, bare);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let ref_uni = hit_cost(&mut reference, &headers, &uniform(n, &mut rng)).await;
            let ref_zip = hit_cost(&mut reference, &headers, &zipf(n, &mut rng)).await;
            drop(reference);
            drop(digests);
            println!(
                "scale/{n}: reference (moka + SHA-256 alone): hit uniform {ref_uni:.0} ns, hit zipf {ref_zip:.0} ns, resident memory {ref_per_token:.0} B per entry"
            );
            results.push((n, uni, zip, per_token, ref_uni, ref_zip, ref_per_token));
            drop(svc);
            drop(tokens);
            drop(headers);
            // Hand the freed memory back, so the next size starts from a clean heap.
            // SAFETY: no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        let (_, u1k, z1k, _, ru1k, rz1k, _) = results[0];
        if let Some(&(_, u1m, z1m, mem, ru1m, rz1m, rmem)) = results.last() {
            println!(
                "scale: 1M/1k hit cost: zipf {:.2} (goal ≤ 1.5), uniform {:.2}; memory per token at 1M {mem:.0} B (goal ≤ 400)",
                z1m / z1k,
                u1m / u1k
            );
            println!(
                "scale: the reference alone, 1M/1k hit cost: zipf {:.2}, uniform {:.2}; memory per entry at 1M {rmem:.0} B",
                rz1m / rz1k,
                ru1m / ru1k
            );
        }
    });
}
