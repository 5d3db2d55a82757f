//! What the drainer hands to the Kafka producer for each record: the headers of the
//! Kafka record contract (DESIGN.md, "Kafka record"), in their fixed order.

use crate::batch::Record;

pub const H_MQTT_TOPIC: &str = "mqtt.topic";
pub const H_MQTT_QOS: &str = "mqtt.qos";
pub const H_MQTT_RETAIN: &str = "mqtt.retain";
pub const H_GATEWAY: &str = "edgefwd.gateway";
pub const H_EPOCH: &str = "edgefwd.epoch";
pub const H_SEQ: &str = "edgefwd.seq";
pub const H_CLOCK: &str = "edgefwd.clock";
/// Prefix of the header that carries an MQTT 5 user property.
pub const H_USER_PREFIX: &str = "mqtt.user.";

/// A header name: one of the fixed names, or `mqtt.user.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName<'a> {
    Fixed(&'static str),
    /// The user property's name, without the `mqtt.user.` prefix.
    User(&'a str),
}

/// A header value (UTF-8 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Fixed(&'static [u8]),
    /// Borrowed from the record or the caller (topic, gateway, epoch, user property).
    Borrowed(&'a [u8]),
    /// Formatted in decimal.
    Seq(u64),
}

/// Call `f` with each header of `rec`, in the contract's order:
/// `mqtt.topic`, `mqtt.qos`, `mqtt.retain`, `edgefwd.gateway`, `edgefwd.epoch`,
/// `edgefwd.seq`, then `edgefwd.clock: unsynced` only when the clock was not
/// synchronized, then every user property as `mqtt.user.<name>`.
pub fn for_each_header<'a>(
    rec: &Record<'a>,
    gateway_id: &'a str,
    epoch: &'a str,
    mut f: impl FnMut(HeaderName<'a>, HeaderValue<'a>),
) {
    f(
        HeaderName::Fixed(H_MQTT_TOPIC),
        HeaderValue::Borrowed(rec.mqtt_topic.as_bytes()),
    );
    let qos: &'static [u8] = match rec.qos {
        0 => b"0",
        1 => b"1",
        _ => b"2",
    };
    f(HeaderName::Fixed(H_MQTT_QOS), HeaderValue::Fixed(qos));
    f(
        HeaderName::Fixed(H_MQTT_RETAIN),
        HeaderValue::Fixed(if rec.retain { b"true" } else { b"false" }),
    );
    f(
        HeaderName::Fixed(H_GATEWAY),
        HeaderValue::Borrowed(gateway_id.as_bytes()),
    );
    f(
        HeaderName::Fixed(H_EPOCH),
        HeaderValue::Borrowed(epoch.as_bytes()),
    );
    f(HeaderName::Fixed(H_SEQ), HeaderValue::Seq(rec.seq));
    if !rec.clock_synced {
        f(HeaderName::Fixed(H_CLOCK), HeaderValue::Fixed(b"unsynced"));
    }
    for &(name, value) in &rec.user_properties {
        f(
            HeaderName::User(name),
            HeaderValue::Borrowed(value.as_bytes()),
        );
    }
}

/// The headers of `rec` as owned `(name, value)` pairs (for tests and non-hot paths).
pub fn headers(rec: &Record<'_>, gateway_id: &str, epoch: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(7 + rec.user_properties.len());
    for_each_header(rec, gateway_id, epoch, |n, v| {
        let name = match n {
            HeaderName::Fixed(s) => s.to_owned(),
            HeaderName::User(u) => format!("{H_USER_PREFIX}{u}"),
        };
        let value = match v {
            HeaderValue::Fixed(b) | HeaderValue::Borrowed(b) => b.to_vec(),
            HeaderValue::Seq(s) => s.to_string().into_bytes(),
        };
        out.push((name, value));
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_values() {
        let rec = Record {
            seq: 17,
            recv_wall_ms: 1,
            recv_mono_ns: 2,
            clock_synced: false,
            qos: 1,
            retain: false,
            route: 0,
            kafka_topic: "t",
            kafka_key: None,
            mqtt_topic: "a/b",
            payload: b"",
            user_properties: vec![("x", "1"), ("y", "é")],
        };
        let h = headers(&rec, "gw", "ep");
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "mqtt.topic",
                "mqtt.qos",
                "mqtt.retain",
                "edgefwd.gateway",
                "edgefwd.epoch",
                "edgefwd.seq",
                "edgefwd.clock",
                "mqtt.user.x",
                "mqtt.user.y"
            ]
        );
        assert_eq!(h[1].1, b"1");
        assert_eq!(h[2].1, b"false");
        assert_eq!(h[5].1, b"17");
        assert_eq!(h[6].1, b"unsynced");
        assert_eq!(h[8].1, "é".as_bytes());
        let synced = Record {
            clock_synced: true,
            user_properties: vec![],
            ..rec
        };
        assert_eq!(headers(&synced, "gw", "ep").len(), 6);
    }
}
