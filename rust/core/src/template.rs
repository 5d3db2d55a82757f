//! Templates: `${topic}`, `${1}`, `${2}`... (what the filter's wildcards matched, in
//! order; `#` gives the rest of the topic, possibly empty), `${gateway_id}`, `${key}`
//! (downlink only), `${payload.a.b}` (a field of a JSON object payload; a numeric
//! component indexes an array: `${payload.items.0}`), and `$${` for a literal `${`.
//!
//! A template is parsed once; rendering never re-parses it. A payload is parsed only for
//! templates that use it, at most once per message ([`Payload`]).

use serde_json::Value;
use std::fmt::Write as _;

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text (with `$${` already turned into `${`, and `${gateway_id}` folded in).
    Lit(String),
    /// `${topic}`: the MQTT topic.
    Topic,
    /// `${N}`: the N-th wildcard's match (stored 0-based).
    Wildcard(usize),
    /// `${payload.a.b}`: the path into the JSON payload.
    Payload(Vec<String>),
    /// `${key}`: the downlink's Kafka record key.
    Key,
}

/// What a template may refer to, fixed when it is compiled.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// How many wildcards the route's filter has (`${1}`..`${wildcards}` are valid).
    pub wildcards: usize,
    /// The gateway id, folded into the template as literal text.
    pub gateway_id: &'a str,
    /// Whether `${topic}` may be used.
    pub allow_topic: bool,
    /// Whether `${payload...}` may be used.
    pub allow_payload: bool,
    /// Whether `${key}` may be used (downlink templates).
    pub allow_key: bool,
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A JSON payload, parsed on first use.
#[derive(Debug)]
pub enum Payload<'a> {
    Unparsed(&'a [u8]),
    Parsed(Value),
    Invalid(String),
}

impl<'a> Payload<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Payload::Unparsed(bytes)
    }

    fn value(&mut self) -> Result<&Value, String> {
        if let Payload::Unparsed(b) = self {
            *self = match serde_json::from_slice::<Value>(b) {
                Ok(v) => Payload::Parsed(v),
                Err(e) => Payload::Invalid(format!("payload is not JSON: {e}")),
            };
        }
        match self {
            Payload::Parsed(v) => Ok(v),
            Payload::Invalid(e) => Err(e.clone()),
            Payload::Unparsed(_) => unreachable!("parsed just above"),
        }
    }
}

/// What a template is rendered with.
pub struct Context<'c, 'p> {
    pub topic: &'c str,
    /// Byte spans in `topic` of what each wildcard matched.
    pub captures: &'c [(usize, usize)],
    pub payload: &'c mut Payload<'p>,
    pub key: Option<&'c str>,
}

impl Template {
    /// Compile `source`; `Err(reason)` says what is wrong and where (byte offset).
    pub fn parse(source: &str, scope: &Scope<'_>) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut lit = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        let mut lit_start = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && source[i..].starts_with("$${") {
                lit.push_str(&source[lit_start..i]);
                lit.push_str("${");
                i += 3;
                lit_start = i;
                continue;
            }
            if bytes[i] == b'$' && source[i..].starts_with("${") {
                lit.push_str(&source[lit_start..i]);
                let Some(close) = source[i + 2..].find('}') else {
                    return Err(format!("unterminated '${{' at byte {i}"));
                };
                let name = &source[i + 2..i + 2 + close];
                let part = Self::placeholder(name, i, scope)?;
                match part {
                    Part::Lit(s) => lit.push_str(&s),
                    p => {
                        if !lit.is_empty() {
                            parts.push(Part::Lit(std::mem::take(&mut lit)));
                        }
                        parts.push(p);
                    }
                }
                i += 2 + close + 1;
                lit_start = i;
                continue;
            }
            i += 1;
        }
        lit.push_str(&source[lit_start..]);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    fn placeholder(name: &str, at: usize, scope: &Scope<'_>) -> Result<Part, String> {
        match name {
            "topic" if scope.allow_topic => Ok(Part::Topic),
            "gateway_id" => Ok(Part::Lit(scope.gateway_id.to_owned())),
            "key" if scope.allow_key => Ok(Part::Key),
            "key" => Err(format!(
                "${{key}} at byte {at} is only available in downlink templates"
            )),
            "topic" => Err(format!("${{topic}} at byte {at} is not available here")),
            _ if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => {
                let n: usize = name.parse().unwrap_or(usize::MAX);
                if n == 0 {
                    return Err(format!(
                        "${{0}} at byte {at}: wildcards are numbered from ${{1}}"
                    ));
                }
                if n > scope.wildcards {
                    return Err(format!(
                        "${{{name}}} at byte {at} refers to wildcard {name}, but the filter has {} wildcard{}",
                        scope.wildcards,
                        if scope.wildcards == 1 { "" } else { "s" }
                    ));
                }
                Ok(Part::Wildcard(n - 1))
            }
            _ => {
                if let Some(path) = name.strip_prefix("payload.") {
                    if !scope.allow_payload {
                        return Err(format!(
                            "${{{name}}} at byte {at}: no payload is available here"
                        ));
                    }
                    let comps: Vec<String> = path.split('.').map(str::to_owned).collect();
                    if comps.iter().any(String::is_empty) {
                        return Err(format!(
                            "${{{name}}} at byte {at}: empty field name in the payload path"
                        ));
                    }
                    Ok(Part::Payload(comps))
                } else if name == "payload" {
                    Err(format!(
                        "${{payload}} at byte {at} needs a field: ${{payload.<field>}}"
                    ))
                } else {
                    Err(format!(
                        "unknown placeholder ${{{name}}} at byte {at} (known: topic, 1, 2, ..., gateway_id, payload.<field>{}; write $${{ for a literal '${{')",
                        if scope.allow_key { ", key" } else { "" }
                    ))
                }
            }
        }
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether rendering needs the payload.
    pub fn uses_payload(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Payload(_)))
    }

    /// The literal text, if the template has no placeholder left.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Render into `out` (appended). `Err(reason)` for the dead-letter store.
    pub fn render_into(&self, ctx: &mut Context<'_, '_>, out: &mut String) -> Result<(), String> {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Topic => out.push_str(ctx.topic),
                Part::Wildcard(n) => {
                    // Compile-time checked against the filter; a missing span means the
                    // caller passed captures of another filter.
                    let (a, b) = ctx
                        .captures
                        .get(*n)
                        .copied()
                        .ok_or_else(|| format!("no match for ${{{}}}", n + 1))?;
                    out.push_str(&ctx.topic[a..b]);
                }
                Part::Key => out.push_str(ctx.key.ok_or("no key (record has no Kafka key)")?),
                Part::Payload(path) => {
                    let v = ctx.payload.value()?;
                    render_field(v, path, out)?;
                }
            }
        }
        Ok(())
    }

    /// Render to a new string.
    pub fn render(&self, ctx: &mut Context<'_, '_>) -> Result<String, String> {
        let mut s = String::new();
        self.render_into(ctx, &mut s)?;
        Ok(s)
    }
}

