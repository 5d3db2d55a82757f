//! The route table: every route's filter compiled once into a level trie (a subscription
//! tree), and its Kafka topic and key templates compiled against that filter.
//!
//! Matching walks the trie once per topic and returns every matching route (one-to-many)
//! in route-index order; what each wildcard matched is read straight off the topic's
//! level spans (each route knows at which levels its wildcards sit), so rendering needs
//! no second match.

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::kafka::{is_kafka_topic_char, validate_kafka_topic, MAX_KAFKA_TOPIC_LEN};
use crate::template::{Context, Part, Payload, Scope, Template};
use crate::topic::{Filter, Level};

/// Most routes a table can hold (the route index is stored as a u16 in each record).
pub const MAX_ROUTES: usize = u16::MAX as usize + 1;

/// A route as configured: `(mqtt_filter, kafka_topic_template, kafka_key_template)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub mqtt_filter: String,
    pub kafka_topic: String,
    pub kafka_key: Option<String>,
}

impl RouteSpec {
    pub fn new(mqtt_filter: &str, kafka_topic: &str, kafka_key: Option<&str>) -> Self {
        RouteSpec {
            mqtt_filter: mqtt_filter.to_owned(),
            kafka_topic: kafka_topic.to_owned(),
            kafka_key: kafka_key.map(str::to_owned),
        }
    }
}

#[derive(Debug)]
struct Route {
    /// Topic level of each wildcard, in order; `true` for the final `#`.
    wildcards: Vec<(usize, bool)>,
    topic: Template,
    key: Option<Template>,
    uses_payload: bool,
}

#[derive(Debug, Default)]
struct Node {
    children: FxHashMap<Box<str>, u32>,
    plus: Option<u32>,
    /// Routes whose filter ends here with `#` (stored on the parent of the `#`).
    hash: Vec<u16>,
    /// Routes whose filter ends exactly here.
    end: Vec<u16>,
}

/// Reusable buffers for matching (so a batch allocates once).
#[derive(Debug, Default)]
pub struct Scratch {
    levels: Vec<(usize, usize)>,
    stack: Vec<(u32, u32)>,
    matched: Vec<u16>,
    captures: Vec<(usize, usize)>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The rendered destination of one message for one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub kafka_topic: String,
    /// The rendered key (UTF-8), or `None` when the route has no key template.
    pub kafka_key: Option<String>,
}

/// The outcome of one route for one message: a destination, or the reason for the
/// dead-letter store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOutcome {
    pub route: u16,
    pub result: std::result::Result<Destination, String>,
}

/// A compiled route table.
#[derive(Debug)]
pub struct Router {
    nodes: Vec<Node>,
    routes: Vec<Route>,
}

