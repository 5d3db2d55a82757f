//! Criterion benchmarks of edgefwd-core: topic matching at 10 / 1,000 / 10,000 filters,
//! routing with templates, and batch encode/decode at 200 B and 2 KiB payloads.
//!
//! Run: `cargo bench -p edgefwd-core --bench core` (add `-- --quick` for a short run).
//! Besides criterion's own reports (target/criterion), a summary with ns per topic,
//! MB/s and messages/s is written to bench/results/rust_core.json.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use edgefwd_core::batch::{encode_batch, open_batch, Compression, OwnedRecord, Record};
use edgefwd_core::{RouteSpec, Router, Scratch};

const MATCH_SIZES: [usize; 3] = [10, 1_000, 10_000];
const TOPICS_PER_ITER: usize = 1_024;

/// A deterministic xorshift generator (no dependency, same sequence everywhere).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Filters shaped like a fleet's routes, one in four starting with '+' (so every topic
/// explores two branches at the root).
fn filters(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("vehicles/v{i}/telemetry/#"),
            1 => format!("vehicles/v{i}/alarms"),
            2 => format!("site/s{i}/+/temperature"),
            _ => format!("+/dev{i}/status"),
        })
        .collect()
}

/// Topics: about half hit a route, the rest share prefixes but miss.
fn topics(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..TOPICS_PER_ITER)
        .map(|_| {
            let i = rng.below(n.max(1) * 2);
            match rng.below(4) {
                0 => format!("vehicles/v{i}/telemetry/engine/temp"),
                1 => format!("vehicles/v{i}/alarms"),
                2 => format!("site/s{i}/room{}/temperature", rng.below(10)),
                _ => format!("gw/dev{i}/status"),
            }
        })
        .collect()
}

fn bench_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    g.throughput(Throughput::Elements(TOPICS_PER_ITER as u64));
    for n in MATCH_SIZES {
        let fs = filters(n);
        let specs: Vec<RouteSpec> = fs.iter().map(|f| RouteSpec::new(f, "t", None)).collect();
        let router = Router::new(&specs, "gw").unwrap();
        let ts = topics(n, &mut Rng(0x9E37_79B9_7F4A_7C15));
        let mut scratch = Scratch::new();
        g.bench_with_input(BenchmarkId::from_parameter(n), &ts, |b, ts| {
            b.iter(|| {
                let mut hits = 0usize;
                for t in ts {
                    hits += router.match_into(black_box(t), &mut scratch).len();
                }
                hits
            })
        });
    }
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(TOPICS_PER_ITER as u64));
    for n in [10usize, 10_000] {
        let specs: Vec<RouteSpec> = filters(n)
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let wild = f.contains('+') || f.contains('#');
                RouteSpec::new(
                    f,
                    "telemetry.${gateway_id}",
                    Some(if wild && i % 2 == 0 {
                        "${1}"
                    } else {
                        "${topic}"
                    }),
                )
            })
            .collect();
        let router = Router::new(&specs, "gw").unwrap();
        let ts = topics(n, &mut Rng(7));
        let mut scratch = Scratch::new();
        let mut out = Vec::new();
        g.bench_with_input(BenchmarkId::new("templates", n), &ts, |b, ts| {
            b.iter(|| {
                out.clear();
                for t in ts {
                    router.route_into(black_box(t), b"{}", &mut scratch, &mut out);
                }
                out.len()
            })
        });
    }
    let router = Router::new(
        &[RouteSpec::new(
            "d/+",
            "t.${payload.kind}",
            Some("${payload.id}"),
        )],
        "gw",
    )
    .unwrap();
    let payload =
        br#"{"id":"dev-42","kind":"temp","value":21.5,"ts":1700000000123,"tags":["a","b"]}"#;
    g.throughput(Throughput::Elements(1));
    g.bench_function("payload_json_fields", |b| {
        b.iter(|| router.route(black_box("d/x"), black_box(payload)))
    });
    g.finish();
}

