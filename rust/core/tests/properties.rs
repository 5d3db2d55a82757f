//! Property tests: topic matching against a naive oracle, the route trie against
//! matching filter by filter, the subscription cover, and the codec round trip.

use edgefwd_core::batch::{decode_batch_owned, encode_batch, Compression, OwnedRecord, Record};
use edgefwd_core::cover::{disjoint_cover, filter_subsumes, filters_overlap};
use edgefwd_core::topic::{matches_valid, validate_topic_filter, validate_topic_name};
use edgefwd_core::{RouteSpec, Router, Scratch};
use proptest::prelude::*;

// ---------------------------------------------------------------- generators

/// Small alphabets so that filters and topics collide often; "$" levels exercise the
/// rule that a leading wildcard does not match a '$' topic.
fn lit() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "b", "c", "$", "$a", "ab", "é"]).prop_map(str::to_owned)
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(lit(), 1..6)
        .prop_map(|v| v.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![3 => lit(), 2 => Just("+".to_owned())], 0..5),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(mut v, hash)| {
            if hash || v.is_empty() {
                v.push("#".to_owned());
            }
            v.join("/")
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}

/// A topic that matches `f` when possible (wildcards instantiated at random).
fn instantiate(f: &str, picks: &[u8]) -> String {
    let alpha = ["a", "b", "x", "", "$a"];
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    let mut pick = || {
        k += 1;
        picks.get(k - 1).copied().unwrap_or(0) as usize
    };
    for l in f.split('/') {
        match l {
            "+" => out.push(alpha[pick() % alpha.len()].to_owned()),
            "#" => {
                for _ in 0..pick() % 3 {
                    out.push(alpha[pick() % alpha.len()].to_owned());
                }
            }
            s => out.push(s.to_owned()),
        }
    }
    let t = out.join("/");
    if t.is_empty() {
        "a".to_owned()
    } else {
        t
    }
}