fn render_field(root: &Value, path: &[String], out: &mut String) -> Result<(), String> {
    let mut v = root;
    for (i, comp) in path.iter().enumerate() {
        let next = match v {
            Value::Object(m) => m.get(comp.as_str()),
            Value::Array(a) => comp.parse::<usize>().ok().and_then(|k| a.get(k)),
            _ => None,
        };
        v = match next {
            Some(n) => n,
            None => {
                let at = path[..=i].join(".");
                return Err(
                    if i == 0 && !matches!(root, Value::Object(_) | Value::Array(_)) {
                        format!(
                            "payload field '{}' is missing: the payload is not a JSON object",
                            path.join(".")
                        )
                    } else {
                        format!("payload field '{at}' is missing")
                    },
                );
            }
        };
    }
    match v {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => return Err(format!("payload field '{}' is null", path.join("."))),
        Value::Object(_) => {
            return Err(format!(
                "payload field '{}' is an object, not a scalar",
                path.join(".")
            ))
        }
        Value::Array(_) => {
            return Err(format!(
                "payload field '{}' is an array, not a scalar",
                path.join(".")
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope<'static> = Scope {
        wildcards: 2,
        gateway_id: "gw-1",
        allow_topic: true,
        allow_payload: true,
        allow_key: false,
    };

    fn render(
        t: &str,
        topic: &str,
        caps: &[(usize, usize)],
        payload: &[u8],
    ) -> Result<String, String> {
        let t = Template::parse(t, &SCOPE).unwrap();
        let mut p = Payload::new(payload);
        t.render(&mut Context {
            topic,
            captures: caps,
            payload: &mut p,
            key: None,
        })
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "${3}",
            "${0}",
            "${",
            "a${topic",
            "${foo}",
            "${payload}",
            "${payload.}",
            "${payload.a..b}",
            "${key}",
        ] {
            assert!(Template::parse(bad, &SCOPE).is_err(), "{bad}");
        }
        let e = Template::parse("x-${3}", &SCOPE).unwrap_err();
        assert!(e.contains("filter has 2 wildcards"), "{e}");
    }

    #[test]
    fn rendering() {
        assert_eq!(
            render("t.${1}.${2}", "a/b/c", &[(2, 3), (4, 5)], b"").unwrap(),
            "t.b.c"
        );
        assert_eq!(
            render("${gateway_id}-${topic}", "a/b", &[], b"").unwrap(),
            "gw-1-a/b"
        );
        assert_eq!(render("$${1}$x$", "a", &[], b"").unwrap(), "${1}$x$");
        // leftmost "$${" wins: "$$${1}" is "$" then a literal "${" then "1}"
        assert_eq!(render("$$${1}", "a", &[(0, 1)], b"").unwrap(), "$${1}");
        let p = br#"{"a":{"b":"v","n":12.5,"t":true,"o":{},"z":null,"arr":[1,"x"]}}"#;
        assert_eq!(render("${payload.a.b}", "t", &[], p).unwrap(), "v");
        assert_eq!(render("${payload.a.n}", "t", &[], p).unwrap(), "12.5");
        assert_eq!(render("${payload.a.t}", "t", &[], p).unwrap(), "true");
        assert_eq!(render("${payload.a.arr.1}", "t", &[], p).unwrap(), "x");
        assert!(render("${payload.a.o}", "t", &[], p)
            .unwrap_err()
            .contains("object"));
        assert!(render("${payload.a.z}", "t", &[], p)
            .unwrap_err()
            .contains("null"));
        assert!(render("${payload.a.q}", "t", &[], p)
            .unwrap_err()
            .contains("'a.q' is missing"));
        assert!(render("${payload.a}", "t", &[], b"nope")
            .unwrap_err()
            .contains("not JSON"));
        assert!(render("${payload.a}", "t", &[], b"[1]")
            .unwrap_err()
            .contains("missing"));
    }
}
