//! Fuzz-style property tests: arbitrary bytes and strings into the batch decoder and the
//! topic, filter and template parsers. No input may panic, and no allocation may exceed
//! a bound proportional to the input (a counting global allocator checks it), so a
//! length field is never trusted beyond the buffer that carries it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use edgefwd_core::batch::{
    batch_record_count, decode_batch_owned, encode_batch, open_batch, Compression, OwnedRecord,
    Record, HEADER_LEN,
};
use edgefwd_core::template::{Context, Payload, Scope, Template};
use edgefwd_core::{
    disjoint_cover, validate_topic_filter, validate_topic_name, Error, RouteSpec, Router,
};
use proptest::prelude::*;

/// Tracks the largest single allocation made by the current thread while armed.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

fn note(size: usize) {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Run `f` and return the largest single allocation it made.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get))
}

/// Allowed: a copy of the input a few times over (lz4 may expand 255x, but only bytes
/// that really decompress are allocated for zstd), plus a fixed slack for error messages.
fn bound(input_len: usize) -> usize {
    input_len * 255 + 64 * 1024
}

fn check_decode(data: &[u8]) -> Result<(), TestCaseError> {
    let (res, largest) = largest_alloc(|| {
        let r = decode_batch_owned(data);
        let _ = batch_record_count(data);
        r
    });
    prop_assert!(
        largest <= bound(data.len()),
        "allocated {} bytes for a {}-byte input",
        largest,
        data.len()
    );
    if let Err(e) = res {
        match e {
            Error::CorruptBatch { offset, reason, .. } => {
                prop_assert!(
                    offset <= data.len().max(HEADER_LEN) || reason.contains("decompressed")
                );
                prop_assert!(!reason.is_empty());
            }
            Error::UnsupportedVersion { .. } => {}
            other => prop_assert!(false, "unexpected error kind {:?}", other),
        }
    }
    Ok(())
}

/// A header (any counts and lengths) with valid CRCs over whatever body follows, so the
/// fuzzer gets past the checksums into the length checks, decompression and record parser.
fn forge(flags: u8, count: u32, raw_len: u32, body: &[u8], body_len_delta: i8) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[..4].copy_from_slice(b"EFWB");
    h[4] = 1;
    h[5] = flags;
    h[8..12].copy_from_slice(&count.to_le_bytes());
    let body_len = (body.len() as i64 + body_len_delta as i64).max(0) as u32;
    h[28..32].copy_from_slice(&body_len.to_le_bytes());
    h[32..36].copy_from_slice(&raw_len.to_le_bytes());
    h[36..40].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let hc = crc32c::crc32c(&h[..40]);
    h[40..44].copy_from_slice(&hc.to_le_bytes());
    h.extend_from_slice(body);
    h
}