fn records(payload: usize, count: usize) -> Vec<OwnedRecord> {
    let mut rng = Rng(42);
    (0..count)
        .map(|i| OwnedRecord {
            seq: i as u64,
            recv_wall_ms: 1_700_000_000_000 + i as i64,
            recv_mono_ns: 5_000_000_000 + i as u64 * 1000,
            clock_synced: true,
            qos: 1,
            retain: false,
            route: (i % 4) as u16,
            kafka_topic: "telemetry".into(),
            kafka_key: Some(format!("v{}", i % 50).into_bytes()),
            mqtt_topic: format!("vehicles/v{}/telemetry/engine", i % 50),
            // JSON-ish text, compressible the way real telemetry is
            payload: {
                let text = br#"{"temp": 21.5, "rpm": 3000, "ok": true, "vin": "WDB1234567"}"#;
                (0..payload)
                    .map(|k| text[(k + rng.below(3)) % text.len()])
                    .collect()
            },
            user_properties: vec![],
        })
        .collect()
}

fn bench_codec(c: &mut Criterion) {
    for (payload, count) in [(200usize, 1000usize), (2048, 250)] {
        let recs = records(payload, count);
        let rs: Vec<Record<'_>> = recs.iter().map(OwnedRecord::as_record).collect();
        let raw_bytes: usize = rs.iter().map(|r| r.payload.len()).sum();
        for comp in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
            let mut g = c.benchmark_group(format!("codec_{payload}B_{}", comp.name()));
            g.throughput(Throughput::Bytes(raw_bytes as u64));
            g.bench_function("encode", |b| {
                b.iter(|| encode_batch(black_box(&rs), &[0; 16], comp).unwrap())
            });
            let data = encode_batch(&rs, &[0; 16], comp).unwrap();
            g.bench_function("decode", |b| {
                b.iter(|| {
                    let batch = open_batch(black_box(&data)).unwrap();
                    batch.records().unwrap().len()
                })
            });
            g.finish();
        }
    }
}

/// Summarise criterion's estimates into bench/results/rust_core.json.
fn write_summary(home: &Path, out: &Path) {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n == "new") {
                        found.push(p);
                    } else {
                        walk(&p, found);
                    }
                }
            }
        }
    }
    let mut dirs = Vec::new();
    walk(home, &mut dirs);
    dirs.sort();
    let mut entries = Vec::new();
    for d in dirs {
        let (Ok(est), Ok(bm)) = (
            std::fs::read_to_string(d.join("estimates.json")),
            std::fs::read_to_string(d.join("benchmark.json")),
        ) else {
            continue;
        };
        let (Ok(est), Ok(bm)) = (
            serde_json::from_str::<serde_json::Value>(&est),
            serde_json::from_str::<serde_json::Value>(&bm),
        ) else {
            continue;
        };
        let ns = est["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        let mut e = serde_json::json!({
            "id": bm["full_id"],
            "ns_per_iter": ns,
            "ci95_ns": [est["mean"]["confidence_interval"]["lower_bound"], est["mean"]["confidence_interval"]["upper_bound"]],
        });
        let id = bm["full_id"].as_str().unwrap_or_default().to_owned();
        if let Some(n) = bm["throughput"]["Elements"].as_f64() {
            e["ns_per_element"] = (ns / n).into();
            e["elements_per_s"] = (n / ns * 1e9).into();
        }
        if let Some(n) = bm["throughput"]["Bytes"].as_f64() {
            e["payload_mb_per_s"] = (n / ns * 1e9 / 1e6).into();
            // messages per second from the batch shape in the id
            let count = if id.contains("_200B_") { 1000.0 } else { 250.0 };
            e["msgs_per_s"] = (count / ns * 1e9).into();
            e["records_per_batch"] = count.into();
        }
        entries.push(e);
    }
    let doc = serde_json::json!({
        "tool": "criterion",
        "source": "bench/rust/core.rs",
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "os": std::env::consts::OS},
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "notes": "match/*: ns_per_element = ns per topic. codec_*: payload_mb_per_s counts payload bytes; msgs_per_s = records per second.",
        "results": entries,
    });
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    std::fs::rename(&tmp, out).unwrap();
    eprintln!("summary written to {}", out.display());
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/criterion"));
    std::env::set_var("CRITERION_HOME", &home);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    bench_match(&mut c);
    bench_route(&mut c);
    bench_codec(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        write_summary(&home, &root.join("bench/results/rust_core.json"));
    }
}
