//! MQTT topic names and filters, exactly as MQTT 3.1.1 (section 4.7) and 5.0 (section 4.7,
//! 4.8.2 for shared subscriptions) define them.
//!
//! * names and filters are 1..=65,535 bytes of UTF-8 (Rust `&str` is always well-formed,
//!   so surrogates cannot occur) and never contain U+0000;
//! * `/` separates levels; empty levels are levels (`a//b` has three, `/a` two);
//! * in a filter `+` and `#` occupy a whole level, and `#` is the last level;
//!   a topic name has no wildcard at all;
//! * a filter whose first level is a wildcard does not match a topic starting with `$`;
//! * `a/#` also matches `a` (the parent level);
//! * `$share/<group>/<filter>` is a shared subscription: the group is at least one
//!   character without `/`, `+`, `#`, and the filter after it is a full topic filter that
//!   matches on its own (the `$share/<group>/` part is not part of any topic).
//!
//! Control characters and Unicode non-characters are accepted: the specification says a
//! sender SHOULD NOT use them, and a receiver MAY (not MUST) refuse them.

use crate::error::{Error, Result, TopicKind};

/// Longest topic name or filter MQTT can carry (a UTF-8 string with a 16-bit length).
pub const MAX_TOPIC_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// One level of a parsed topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level<'a> {
    /// A literal level (possibly empty).
    Lit(&'a str),
    /// `+`: exactly one level.
    Plus,
    /// `#`: this level and all below, or none (`a/#` matches `a`). Always last.
    Hash,
}

impl<'a> Level<'a> {
    /// Parse one level of a filter that is already known to be valid.
    #[inline]
    pub fn of(s: &'a str) -> Self {
        match s {
            "+" => Level::Plus,
            "#" => Level::Hash,
            other => Level::Lit(other),
        }
    }

    /// Whether this is `+` or `#`.
    #[inline]
    pub fn is_wildcard(&self) -> bool {
        !matches!(self, Level::Lit(_))
    }
}

/// A validated topic filter, split into its optional share group and the filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter<'a> {
    /// `Some(group)` for `$share/<group>/<filter>`.
    pub share_group: Option<&'a str>,
    /// The filter that topics are matched against (without the `$share/<group>/` part).
    pub filter: &'a str,
}

impl<'a> Filter<'a> {
    /// Validate and split a topic filter.
    pub fn parse(input: &'a str) -> Result<Self> {
        check_length(TopicKind::Filter, input)?;
        let (share_group, filter, base) = match input.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let Some(slash) = rest.find('/') else {
                    return Err(Error::topic(
                        TopicKind::Filter,
                        input,
                        "a shared subscription must be $share/<group>/<filter>: no filter after the group",
                        1,
                        input.len(),
                    ));
                };
                let group = &rest[..slash];
                if group.is_empty() {
                    return Err(Error::topic(
                        TopicKind::Filter,
                        input,
                        "the share group of $share/<group>/<filter> is empty",
                        1,
                        SHARE_PREFIX.len(),
                    ));
                }
                if let Some(i) = group.find(['+', '#', '\0']) {
                    let c = group.as_bytes()[i];
                    let what = if c == 0 {
                        "NUL".to_owned()
                    } else {
                        format!("'{}'", c as char)
                    };
                    return Err(Error::topic(
                        TopicKind::Filter,
                        input,
                        format!("the share group contains {what}"),
                        1,
                        SHARE_PREFIX.len() + i,
                    ));
                }
                let filter = &rest[slash + 1..];
                if filter.is_empty() {
                    return Err(Error::topic(
                        TopicKind::Filter,
                        input,
                        "a shared subscription must be $share/<group>/<filter>: the filter is empty",
                        2,
                        input.len(),
                    ));
                }
                (Some(group), filter, SHARE_PREFIX.len() + slash + 1)
            }
            None => (None, input, 0),
        };
        let base_level = if share_group.is_some() { 2 } else { 0 };
        check_filter_levels(input, filter, base, base_level)?;
        Ok(Filter {
            share_group,
            filter,
        })
    }

    /// The levels of the filter proper.
    pub fn levels(&self) -> impl Iterator<Item = Level<'a>> + Clone + 'a {
        self.filter.split('/').map(Level::of)
    }

    /// Whether `topic` (a valid topic name) matches this filter.
    #[inline]
    pub fn matches(&self, topic: &str) -> bool {
        matches_valid(self.filter, topic)
    }
}