fn sample_batch(c: Compression, n: usize) -> Vec<u8> {
    let recs: Vec<OwnedRecord> = (0..n)
        .map(|i| OwnedRecord {
            seq: i as u64,
            recv_wall_ms: 1,
            recv_mono_ns: 2,
            clock_synced: i % 2 == 0,
            qos: 1,
            retain: false,
            route: 0,
            kafka_topic: "t".into(),
            kafka_key: Some(b"k".to_vec()),
            mqtt_topic: "a/b".into(),
            payload: vec![b'p'; 40],
            user_properties: vec![("n".into(), "v".into())],
        })
        .collect();
    let rs: Vec<Record<'_>> = recs.iter().map(OwnedRecord::as_record).collect();
    encode_batch(&rs, &[1; 16], c).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        check_decode(&data)?;
        let mut with_magic = b"EFWB\x01".to_vec();
        with_magic.extend_from_slice(&data);
        check_decode(&with_magic)?;
    }

    #[test]
    fn forged_headers_never_panic_nor_overallocate(
        flags in prop_oneof![Just(0u8), Just(1u8), Just(2u8), any::<u8>()],
        count in prop_oneof![0u32..5, any::<u32>()],
        raw_len in prop_oneof![0u32..600, any::<u32>()],
        body in prop::collection::vec(any::<u8>(), 0..300),
        delta in prop_oneof![Just(0i8), any::<i8>()],
    ) {
        let data = forge(flags, count, raw_len, &body, delta);
        check_decode(&data)?;
    }

    #[test]
    fn forged_valid_compressed_bodies(
        c in prop_oneof![Just(1u8), Just(2u8)],
        raw in prop::collection::vec(any::<u8>(), 0..400),
        count in 0u32..8,
        claimed_delta in -3i64..3,
    ) {
        // a real compressed body of arbitrary bytes: decompresses fine, records are garbage
        let body = if c == 1 { lz4_flex::block::compress(&raw) } else { zstd::bulk::compress(&raw, 1).unwrap() };
        let raw_len = (raw.len() as i64 + claimed_delta).max(0) as u32;
        check_decode(&forge(c, count, raw_len, &body, 0))?;
    }

    #[test]
    fn damaged_batches_are_clean_errors(
        c in prop_oneof![Just(Compression::None), Just(Compression::Lz4), Just(Compression::Zstd(3))],
        n in 0usize..6,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let good = sample_batch(c, n);
        let mut bad = good.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(decode_batch_owned(&bad).is_err(), "a flipped bit at {} went unnoticed", i);
        check_decode(&bad)?;
        let cut = cut.index(good.len());
        prop_assert!(decode_batch_owned(&good[..cut]).is_err());
        check_decode(&good[..cut])?;
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,40}", raw in prop::collection::vec(any::<u8>(), 0..60)) {
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        for input in [&s, &lossy] {
            let _ = validate_topic_name(input);
            let _ = validate_topic_filter(input);
            let _ = edgefwd_core::topic_matches(input, "a/b");
            let _ = edgefwd_core::topic_matches("#", input);
            let _ = disjoint_cover(&[input.as_str(), "a/+"]);
            let scope = Scope { wildcards: 2, gateway_id: "gw", allow_topic: true, allow_payload: true, allow_key: true };
            if let Ok(t) = Template::parse(input, &scope) {
                let mut p = Payload::new(&raw);
                let _ = t.render(&mut Context { topic: "a/b", captures: &[(0, 1), (2, 3)], payload: &mut p, key: Some("k") });
            }
            let _ = Router::new(&[RouteSpec::new(input, input, Some(input))], input);
        }
    }

    #[test]
    fn templates_with_syntax_chars_never_panic(s in "[$\\{\\}a1.]{0,16}", payload in "[\\{\\}\\[\\]\":a1,. ]{0,24}") {
        let scope = Scope { wildcards: 1, gateway_id: "gw", allow_topic: true, allow_payload: true, allow_key: false };
        if let Ok(t) = Template::parse(&s, &scope) {
            let mut p = Payload::new(payload.as_bytes());
            let _ = t.render(&mut Context { topic: "a", captures: &[(0, 1)], payload: &mut p, key: None });
        }
        if let Ok(r) = Router::new(&[RouteSpec::new("+", "t", Some(&s))], "gw") {
            let _ = r.route("x", payload.as_bytes());
        }
    }

    #[test]
    fn routing_arbitrary_topics_never_panics(topic in "\\PC{0,30}", payload in prop::collection::vec(any::<u8>(), 0..40)) {
        let r = Router::new(&[
            RouteSpec::new("#", "t.${payload.a}", Some("${1}")),
            RouteSpec::new("+/+", "${1}", Some("${topic}")),
            RouteSpec::new("a/#", "x", None),
        ], "gw").unwrap();
        let _ = r.route(&topic, &payload);
    }
}

#[test]
fn huge_claims_are_refused_without_allocating() {
    for flags in [0u8, 1, 2] {
        for (count, raw) in [
            (u32::MAX, u32::MAX),
            (1, u32::MAX),
            (0, 256 << 20),
            (1_000_000, 100),
        ] {
            let data = forge(flags, count, raw, b"tiny body", 0);
            let (res, largest) =
                largest_alloc(|| open_batch(&data).and_then(|b| b.records().map(|r| r.len())));
            assert!(res.is_err(), "flags {flags} count {count} raw {raw}");
            assert!(largest < 64 * 1024, "allocated {largest} bytes");
        }
    }
}

#[test]
fn zstd_level_19_round_trips_a_large_batch() {
    let data = sample_batch(Compression::Zstd(19), 20_000);
    assert_eq!(decode_batch_owned(&data).unwrap().1.len(), 20_000);
}
