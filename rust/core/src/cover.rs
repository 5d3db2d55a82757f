//! The subscription cover: the filters ingest subscribes with so that the broker delivers
//! each message at most once, whatever the protocol version (an MQTT 5 broker sends one
//! copy per matching subscription, a 3.1.1 broker may too).
//!
//! Guarantees of [`disjoint_cover`]:
//! * no topic matches two filters of the result (pairwise disjoint);
//! * every topic matching an input matches one filter of the result (a superset);
//! * duplicates and inputs subsumed by another input are dropped; two inputs that overlap
//!   without one containing the other are replaced by their least generalization
//!   (`a/b/+` and `a/+/c` -> `a/+/+`), repeated until no two overlap;
//! * inputs that are already pairwise disjoint come back unchanged, in their order.
//!
//! Shared subscriptions (`$share/<group>/...`) are covered per group: a filter is only
//! merged with filters of the same group (or with unshared filters when both are
//! unshared), because a shared and an unshared subscription are different deliveries
//! that no single filter can stand for. Overlap *between* groups is left as it is.

use crate::error::Result;
use crate::topic::{Filter, Level};

/// A parsed filter: share group plus levels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct F {
    group: Option<String>,
    levels: Vec<Lvl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lvl {
    Lit(String),
    Plus,
    Hash,
}

impl Lvl {
    fn is_dollar_lit(&self) -> bool {
        matches!(self, Lvl::Lit(s) if s.starts_with('$'))
    }
}

impl F {
    fn parse(input: &str) -> Result<F> {
        let f = Filter::parse(input)?;
        Ok(F {
            group: f.share_group.map(str::to_owned),
            levels: f
                .levels()
                .map(|l| match l {
                    Level::Lit(s) => Lvl::Lit(s.to_owned()),
                    Level::Plus => Lvl::Plus,
                    Level::Hash => Lvl::Hash,
                })
                .collect(),
        })
    }

    fn render(&self) -> String {
        let mut s = String::new();
        if let Some(g) = &self.group {
            s.push_str("$share/");
            s.push_str(g);
            s.push('/');
        }
        for (i, l) in self.levels.iter().enumerate() {
            if i > 0 {
                s.push('/');
            }
            match l {
                Lvl::Lit(x) => s.push_str(x),
                Lvl::Plus => s.push('+'),
                Lvl::Hash => s.push('#'),
            }
        }
        s
    }
}

/// Whether some valid topic name matches both filters (levels only).
fn overlaps(a: &[Lvl], b: &[Lvl]) -> bool {
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (None, None) => return true,
            (Some(Lvl::Hash), other) | (other, Some(Lvl::Hash)) => {
                // '#' at level 0 matches no '$' topic; '#' matches the parent level too.
                // When the other filter ends here, the only common topic is the first i
                // levels: with i == 1 and an empty level that is "", not a valid topic.
                let empty = |l: Option<&Lvl>| matches!(l, Some(Lvl::Lit(x)) if x.is_empty());
                if other.is_none() && i == 1 && (empty(a.first()) || empty(b.first())) {
                    return false;
                }
                return !(i == 0 && other.is_some_and(Lvl::is_dollar_lit));
            }
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Lvl::Plus), Some(Lvl::Plus)) => {}
            (Some(Lvl::Plus), Some(l @ Lvl::Lit(_))) | (Some(l @ Lvl::Lit(_)), Some(Lvl::Plus)) => {
                if i == 0 && l.is_dollar_lit() {
                    return false;
                }
            }
            (Some(Lvl::Lit(x)), Some(Lvl::Lit(y))) => {
                if x != y {
                    return false;
                }
            }
        }
        i += 1;
    }
}

/// Whether every topic matching `small` also matches `big` (levels only).
fn subsumes(big: &[Lvl], small: &[Lvl]) -> bool {
    let mut i = 0;
    loop {
        match (big.get(i), small.get(i)) {
            (None, None) => return true,
            (Some(Lvl::Hash), s) => return !(i == 0 && s.is_some_and(Lvl::is_dollar_lit)),
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(_), Some(Lvl::Hash)) => return false,
            (Some(Lvl::Plus), Some(s)) => {
                if i == 0 && s.is_dollar_lit() {
                    return false;
                }
            }
            (Some(Lvl::Lit(x)), Some(Lvl::Lit(y))) => {
                if x != y {
                    return false;
                }
            }
            (Some(Lvl::Lit(_)), Some(Lvl::Plus)) => return false,
        }
        i += 1;
    }
}

/// The least general filter that subsumes both (for filters that overlap).
fn generalize(a: &[Lvl], b: &[Lvl]) -> Vec<Lvl> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (None, None) => return out,
            (Some(Lvl::Hash), _) | (_, Some(Lvl::Hash)) | (None, Some(_)) | (Some(_), None) => {
                out.push(Lvl::Hash);
                return out;
            }
            (Some(x), Some(y)) if x == y => out.push(x.clone()),
            (Some(_), Some(_)) => out.push(Lvl::Plus),
        }
        i += 1;
    }
}