impl Router {
    /// Compile `routes` (index = route index). Invalid filters are [`Error::Topic`];
    /// templates that cannot work for their filter are [`Error::Template`].
    pub fn new(routes: &[RouteSpec], gateway_id: &str) -> Result<Router> {
        if routes.len() > MAX_ROUTES {
            return Err(Error::InvalidInput(format!(
                "{} routes; at most {MAX_ROUTES} are supported",
                routes.len()
            )));
        }
        let mut router = Router {
            nodes: vec![Node::default()],
            routes: Vec::with_capacity(routes.len()),
        };
        for (idx, spec) in routes.iter().enumerate() {
            let filter = Filter::parse(&spec.mqtt_filter)?;
            let mut wildcards = Vec::new();
            let mut node = 0u32;
            for (lvl, level) in filter.levels().enumerate() {
                match level {
                    Level::Hash => {
                        wildcards.push((lvl, true));
                        router.nodes[node as usize].hash.push(idx as u16);
                        node = u32::MAX;
                        break;
                    }
                    Level::Plus => {
                        wildcards.push((lvl, false));
                        node = match router.nodes[node as usize].plus {
                            Some(n) => n,
                            None => {
                                let n = router.push_node();
                                router.nodes[node as usize].plus = Some(n);
                                n
                            }
                        };
                    }
                    Level::Lit(s) => {
                        node = match router.nodes[node as usize].children.get(s) {
                            Some(&n) => n,
                            None => {
                                let n = router.push_node();
                                router.nodes[node as usize].children.insert(s.into(), n);
                                n
                            }
                        };
                    }
                }
            }
            if node != u32::MAX {
                router.nodes[node as usize].end.push(idx as u16);
            }
            let scope = Scope {
                wildcards: wildcards.len(),
                gateway_id,
                allow_topic: true,
                allow_payload: true,
                allow_key: false,
            };
            let terr = |field: &'static str, template: &str, reason: String| Error::Template {
                route: idx,
                field,
                template: template.to_owned(),
                reason,
            };
            let topic = Template::parse(&spec.kafka_topic, &scope)
                .map_err(|r| terr("kafka_topic", &spec.kafka_topic, r))?;
            check_topic_template(&topic).map_err(|r| terr("kafka_topic", &spec.kafka_topic, r))?;
            let key = match &spec.kafka_key {
                Some(k) => Some(Template::parse(k, &scope).map_err(|r| terr("kafka_key", k, r))?),
                None => None,
            };
            let uses_payload =
                topic.uses_payload() || key.as_ref().is_some_and(Template::uses_payload);
            router.routes.push(Route {
                wildcards,
                topic,
                key,
                uses_payload,
            });
        }
        for n in &mut router.nodes {
            n.children.shrink_to_fit();
        }
        Ok(router)
    }

    fn push_node(&mut self) -> u32 {
        self.nodes.push(Node::default());
        (self.nodes.len() - 1) as u32
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Indices of every route whose filter matches `topic`, ascending, in `scratch.matched`.
    /// `topic` is taken as delivered by the broker (not re-validated).
    pub fn match_into<'s>(&self, topic: &str, scratch: &'s mut Scratch) -> &'s [u16] {
        let Scratch {
            levels,
            stack,
            matched,
            ..
        } = scratch;
        levels.clear();
        stack.clear();
        matched.clear();
        let mut start = 0;
        for (i, b) in topic.bytes().enumerate() {
            if b == b'/' {
                levels.push((start, i));
                start = i + 1;
            }
        }
        levels.push((start, topic.len()));
        let dollar = topic.as_bytes().first() == Some(&b'$');
        stack.push((0, 0));
        while let Some((n, i)) = stack.pop() {
            let node = &self.nodes[n as usize];
            let i = i as usize;
            let wild_ok = i > 0 || !dollar;
            if wild_ok && !node.hash.is_empty() {
                matched.extend_from_slice(&node.hash);
            }
            if i == levels.len() {
                matched.extend_from_slice(&node.end);
                continue;
            }
            if wild_ok {
                if let Some(p) = node.plus {
                    stack.push((p, i as u32 + 1));
                }
            }
            if !node.children.is_empty() {
                let (a, b) = levels[i];
                if let Some(&c) = node.children.get(&topic[a..b]) {
                    stack.push((c, i as u32 + 1));
                }
            }
        }
        if matched.len() > 1 {
            matched.sort_unstable();
        }
        matched
    }

    /// Route one message: every matching route in route-index order, each rendered or
    /// with the reason it cannot be.
    pub fn route(&self, topic: &str, payload: &[u8]) -> Vec<RouteOutcome> {
        let mut scratch = Scratch::new();
        let mut out = Vec::new();
        self.route_into(topic, payload, &mut scratch, &mut out);
        out
    }

    /// [`Router::route`] appending to `out`, reusing `scratch`.
    pub fn route_into(
        &self,
        topic: &str,
        payload: &[u8],
        scratch: &mut Scratch,
        out: &mut Vec<RouteOutcome>,
    ) {
        self.match_into(topic, scratch);
        let mut payload = Payload::new(payload);
        let Scratch {
            levels,
            matched,
            captures,
            ..
        } = scratch;
        for &r in matched.iter() {
            let route = &self.routes[r as usize];
            captures.clear();
            for &(lvl, is_hash) in &route.wildcards {
                if is_hash {
                    // the rest of the topic from that level on; empty when '#' matched the parent
                    captures.push(match levels.get(lvl) {
                        Some(&(a, _)) => (a, topic.len()),
                        None => (topic.len(), topic.len()),
                    });
                } else {
                    captures.push(levels[lvl]);
                }
            }
            let mut ctx = Context {
                topic,
                captures,
                payload: &mut payload,
                key: None,
            };
            let result = render_route(route, &mut ctx);
            out.push(RouteOutcome { route: r, result });
        }
    }

    /// Whether any route needs the payload (for callers that want to skip reading it).
    pub fn uses_payload(&self) -> bool {
        self.routes.iter().any(|r| r.uses_payload)
    }
}

fn render_route(
    route: &Route,
    ctx: &mut Context<'_, '_>,
) -> std::result::Result<Destination, String> {
    let kafka_topic = route.topic.render(ctx)?;
    validate_kafka_topic(&kafka_topic)?;
    let kafka_key = match &route.key {
        Some(k) => Some(k.render(ctx)?),
        None => None,
    };
    Ok(Destination {
        kafka_topic,
        kafka_key,
    })
}

