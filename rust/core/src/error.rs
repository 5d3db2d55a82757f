//! The one error type of the core. The binding maps each variant onto the Python
//! exception tree rooted at `EdgefwdError` (see `rust/src/errors.rs`).

use std::fmt;

/// What kind of string a [`Error::Topic`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A topic name (what a PUBLISH carries): no wildcards.
    Name,
    /// A topic filter (what a SUBSCRIBE carries), possibly `$share/<group>/<filter>`.
    Filter,
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicKind::Name => "topic name",
            TopicKind::Filter => "topic filter",
        })
    }
}

/// Every error the core can return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An invalid MQTT topic name or filter. `level` is the 0-based topic level and
    /// `offset` the byte offset in the string where the problem was found.
    #[error("invalid {kind} {shown}: {reason} (level {level}, byte offset {offset})", shown = show(.input))]
    Topic {
        kind: TopicKind,
        input: String,
        reason: String,
        level: usize,
        offset: usize,
    },

    /// A template that cannot be compiled (syntax, or a `${N}` the route's filter has
    /// no wildcard for). Reported at construction, never at the first message.
    #[error("route {route}: {field} template {template:?}: {reason}")]
    Template {
        route: usize,
        field: &'static str,
        template: String,
        reason: String,
    },

    /// A batch that fails a check. `offset` is a byte offset into the batch (or, for
    /// a compressed batch's records, into its decompressed body: `reason` says so).
    /// `record_count` comes from the header when the header's CRC is intact.
    #[error("corrupt batch at offset {offset}: {reason}")]
    CorruptBatch {
        offset: usize,
        reason: String,
        record_count: Option<u32>,
    },

    /// A batch whose header is intact but written in a format version this build does
    /// not read (e.g. after a downgrade). Not damage: the batch may be read by a newer build.
    #[error("unsupported batch format version {version} (this build reads version {supported})")]
    UnsupportedVersion {
        version: u8,
        supported: u8,
        record_count: u32,
    },

    /// An argument that cannot be encoded or used (e.g. a boot id that is not 16 bytes,
    /// QoS 3, an unknown compression name, a string longer than its length field).
    #[error("{0}")]
    InvalidInput(String),
}

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Quote a possibly huge user string for a message: at most 80 chars shown.
fn show(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

impl Error {
    pub(crate) fn topic(
        kind: TopicKind,
        input: &str,
        reason: impl Into<String>,
        level: usize,
        offset: usize,
    ) -> Self {
        // Never keep more than a prefix of a (possibly 64 KiB) input inside the error.
        let input = if input.len() > 256 {
            let mut end = 256;
            while !input.is_char_boundary(end) {
                end -= 1;
            }
            input[..end].to_owned()
        } else {
            input.to_owned()
        };
        Error::Topic {
            kind,
            input,
            reason: reason.into(),
            level,
            offset,
        }
    }

    pub(crate) fn corrupt(
        offset: usize,
        reason: impl Into<String>,
        record_count: Option<u32>,
    ) -> Self {
        Error::CorruptBatch {
            offset,
            reason: reason.into(),
            record_count,
        }
    }
}
