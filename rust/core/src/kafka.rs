//! Kafka's rules for topic names (as the broker checks them in `Topic.validate`).

/// Longest topic name Kafka accepts.
pub const MAX_KAFKA_TOPIC_LEN: usize = 249;

/// Whether `c` may appear in a Kafka topic name: `[a-zA-Z0-9._-]`.
#[inline]
pub fn is_kafka_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

/// Check a Kafka topic name; `Err(reason)` says why Kafka would refuse it.
pub fn validate_kafka_topic(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("rendered Kafka topic is empty".to_owned());
    }
    if name == "." || name == ".." {
        return Err(format!(
            "rendered Kafka topic {name:?} is not allowed ('.' and '..' are reserved)"
        ));
    }
    if name.len() > MAX_KAFKA_TOPIC_LEN {
        return Err(format!(
            "rendered Kafka topic is {} characters long, the limit is {MAX_KAFKA_TOPIC_LEN}",
            name.chars().count()
        ));
    }
    if let Some((i, c)) = name.char_indices().find(|&(_, c)| !is_kafka_topic_char(c)) {
        return Err(format!(
            "rendered Kafka topic {name:?} has {c:?} at byte {i}; only [a-zA-Z0-9._-] are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_kafka_topic("telemetry.v1_a-b").is_ok());
        assert!(validate_kafka_topic(&"a".repeat(249)).is_ok());
        assert!(validate_kafka_topic(&"a".repeat(250)).is_err());
        for bad in ["", ".", "..", "a/b", "a b", "é", "a:b"] {
            assert!(validate_kafka_topic(bad).is_err(), "{bad:?}");
        }
        assert!(validate_kafka_topic("...").is_ok());
    }
}