fn check_length(kind: TopicKind, input: &str) -> Result<()> {
    if input.is_empty() {
        return Err(Error::topic(
            kind,
            input,
            "empty (must be 1 to 65535 bytes)",
            0,
            0,
        ));
    }
    if input.len() > MAX_TOPIC_LEN {
        let level = input.as_bytes()[..MAX_TOPIC_LEN]
            .iter()
            .filter(|&&b| b == b'/')
            .count();
        return Err(Error::topic(
            kind,
            input,
            format!(
                "{} bytes long, the limit is 65535 bytes of UTF-8",
                input.len()
            ),
            level,
            MAX_TOPIC_LEN,
        ));
    }
    Ok(())
}

/// Validate the levels of a filter proper; offsets and levels are reported relative to
/// the whole input (`base` bytes and `base_level` levels precede `filter`).
fn check_filter_levels(input: &str, filter: &str, base: usize, base_level: usize) -> Result<()> {
    let bytes = filter.as_bytes();
    let mut level = 0usize;
    let mut level_start = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                level += 1;
                level_start = i + 1;
            }
            0 => {
                return Err(Error::topic(
                    TopicKind::Filter,
                    input,
                    "contains NUL (U+0000)",
                    base_level + level,
                    base + i,
                ))
            }
            b'+' | b'#' => {
                let level_end = bytes[i..]
                    .iter()
                    .position(|&c| c == b'/')
                    .map_or(bytes.len(), |p| i + p);
                if level_end - level_start != 1 {
                    return Err(Error::topic(
                        TopicKind::Filter,
                        input,
                        format!("'{}' must occupy a whole level", b as char),
                        base_level + level,
                        base + i,
                    ));
                }
                if b == b'#' && level_end != bytes.len() {
                    return Err(Error::topic(
                        TopicKind::Filter,
                        input,
                        "'#' must be the last level",
                        base_level + level,
                        base + i,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validate an MQTT topic name (what a PUBLISH carries).
pub fn validate_topic_name(topic: &str) -> Result<()> {
    check_length(TopicKind::Name, topic)?;
    let bytes = topic.as_bytes();
    let mut level = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        let reason = match b {
            b'/' => {
                level += 1;
                continue;
            }
            0 => "contains NUL (U+0000)",
            b'+' => "contains the wildcard '+' (not allowed in a topic name)",
            b'#' => "contains the wildcard '#' (not allowed in a topic name)",
            _ => continue,
        };
        return Err(Error::topic(TopicKind::Name, topic, reason, level, i));
    }
    Ok(())
}

/// Validate an MQTT topic filter (what a SUBSCRIBE carries), `$share/<group>/<filter>` included.
pub fn validate_topic_filter(filter: &str) -> Result<()> {
    Filter::parse(filter).map(|_| ())
}

/// Validate both, then tell whether `topic` matches `filter` (a shared subscription
/// matches by its filter part).
pub fn topic_matches(filter: &str, topic: &str) -> Result<bool> {
    let f = Filter::parse(filter)?;
    validate_topic_name(topic)?;
    Ok(f.matches(topic))
}

/// Match a valid filter proper (no `$share/` prefix) against a valid topic name.
pub fn matches_valid(filter: &str, topic: &str) -> bool {
    let dollar = topic.as_bytes().first() == Some(&b'$');
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !(first && dollar),
            (Some("+"), Some(_)) => {
                if first && dollar {
                    return false;
                }
            }
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_err(t: &str) -> (usize, usize) {
        match validate_topic_name(t) {
            Err(Error::Topic { level, offset, .. }) => (level, offset),
            other => panic!("expected a topic error for {t:?}, got {other:?}"),
        }
    }

    fn filter_err(t: &str) -> (usize, usize, String) {
        match validate_topic_filter(t) {
            Err(Error::Topic {
                level,
                offset,
                reason,
                ..
            }) => (level, offset, reason),
            other => panic!("expected a topic error for {t:?}, got {other:?}"),
        }
    }

    #[test]
    fn names() {
        for ok in [
            "a",
            "/",
            "//",
            "a/b/c",
            "$SYS/x",
            " ",
            "a b/ü/😀",
            "$share/g/x",
        ] {
            validate_topic_name(ok).unwrap();
        }
        assert_eq!(name_err(""), (0, 0));
        assert_eq!(name_err("a/b+"), (1, 3));
        assert_eq!(name_err("a/b/#"), (2, 4));
        assert_eq!(name_err("a\0"), (0, 1));
        validate_topic_name(&"a".repeat(65_535)).unwrap();
        assert_eq!(name_err(&"a".repeat(65_536)).1, 65_535);
        // 65,535 bytes counted in UTF-8, not chars
        assert!(validate_topic_name(&"é".repeat(32_768)).is_err());
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "+/",
            "a//b",
            "$SYS/#",
            "$share/g/a/+",
            "$share/g/#",
            "$share",
            "$sharex/a",
            "$share/g//",
            "a/+/#",
        ] {
            validate_topic_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(filter_err("a/b#").0, 1);
        assert_eq!(filter_err("a/b#").1, 3);
        assert_eq!(filter_err("#/a").2, "'#' must be the last level");
        assert_eq!(
            filter_err("a+"),
            (0, 1, "'+' must occupy a whole level".into())
        );
        assert_eq!(filter_err("").1, 0);
        assert_eq!(filter_err("$share/").1, 7);
        assert_eq!(filter_err("$share/g").1, 8);
        assert_eq!(filter_err("$share//a").1, 7);
        assert_eq!(
            filter_err("$share/g/"),
            (
                2,
                9,
                "a shared subscription must be $share/<group>/<filter>: the filter is empty".into()
            )
        );
        assert_eq!(filter_err("$share/g+/a").1, 8);
        assert_eq!(filter_err("$share/g/a+").1, 10);
        assert_eq!(filter_err("$share/g/a/b+").0, 3);
        assert_eq!(filter_err("a/\0").1, 2);
    }

    #[test]
    fn matching() {
        let yes = [
            ("#", "a"),
            ("#", "a/b"),
            ("#", "/"),
            ("a/#", "a"),
            ("a/#", "a/"),
            ("a/#", "a/b/c"),
            ("+", "a"),
            ("+/+", "/"),
            ("/+", "/a"),
            ("+/#", "a"),
            ("a/+/c", "a/b/c"),
            ("a//b", "a//b"),
            ("$SYS/#", "$SYS"),
            ("$SYS/+", "$SYS/x"),
            ("a/+", "a/"),
            ("$share/g/a/+", "a/b"),
        ];
        for (f, t) in yes {
            assert!(topic_matches(f, t).unwrap(), "{f} should match {t}");
        }
        let no = [
            ("#", "$SYS"),
            ("#", "$SYS/a"),
            ("+/a", "$x/a"),
            ("+", "$"),
            ("a/+", "a"),
            ("a", "a/"),
            ("a/+/c", "a/b/c/d"),
            ("+", "/"),
            ("a/b", "a"),
            ("/#", "a"),
            ("$share/g/#", "$SYS/x"),
        ];
        for (f, t) in no {
            assert!(!topic_matches(f, t).unwrap(), "{f} should not match {t}");
        }
        assert!(topic_matches("a+", "a").is_err());
        assert!(topic_matches("a", "a+").is_err());
    }
}