fn same_space(a: &F, b: &F) -> bool {
    a.group == b.group
}

/// Compute the subscription cover of `filters` (see the module documentation).
/// Every input must be a valid topic filter; the first invalid one is the error.
pub fn disjoint_cover<S: AsRef<str>>(filters: &[S]) -> Result<Vec<String>> {
    let parsed: Vec<F> = filters
        .iter()
        .map(|f| F::parse(f.as_ref()))
        .collect::<Result<_>>()?;
    // 1. Drop duplicates and subsumed filters (keep the first of equal ones).
    let mut set: Vec<F> = Vec::with_capacity(parsed.len());
    for (i, f) in parsed.iter().enumerate() {
        let dominated = parsed.iter().enumerate().any(|(j, g)| {
            j != i && same_space(f, g) && subsumes(&g.levels, &f.levels) && (g != f || j < i)
        });
        if !dominated {
            set.push(f.clone());
        }
    }
    // 2. Merge overlapping pairs into their generalization until none overlap.
    'outer: loop {
        for i in 0..set.len() {
            for j in i + 1..set.len() {
                if same_space(&set[i], &set[j]) && overlaps(&set[i].levels, &set[j].levels) {
                    let g = F {
                        group: set[i].group.clone(),
                        levels: generalize(&set[i].levels, &set[j].levels),
                    };
                    // Remove everything g subsumes (i and j at least); g takes the place
                    // of the first filter it replaces, the others keep their order.
                    let old = std::mem::take(&mut set);
                    let mut pos = None;
                    for f in old {
                        if same_space(&f, &g) && subsumes(&g.levels, &f.levels) {
                            pos.get_or_insert(set.len());
                        } else {
                            set.push(f);
                        }
                    }
                    set.insert(pos.unwrap_or(set.len()), g);
                    continue 'outer;
                }
            }
        }
        break;
    }
    Ok(set.iter().map(F::render).collect())
}

/// Whether two valid topic filters can match a common topic (shared subscriptions are
/// compared by their filter part).
pub fn filters_overlap(a: &str, b: &str) -> Result<bool> {
    Ok(overlaps(&F::parse(a)?.levels, &F::parse(b)?.levels))
}

/// Whether every topic matching `small` matches `big` (both valid filters, compared by
/// their filter parts).
pub fn filter_subsumes(big: &str, small: &str) -> Result<bool> {
    Ok(subsumes(&F::parse(big)?.levels, &F::parse(small)?.levels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cover(v: &[&str]) -> Vec<String> {
        disjoint_cover(v).unwrap()
    }

    #[test]
    fn examples() {
        assert_eq!(cover(&["a/b/+", "a/+/c"]), ["a/+/+"]);
        assert_eq!(cover(&["a/+/c", "a/b/+"]), ["a/+/+"]);
        assert_eq!(
            cover(&["x/1", "a/#", "a/b", "x/1", "y"]),
            ["x/1", "a/#", "y"]
        );
        assert_eq!(cover(&["c", "b", "a"]), ["c", "b", "a"]);
        assert_eq!(cover(&["a", "a/#"]), ["a/#"]);
        assert_eq!(cover(&["a", "+/#"]), ["+/#"]);
        assert_eq!(cover(&["#", "$SYS/#"]), ["#", "$SYS/#"]);
        assert_eq!(cover(&["+/a", "$x/a"]), ["+/a", "$x/a"]);
        assert_eq!(cover(&["a/+/c", "+/b/#"]), ["+/+/#"]);
        assert_eq!(cover(&["a/b", "a/c", "a/+"]), ["a/+"]);
        // merging may cascade
        assert_eq!(
            cover(&["a/b/+", "a/+/c", "a/x/y/z", "a/+/+/z"]),
            ["a/+/+", "a/+/+/z"]
        );
        assert_eq!(
            cover(&["$share/g/a/+", "$share/g/a/b", "a/b"]),
            ["$share/g/a/+", "a/b"]
        );
    }

    #[test]
    fn predicates() {
        assert!(overlaps(
            &F::parse("a/#").unwrap().levels,
            &F::parse("a").unwrap().levels
        ));
        assert!(!overlaps(
            &F::parse("a/+").unwrap().levels,
            &F::parse("a").unwrap().levels
        ));
        assert!(!overlaps(
            &F::parse("#").unwrap().levels,
            &F::parse("$a").unwrap().levels
        ));
        assert!(overlaps(
            &F::parse("#").unwrap().levels,
            &F::parse("+/x").unwrap().levels
        ));
        assert!(subsumes(
            &F::parse("a/#").unwrap().levels,
            &F::parse("a").unwrap().levels
        ));
        assert!(!subsumes(
            &F::parse("+/#").unwrap().levels,
            &F::parse("$a").unwrap().levels
        ));
    }
}
