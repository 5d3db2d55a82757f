//! edgefwd-core: everything edgefwd does to a message in Rust, with no Python in sight.
//!
//! * [`topic`]: MQTT topic names and filters, validated and matched as the specification says;
//! * [`cover`]: the non-overlapping subscription cover of the route filters;
//! * [`router`]: the route table (a level trie) and its [`template`]s;
//! * [`kafka`]: Kafka's topic-name rules;
//! * [`batch`]: the queue's versioned, checksummed, optionally compressed batch codec;
//! * [`produce`]: the Kafka record headers of each queued record.
//!
//! The Python binding (`rust/src`, module `edgefwd._core`) is a thin layer over these.

#![forbid(unsafe_code)]

pub mod batch;
pub mod cover;
pub mod error;
pub mod kafka;
pub mod produce;
pub mod router;
pub mod template;
pub mod topic;

pub use batch::{
    batch_record_count, encode_batch, open_batch, Batch, Compression, Header, OwnedRecord, Record,
    FORMAT_VERSION,
};
pub use cover::disjoint_cover;
pub use error::{Error, Result, TopicKind};
pub use router::{Destination, RouteOutcome, RouteSpec, Router, Scratch};
pub use topic::{topic_matches, validate_topic_filter, validate_topic_name, Filter};

/// The crate version (also the Python package's `__version__`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
