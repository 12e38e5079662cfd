//! Latency of the feature page API on a synthetic 16k-latent store, measured over real sockets on
//! 127.0.0.1 with a bounded local load generator (C keep-alive connections, N requests each).
//!
//! `cargo run --release -p zephyra-web --example page_latency -- [LATENTS] [CONNECTIONS] [REQUESTS]`
//! (defaults 16384, 4, 500). Prints p50 / p99 / max in milliseconds for `GET /api/feature/{id}` (random ids)
//! and `GET /feature/{id}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use zephyra_analysis::features::store::{write, FeatureIndex};
use zephyra_analysis::features::{
    Cofire, Example, FeatureOptions, FeatureRecord, FeatureStore, LatentStats, QuantileGroup,
    TokenValue, HIST_BINS,
};
use zephyra_web::{router, serve_blocking, AppState};

fn record(id: u32) -> FeatureRecord {
    let ex = |k: u32| Example {
        act: 10.0 - k as f32 * 0.1,
        context: u64::from(k),
        pos: 40,
        center: 12,
        token_ids: (0..17).collect(),
        tokens: (0..17).map(|t| format!(" tok{t}")).collect(),
        acts: (0..17).map(|t| if t == 12 { 10.0 } else { 0.5 }).collect(),
    };
    let tv = |k: u32| TokenValue {
        id: k,
        token: format!(" logit{k}"),
        value: 1.0 / (k + 1) as f32,
    };
    FeatureRecord {
        stats: LatentStats {
            id,
            n_fires: 1000 + u64::from(id),
            density: 1e-3,
            mean_act: 3.0,
            max_act: 10.0,
        },
        top: (0..20).map(ex).collect(),
        quantiles: (0..4)
            .map(|g| QuantileGroup {
                min_act: g as f32,
                max_act: g as f32 + 1.0,
                examples: (0..6).map(ex).collect(),
            })
            .collect(),
        histogram: vec![3; HIST_BINS],
        logits_pos: (0..10).map(tv).collect(),
        logits_neg: (0..10).map(tv).collect(),
        cofire: (0..8)
            .map(|k| Cofire {
                id: k,
                count: 10,
                fraction: 0.1,
            })
            .collect(),
        correlated: Vec::new(),
    }
}

fn get(stream: &mut BufReader<TcpStream>, addr: SocketAddr, path: &str) -> usize {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.get_mut().write_all(req.as_bytes()).unwrap();
    let mut len = 0;
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line}");
    loop {
        line.clear();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    len
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (n_latents, conns, reqs) = (
        args.first().copied().unwrap_or(16384),
        args.get(1).copied().unwrap_or(4),
        args.get(2).copied().unwrap_or(500),
    );
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let index = FeatureIndex {
        version: 0,
        model: "synthetic".into(),
        hook: "blocks.15.hook_resid_pre".into(),
        sae: "synthetic".into(),
        corpus: "synthetic".into(),
        d_sae: n_latents,
        n_contexts: 0,
        n_tokens_read: 0,
        n_tokens_kept: 0,
        options: FeatureOptions::default(),
        hist_log10_min: 0.0,
        hist_log10_max: 0.0,
        hist_bins: 0,
        features: Vec::new(),
        records_sha256: None,
    };
    write(dir.path(), index, (0..n_latents as u32).map(record)).unwrap();
    eprintln!(
        "wrote {n_latents} synthetic records in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let store = FeatureStore::open(dir.path()).unwrap();
    let app = router(AppState::new(store, None));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || serve_blocking(listener, app).unwrap());
    for route in ["/api/feature/", "/feature/"] {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                let route = route.to_string();
                std::thread::spawn(move || {
                    let tcp = TcpStream::connect(addr).unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let mut s = BufReader::new(tcp);
                    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ c as u64;
                    (0..reqs)
                        .map(|_| {
                            state = state
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let id = (state >> 33) as usize % n_latents;
                            let t = Instant::now();
                            get(&mut s, addr, &format!("{route}{id}"));
                            t.elapsed().as_secs_f64() * 1e3
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        let mut ms: Vec<f64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        println!(
            "GET {route}{{id}}: {} requests over {conns} connections, {n_latents} latents: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms.len(), q(0.5), q(0.99), ms[ms.len() - 1]
        );
    }
}