/// The specification, spelled out level by level with recursion (the oracle).
fn oracle(filter: &str, topic: &str) -> bool {
    fn rec(f: &[&str], t: &[&str], first: bool, dollar: bool) -> bool {
        match (f.first(), t.first()) {
            (Some(&"#"), _) => !(first && dollar),
            (Some(&"+"), Some(_)) => !(first && dollar) && rec(&f[1..], &t[1..], false, dollar),
            (Some(a), Some(b)) => a == b && rec(&f[1..], &t[1..], false, dollar),
            (None, None) => true,
            _ => false,
        }
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    rec(&f, &t, true, topic.starts_with('$'))
}

// ---------------------------------------------------------------- matching

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generators_make_valid_input(f in filter(), t in topic()) {
        prop_assert!(validate_topic_filter(&f).is_ok(), "{f}");
        prop_assert!(validate_topic_name(&t).is_ok(), "{t}");
    }

    #[test]
    fn matching_is_the_oracle(f in filter(), t in topic(), picks in prop::collection::vec(any::<u8>(), 8)) {
        prop_assert_eq!(matches_valid(&f, &t), oracle(&f, &t), "{} vs {}", f, t);
        let t2 = instantiate(&f, &picks);
        prop_assert_eq!(matches_valid(&f, &t2), oracle(&f, &t2), "{} vs {}", f, t2);
    }

    #[test]
    fn shared_subscriptions_match_by_their_filter(f in filter(), t in topic()) {
        let shared = format!("$share/grp/{f}");
        prop_assert_eq!(
            edgefwd_core::topic_matches(&shared, &t).unwrap(),
            edgefwd_core::topic_matches(&f, &t).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn trie_returns_every_matching_route_in_order(
        filters in prop::collection::vec(filter(), 1..25),
        topics in prop::collection::vec(topic(), 1..20),
        picks in prop::collection::vec(any::<u8>(), 8),
    ) {
        let specs: Vec<RouteSpec> = filters.iter().map(|f| RouteSpec::new(f, "t", None)).collect();
        let router = Router::new(&specs, "gw").unwrap();
        let mut scratch = Scratch::new();
        let mut all = topics.clone();
        all.extend(filters.iter().map(|f| instantiate(f, &picks)));
        for t in &all {
            let want: Vec<u16> = filters.iter().enumerate()
                .filter(|(_, f)| oracle(f, t)).map(|(i, _)| i as u16).collect();
            prop_assert_eq!(router.match_into(t, &mut scratch).to_vec(), want.clone(), "topic {}", t);
            let routed: Vec<u16> = router.route(t, b"").iter().map(|o| o.route).collect();
            prop_assert_eq!(routed, want);
        }
    }

    #[test]
    fn wildcard_captures_rebuild_the_topic(f in filter(), picks in prop::collection::vec(any::<u8>(), 8)) {
        // A template that puts every wildcard's match back where it was rebuilds the topic.
        let t = instantiate(&f, &picks);
        prop_assume!(oracle(&f, &t));
        let mut n = 0;
        let mut parts = Vec::new();
        for l in f.split('/') {
            if l == "+" || l == "#" { n += 1; parts.push(format!("${{{n}}}")); } else { parts.push(l.to_owned()); }
        }
        // '#' that matched the parent level leaves a trailing '/' in the rebuilt string
        let tmpl = parts.join("/");
        let specs = [RouteSpec::new(&f, "t", Some(&tmpl))];
        let Ok(router) = Router::new(&specs, "gw") else { return Err(TestCaseError::fail("router")) };
        let out = router.route(&t, b"");
        prop_assert_eq!(out.len(), 1);
        let key = out[0].result.as_ref().unwrap().kafka_key.clone().unwrap();
        let rebuilt_ok = key == t || (f.ends_with('#') && key == format!("{t}/"));
        prop_assert!(rebuilt_ok, "filter {} topic {} template {} rendered {}", f, t, tmpl, key);
    }
}

// ---------------------------------------------------------------- cover

fn witness(a: &str, b: &str) -> Option<String> {
    // A topic matching both, if the level-wise merge yields one (checked by the caller):
    // at a '#', the other filter's remaining levels are taken as they are ('+' -> "w").
    let (x, y): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    fn inst(l: &str) -> &str {
        if l == "+" || l == "#" {
            "w"
        } else {
            l
        }
    }
    let mut out: Vec<&str> = Vec::new();
    for i in 0..x.len().max(y.len()) {
        match (x.get(i).copied(), y.get(i).copied()) {
            (Some("#"), _) => {
                out.extend(
                    y[i.min(y.len())..]
                        .iter()
                        .filter(|l| **l != "#")
                        .map(|l| inst(l)),
                );
                break;
            }
            (_, Some("#")) => {
                out.extend(
                    x[i.min(x.len())..]
                        .iter()
                        .filter(|l| **l != "#")
                        .map(|l| inst(l)),
                );
                break;
            }
            (Some("+"), Some("+")) => out.push("w"),
            (Some("+"), Some(l)) | (Some(l), Some("+")) => out.push(l),
            (Some(l), Some(_)) => out.push(l),
            (Some(_), None) | (None, Some(_)) => return None,
            (None, None) => break,
        }
    }
    let t = out.join("/");
    Some(if t.is_empty() { "w".to_owned() } else { t })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn overlap_predicate_is_exact(a in filter(), b in filter(), ts in prop::collection::vec(topic(), 30), picks in prop::collection::vec(any::<u8>(), 8)) {
        let ov = filters_overlap(&a, &b).unwrap();
        let mut samples = ts.clone();
        samples.push(instantiate(&a, &picks));
        samples.push(instantiate(&b, &picks));
        if let Some(w) = witness(&a, &b) { samples.push(w); }
        let common = samples.iter().any(|t| oracle(&a, t) && oracle(&b, t));
        if common { prop_assert!(ov, "{} and {} share a topic but overlap() says no", a, b); }
        if ov {
            // there must be a witness: our merge, or a topic with an extra level for '#'
            let mut found = common;
            if let Some(w) = witness(&a, &b) {
                for cand in [w.clone(), format!("{w}/w"), "w".to_owned()] {
                    if oracle(&a, &cand) && oracle(&b, &cand) { found = true; }
                }
            }
            prop_assert!(found, "overlap() says {} and {} overlap, no common topic found", a, b);
        }
    }

    #[test]
    fn subsumption_is_sound(a in filter(), b in filter(), ts in prop::collection::vec(topic(), 30), picks in prop::collection::vec(any::<u8>(), 8)) {
        if filter_subsumes(&a, &b).unwrap() {
            let mut samples = ts.clone();
            samples.push(instantiate(&b, &picks));
            for t in &samples {
                if oracle(&b, t) { prop_assert!(oracle(&a, t), "{} should contain {} (topic {})", a, b, t); }
            }
        }
    }

    #[test]
    fn cover_is_disjoint_and_covers(
        filters in prop::collection::vec(filter(), 1..10),
        ts in prop::collection::vec(topic(), 40),
        picks in prop::collection::vec(any::<u8>(), 8),
    ) {
        let cover = disjoint_cover(&filters).unwrap();
        for (i, a) in cover.iter().enumerate() {
            for b in &cover[i + 1..] {
                prop_assert!(!filters_overlap(a, b).unwrap(), "cover {:?} has overlapping {} and {}", cover, a, b);
            }
        }
        let mut samples = ts.clone();
        samples.extend(filters.iter().map(|f| instantiate(f, &picks)));
        samples.extend(cover.iter().map(|f| instantiate(f, &picks)));
        for t in &samples {
            let in_routes = filters.iter().any(|f| oracle(f, t));
            let n_cover = cover.iter().filter(|f| oracle(f, t)).count();
            prop_assert!(n_cover <= 1, "topic {} matches {} cover filters of {:?}", t, n_cover, cover);
            if in_routes { prop_assert_eq!(n_cover, 1, "topic {} matches a route but not the cover {:?}", t, cover); }
        }
    }

    #[test]
    fn disjoint_inputs_come_back_unchanged(filters in prop::collection::vec(filter(), 1..8)) {
        let mut uniq: Vec<String> = Vec::new();
        for f in filters {
            if uniq.iter().all(|g| !filters_overlap(g, &f).unwrap()) { uniq.push(f); }
        }
        prop_assert_eq!(disjoint_cover(&uniq).unwrap(), uniq);
    }
}

// ---------------------------------------------------------------- codec

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        (
            any::<u64>(),
            any::<i64>(),
            any::<u64>(),
            any::<bool>(),
            0u8..=2,
            any::<bool>(),
            any::<u16>(),
        ),
        ".{0,20}",
        prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        ".{0,30}",
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec((".{0,8}", ".{0,8}"), 0..4),
    )
        .prop_map(
            |((seq, wall, mono, synced, qos, retain, route), kt, key, mt, payload, props)| {
                OwnedRecord {
                    seq,
                    recv_wall_ms: wall,
                    recv_mono_ns: mono,
                    clock_synced: synced,
                    qos,
                    retain,
                    route,
                    kafka_topic: kt,
                    kafka_key: key,
                    mqtt_topic: mt,
                    payload,
                    user_properties: props,
                }
            },
        )
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        (1i32..=9).prop_map(Compression::Zstd)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn encode_then_decode_is_identity(
        recs in prop::collection::vec(record(), 0..20),
        boot in any::<[u8; 16]>(),
        c in compression(),
    ) {
        let rs: Vec<Record<'_>> = recs.iter().map(OwnedRecord::as_record).collect();
        let data = encode_batch(&rs, &boot, c).unwrap();
        let (b2, got) = decode_batch_owned(&data).unwrap();
        prop_assert_eq!(b2, boot);
        prop_assert_eq!(got, recs);
    }
}