/// Refuse Kafka topic templates that can never render a valid name.
fn check_topic_template(t: &Template) -> std::result::Result<(), String> {
    if let Some(lit) = t.as_literal() {
        return validate_kafka_topic(lit)
            .map_err(|r| r.replace("rendered Kafka topic", "Kafka topic"));
    }
    let mut lit_len = 0;
    for p in t.parts() {
        if let Part::Lit(s) = p {
            lit_len += s.len();
            if let Some(c) = s.chars().find(|&c| !is_kafka_topic_char(c)) {
                return Err(format!(
                    "literal text {s:?} has {c:?}; Kafka topics allow only [a-zA-Z0-9._-]"
                ));
            }
        }
    }
    if lit_len > MAX_KAFKA_TOPIC_LEN {
        return Err(format!("literal text is {lit_len} characters; Kafka topics allow at most {MAX_KAFKA_TOPIC_LEN}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str, Option<&str>)]) -> Router {
        let specs: Vec<RouteSpec> = routes
            .iter()
            .map(|(f, t, k)| RouteSpec::new(f, t, *k))
            .collect();
        Router::new(&specs, "gw").unwrap()
    }

    fn ok(o: &RouteOutcome) -> (u16, &str, Option<&str>) {
        let d = o.result.as_ref().unwrap();
        (o.route, d.kafka_topic.as_str(), d.kafka_key.as_deref())
    }

    #[test]
    fn one_to_many_in_index_order() {
        let r = router(&[
            ("vehicles/+/telemetry/#", "telemetry", Some("${1}")),
            ("vehicles/+/alarms", "alarms", Some("${1}")),
            ("#", "all.${gateway_id}", None),
            ("vehicles/v1/#", "v1-${1}", None),
        ]);
        let out = r.route("vehicles/v7/telemetry/engine/temp", b"{}");
        let got: Vec<_> = out.iter().map(ok).collect();
        assert_eq!(got, [(0, "telemetry", Some("v7")), (2, "all.gw", None)]);
        let out = r.route("vehicles/v1/telemetry", b"");
        let got: Vec<_> = out.iter().map(ok).collect();
        assert_eq!(
            got,
            [
                (0, "telemetry", Some("v1")),
                (2, "all.gw", None),
                (3, "v1-telemetry", None)
            ]
        );
        let out = r.route("vehicles/v1", b"");
        let got: Vec<_> = out.iter().map(ok).collect();
        // '#' matched the parent: ${1} is empty, and an empty... still valid "v1-"
        assert_eq!(got, [(2, "all.gw", None), (3, "v1-", None)]);
        assert!(r.route("$SYS/x", b"").is_empty());
    }

    #[test]
    fn payload_and_dead_letters() {
        let r = router(&[
            ("d/+", "t.${payload.dev}", Some("${payload.id}")),
            ("d/+", "t.${1}", None),
        ]);
        let out = r.route("d/x", br#"{"dev":"a","id":7}"#);
        assert_eq!(ok(&out[0]), (0, "t.a", Some("7")));
        let out = r.route("d/x", b"garbage");
        assert!(out[0].result.as_ref().unwrap_err().contains("not JSON"));
        assert_eq!(ok(&out[1]), (1, "t.x", None));
        let out = r.route("d/a b", b"{}");
        assert!(out[0].result.is_err());
        assert!(out[1].result.as_ref().unwrap_err().contains("' '"));
    }

    #[test]
    fn construction_errors() {
        let specs = [RouteSpec::new("a/+", "t", Some("${2}"))];
        match Router::new(&specs, "gw") {
            Err(Error::Template {
                route: 0,
                field: "kafka_key",
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let specs = [
            RouteSpec::new("a", "ok", None),
            RouteSpec::new("a", "bad/topic.${topic}", None),
        ];
        assert!(matches!(
            Router::new(&specs, "gw"),
            Err(Error::Template { route: 1, .. })
        ));
        let specs = [RouteSpec::new("a", "..", None)];
        assert!(matches!(
            Router::new(&specs, "gw"),
            Err(Error::Template { route: 0, .. })
        ));
        let specs = [RouteSpec::new("a/#/b", "x", None)];
        assert!(matches!(
            Router::new(&specs, "gw"),
            Err(Error::Topic { .. })
        ));
    }

    #[test]
    fn shared_and_dollar() {
        let r = router(&[
            ("$share/g/a/+", "t", None),
            ("+/x", "u", None),
            ("$SYS/+", "s", Some("${1}")),
        ]);
        assert_eq!(r.route("a/b", b"").len(), 1);
        assert!(r.route("$a/x", b"").is_empty());
        assert_eq!(ok(&r.route("$SYS/load", b"")[0]), (2, "s", Some("load")));
    }
}
