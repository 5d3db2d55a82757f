//! The queue's batch codec: a versioned binary format with a CRC32C over the header and
//! another over the body, optional lz4 or zstd compression of the body.
//! docs/batch-format.md describes it byte by byte; keep the two in step.
//!
//! Decoding never trusts a length beyond the buffer that holds it: every length is
//! checked against what is left before anything is allocated or sliced, allocations are
//! bounded by the input's size (or, for a compressed body, by the decompressed bytes that
//! really come out, capped by [`MAX_BODY_LEN`]), and every failure is an
//! [`Error::CorruptBatch`] naming the byte offset.

use std::borrow::Cow;
use std::io::Read as _;

use crate::error::{Error, Result};

/// First four bytes of every batch.
pub const MAGIC: [u8; 4] = *b"EFWB";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the fixed header (the same in every version).
pub const HEADER_LEN: usize = 44;
/// Largest (decompressed) body a batch may have: 256 MiB.
pub const MAX_BODY_LEN: usize = 256 << 20;
/// Largest zstd window (log2) a decoder accepts: 8 MiB, what level 19 uses at most, so a
/// forged frame cannot make the decoder allocate more.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Smallest encoded record: fixed fields plus the four length fields.
pub const MIN_RECORD_LEN: usize = 8 + 8 + 8 + 1 + 2 + 2 + 2 + 4 + 2;

const OFF_VERSION: usize = 4;
const OFF_FLAGS: usize = 5;
const OFF_RESERVED: usize = 6;
const OFF_COUNT: usize = 8;
const OFF_BOOT_ID: usize = 12;
const OFF_BODY_LEN: usize = 28;
const OFF_RAW_LEN: usize = 32;
const OFF_BODY_CRC: usize = 36;
const OFF_HEADER_CRC: usize = 40;

const FLAG_COMPRESSION_MASK: u8 = 0b11;

const REC_CLOCK_SYNCED: u8 = 1 << 0;
const REC_RETAIN: u8 = 1 << 1;
const REC_QOS_SHIFT: u8 = 2;
const REC_QOS_MASK: u8 = 0b11 << REC_QOS_SHIFT;
const REC_HAS_KEY: u8 = 1 << 4;
const REC_RESERVED: u8 = !(REC_CLOCK_SYNCED | REC_RETAIN | REC_QOS_MASK | REC_HAS_KEY);

/// Body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    /// zstd at the given level (1..=19; 3 is zstd's default). The "ultra" levels 20..22
    /// are refused: they need windows of up to 128 MiB, and decoders here refuse any
    /// window above 2^[`ZSTD_WINDOW_LOG_MAX`] bytes.
    Zstd(i32),
}

impl Compression {
    /// `"none"`, `"lz4"`, `"zstd"` (level 3) or `"zstd:<level>"` (1..=19).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => {
                if let Some(level) = name.strip_prefix("zstd:") {
                    if let Ok(l @ 1..=19) = level.parse::<i32>() {
                        return Ok(Compression::Zstd(l));
                    }
                }
                Err(Error::InvalidInput(format!(
                    "unknown compression {name:?}: use \"none\", \"lz4\", \"zstd\" or \"zstd:<1..19>\""
                )))
            }
        }
    }

    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd(_) => 2,
        }
    }

    /// The name as [`Compression::from_name`] reads it (without a zstd level).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd(_) => "zstd",
        }
    }
}

/// One queued message for one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Assigned at arrival, increasing; a message fanned out to several routes keeps one seq.
    pub seq: u64,
    /// Wall-clock receive time, ms since the Unix epoch.
    pub recv_wall_ms: i64,
    /// CLOCK_MONOTONIC (or BOOTTIME) receive time in ns, valid within the batch's boot id.
    pub recv_mono_ns: u64,
    /// Whether the wall clock was synchronized when the message arrived.
    pub clock_synced: bool,
    /// QoS as delivered to edgefwd (0..=2).
    pub qos: u8,
    pub retain: bool,
    /// Route index in the route table.
    pub route: u16,
    pub kafka_topic: &'a str,
    pub kafka_key: Option<&'a [u8]>,
    pub mqtt_topic: &'a str,
    pub payload: &'a [u8],
    /// MQTT 5 user properties, in order (names may repeat).
    pub user_properties: Vec<(&'a str, &'a str)>,
}

impl Record<'_> {
    /// Encoded size of this record.
    pub fn encoded_len(&self) -> usize {
        MIN_RECORD_LEN
            + self.kafka_topic.len()
            + self.kafka_key.map_or(0, |k| 4 + k.len())
            + self.mqtt_topic.len()
            + self.payload.len()
            + self
                .user_properties
                .iter()
                .map(|(n, v)| 4 + n.len() + v.len())
                .sum::<usize>()
    }
}

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub compression: Compression,
    pub record_count: u32,
    pub boot_id: [u8; 16],
    /// Length of the body as stored (compressed or not).
    pub body_len: u32,
    /// Length of the body once decompressed.
    pub raw_len: u32,
    pub body_crc: u32,
}

fn invalid(msg: String) -> Error {
    Error::InvalidInput(msg)
}

/// Encode `records` into one batch.
pub fn encode_batch(
    records: &[Record<'_>],
    boot_id: &[u8; 16],
    compression: Compression,
) -> Result<Vec<u8>> {
    let count = u32::try_from(records.len())
        .map_err(|_| invalid(format!("{} records in one batch", records.len())))?;
    let mut raw_len = 0usize;
    for (i, r) in records.iter().enumerate() {
        check_record(i, r)?;
        raw_len += r.encoded_len();
    }
    if raw_len > MAX_BODY_LEN {
        return Err(invalid(format!(
            "batch body would be {raw_len} bytes; the limit is {MAX_BODY_LEN}"
        )));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + raw_len);
    out.resize(HEADER_LEN, 0);
    for r in records {
        write_record(&mut out, r);
    }
    debug_assert_eq!(out.len(), HEADER_LEN + raw_len);
    let mut used = compression;
    match compression {
        Compression::None => {}
        Compression::Lz4 | Compression::Zstd(_) => {
            let body = &out[HEADER_LEN..];
            let packed = match compression {
                Compression::Lz4 => lz4_flex::block::compress(body),
                Compression::Zstd(level) => zstd::bulk::compress(body, level)
                    .map_err(|e| invalid(format!("zstd compression failed: {e}")))?,
                Compression::None => unreachable!(),
            };
            if packed.len() < body.len() {
                out.truncate(HEADER_LEN);
                out.extend_from_slice(&packed);
            } else {
                // Incompressible: store as it is (the header says so).
                used = Compression::None;
            }
        }
    }
    let body_len = (out.len() - HEADER_LEN) as u32;
    let body_crc = crc32c::crc32c(&out[HEADER_LEN..]);
    let h = &mut out[..HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[OFF_VERSION] = FORMAT_VERSION;
    h[OFF_FLAGS] = used.code();
    h[OFF_RESERVED..OFF_COUNT].copy_from_slice(&0u16.to_le_bytes());
    h[OFF_COUNT..OFF_BOOT_ID].copy_from_slice(&count.to_le_bytes());
    h[OFF_BOOT_ID..OFF_BODY_LEN].copy_from_slice(boot_id);
    h[OFF_BODY_LEN..OFF_RAW_LEN].copy_from_slice(&body_len.to_le_bytes());
    h[OFF_RAW_LEN..OFF_BODY_CRC].copy_from_slice(&(raw_len as u32).to_le_bytes());
    h[OFF_BODY_CRC..OFF_HEADER_CRC].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[..OFF_HEADER_CRC]);
    h[OFF_HEADER_CRC..HEADER_LEN].copy_from_slice(&header_crc.to_le_bytes());
    Ok(out)
}

fn check_record(i: usize, r: &Record<'_>) -> Result<()> {
    let too_long = |what: &str, len: usize, max: usize| {
        Err(invalid(format!(
            "record {i}: {what} is {len} bytes; the format allows at most {max}"
        )))
    };
    if r.qos > 2 {
        return Err(invalid(format!(
            "record {i}: qos {} is not 0, 1 or 2",
            r.qos
        )));
    }
    if r.kafka_topic.len() > u16::MAX as usize {
        return too_long("kafka_topic", r.kafka_topic.len(), u16::MAX as usize);
    }
    if r.mqtt_topic.len() > u16::MAX as usize {
        return too_long("mqtt_topic", r.mqtt_topic.len(), u16::MAX as usize);
    }
    if let Some(k) = r.kafka_key {
        if k.len() > u32::MAX as usize {
            return too_long("kafka_key", k.len(), u32::MAX as usize);
        }
    }
    if r.payload.len() > u32::MAX as usize {
        return too_long("payload", r.payload.len(), u32::MAX as usize);
    }
    if r.user_properties.len() > u16::MAX as usize {
        return Err(invalid(format!(
            "record {i}: {} user properties; at most 65535",
            r.user_properties.len()
        )));
    }
    for (n, v) in &r.user_properties {
        if n.len() > u16::MAX as usize || v.len() > u16::MAX as usize {
            return too_long("a user property", n.len().max(v.len()), u16::MAX as usize);
        }
    }
    Ok(())
}

fn write_record(out: &mut Vec<u8>, r: &Record<'_>) {
    out.extend_from_slice(&r.seq.to_le_bytes());
    out.extend_from_slice(&r.recv_wall_ms.to_le_bytes());
    out.extend_from_slice(&r.recv_mono_ns.to_le_bytes());
    let mut flags = (r.qos << REC_QOS_SHIFT) & REC_QOS_MASK;
    if r.clock_synced {
        flags |= REC_CLOCK_SYNCED;
    }
    if r.retain {
        flags |= REC_RETAIN;
    }
    if r.kafka_key.is_some() {
        flags |= REC_HAS_KEY;
    }
    out.push(flags);
    out.extend_from_slice(&r.route.to_le_bytes());
    out.extend_from_slice(&(r.kafka_topic.len() as u16).to_le_bytes());
    out.extend_from_slice(r.kafka_topic.as_bytes());
    if let Some(k) = r.kafka_key {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
    }
    out.extend_from_slice(&(r.mqtt_topic.len() as u16).to_le_bytes());
    out.extend_from_slice(r.mqtt_topic.as_bytes());
    out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(r.payload);
    out.extend_from_slice(&(r.user_properties.len() as u16).to_le_bytes());
    for (n, v) in &r.user_properties {
        out.extend_from_slice(&(n.len() as u16).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
}

#[inline]
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Read and check the header, whatever the version; the header CRC is checked first,
/// so a damaged header is never mistaken for a newer version.
fn read_raw_header(data: &[u8]) -> Result<Header> {
    let n = data.len().min(MAGIC.len());
    if data[..n] != MAGIC[..n] {
        return Err(Error::corrupt(0, "bad magic (not an edgefwd batch)", None));
    }
    if data.len() < HEADER_LEN {
        return Err(Error::corrupt(
            data.len(),
            format!(
                "truncated: {} bytes, the header alone is {HEADER_LEN}",
                data.len()
            ),
            None,
        ));
    }
    let h = &data[..HEADER_LEN];
    let stored = u32_at(h, OFF_HEADER_CRC);
    let actual = crc32c::crc32c(&h[..OFF_HEADER_CRC]);
    if stored != actual {
        return Err(Error::corrupt(
            OFF_HEADER_CRC,
            format!("header CRC32C mismatch (stored {stored:#010x}, computed {actual:#010x})"),
            None,
        ));
    }
    let record_count = u32_at(h, OFF_COUNT);
    let flags = h[OFF_FLAGS];
    let compression = match flags & FLAG_COMPRESSION_MASK {
        0 => Compression::None,
        1 => Compression::Lz4,
        2 => Compression::Zstd(0),
        _ => Compression::None, // checked by the version-1 reader below
    };
    Ok(Header {
        version: h[OFF_VERSION],
        compression,
        record_count,
        boot_id: h[OFF_BOOT_ID..OFF_BODY_LEN].try_into().expect("16 bytes"),
        body_len: u32_at(h, OFF_BODY_LEN),
        raw_len: u32_at(h, OFF_RAW_LEN),
        body_crc: u32_at(h, OFF_BODY_CRC),
    })
}

/// Read and check the header of a version-1 batch, including the lengths against `data`.
pub fn read_header(data: &[u8]) -> Result<Header> {
    let hd = read_raw_header(data)?;
    let count = Some(hd.record_count);
    if hd.version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            version: hd.version,
            supported: FORMAT_VERSION,
            record_count: hd.record_count,
        });
    }
    let flags = data[OFF_FLAGS];
    if flags & !FLAG_COMPRESSION_MASK != 0 || flags & FLAG_COMPRESSION_MASK == 3 {
        return Err(Error::corrupt(
            OFF_FLAGS,
            format!("unknown flags {flags:#04x}"),
            count,
        ));
    }
    if data[OFF_RESERVED..OFF_COUNT] != [0, 0] {
        return Err(Error::corrupt(
            OFF_RESERVED,
            "reserved header bytes are not zero",
            count,
        ));
    }
    let body_len = hd.body_len as usize;
    let raw_len = hd.raw_len as usize;
    if data.len() - HEADER_LEN != body_len {
        return Err(Error::corrupt(
            data.len().min(HEADER_LEN + body_len),
            format!(
                "{} ({} bytes, the header says {})",
                if data.len() - HEADER_LEN < body_len {
                    "truncated"
                } else {
                    "trailing bytes"
                },
                data.len(),
                HEADER_LEN + body_len
            ),
            count,
        ));
    }
    if raw_len > MAX_BODY_LEN {
        return Err(Error::corrupt(
            OFF_RAW_LEN,
            format!("body length {raw_len} exceeds {MAX_BODY_LEN}"),
            count,
        ));
    }
    let consistent = match hd.compression {
        Compression::None => raw_len == body_len,
        // an lz4 block expands at most ~255 times
        Compression::Lz4 => raw_len <= body_len.saturating_mul(255).saturating_add(16),
        Compression::Zstd(_) => true,
    };
    if !consistent {
        return Err(Error::corrupt(
            OFF_RAW_LEN,
            format!(
                "decompressed length {raw_len} impossible for a {} body of {body_len} bytes",
                hd.compression.name()
            ),
            count,
        ));
    }
    if (hd.record_count as usize).saturating_mul(MIN_RECORD_LEN) > raw_len {
        return Err(Error::corrupt(
            OFF_COUNT,
            format!(
                "{} records cannot fit in a body of {raw_len} bytes",
                hd.record_count
            ),
            count,
        ));
    }
    Ok(hd)
}

/// The record count from an intact header (any version); the body is not looked at.
pub fn batch_record_count(data: &[u8]) -> Result<u32> {
    Ok(read_raw_header(data)?.record_count)
}

/// A checked, decompressed batch whose records can be read.
#[derive(Debug)]
pub struct Batch<'a> {
    pub header: Header,
    body: Cow<'a, [u8]>,
}

/// Check a batch (header, lengths, body CRC) and decompress its body.
pub fn open_batch(data: &[u8]) -> Result<Batch<'_>> {
    let header = read_header(data)?;
    let count = Some(header.record_count);
    let stored = &data[HEADER_LEN..];
    let crc = crc32c::crc32c(stored);
    if crc != header.body_crc {
        return Err(Error::corrupt(
            HEADER_LEN,
            format!(
                "body CRC32C mismatch (stored {:#010x}, computed {crc:#010x})",
                header.body_crc
            ),
            count,
        ));
    }
    let raw_len = header.raw_len as usize;
    let body: Cow<'_, [u8]> = match header.compression {
        Compression::None => Cow::Borrowed(stored),
        Compression::Lz4 => {
            let mut out = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(stored, &mut out) {
                Ok(n) if n == raw_len => Cow::Owned(out),
                Ok(n) => {
                    return Err(Error::corrupt(
                        HEADER_LEN,
                        format!("lz4 body decompressed to {n} bytes, the header says {raw_len}"),
                        count,
                    ))
                }
                Err(e) => {
                    return Err(Error::corrupt(
                        HEADER_LEN,
                        format!("lz4 body does not decompress: {e}"),
                        count,
                    ))
                }
            }
        }
        Compression::Zstd(_) => {
            let mut out = Vec::with_capacity(raw_len.min(stored.len().saturating_mul(16)));
            let res = zstd::stream::read::Decoder::with_buffer(stored).and_then(|mut d| {
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                d.take(raw_len as u64 + 1).read_to_end(&mut out)
            });
            match res {
                Ok(_) if out.len() == raw_len => Cow::Owned(out),
                Ok(_) => {
                    return Err(Error::corrupt(
                        HEADER_LEN,
                        format!(
                            "zstd body decompressed to {}{} bytes, the header says {raw_len}",
                            out.len(),
                            if out.len() > raw_len { "+" } else { "" }
                        ),
                        count,
                    ))
                }
                Err(e) => {
                    return Err(Error::corrupt(
                        HEADER_LEN,
                        format!("zstd body does not decompress: {e}"),
                        count,
                    ))
                }
            }
        }
    };
    Ok(Batch { header, body })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Added to `pos` in error offsets (the header length for an uncompressed body).
    base: usize,
    compressed: bool,
    count: Option<u32>,
}

impl<'a> Reader<'a> {
    fn err(&self, at: usize, what: String) -> Error {
        let where_ = if self.compressed {
            " (offset into the decompressed body)"
        } else {
            ""
        };
        Error::corrupt(self.base + at, format!("{what}{where_}"), self.count)
    }

    #[inline]
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(
                self.pos,
                format!(
                    "{what} needs {n} bytes, only {} are left",
                    self.buf.len() - self.pos
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    #[inline]
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    #[inline]
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    #[inline]
    fn str(&mut self, n: usize, what: &str) -> Result<&'a str> {
        let at = self.pos;
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map_err(|e| self.err(at + e.valid_up_to(), format!("{what} is not valid UTF-8")))
    }
}

impl<'a> Batch<'a> {
    /// The boot id the monotonic receive times refer to.
    pub fn boot_id(&self) -> &[u8; 16] {
        &self.header.boot_id
    }

    /// Number of records (from the header).
    pub fn len(&self) -> usize {
        self.header.record_count as usize
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }

    /// Decode every record; they borrow from the batch.
    pub fn records(&self) -> Result<Vec<Record<'_>>> {
        let compressed = !matches!(self.body, Cow::Borrowed(_));
        let mut r = Reader {
            buf: &self.body,
            pos: 0,
            base: if compressed { 0 } else { HEADER_LEN },
            compressed,
            count: Some(self.header.record_count),
        };
        // record_count * MIN_RECORD_LEN <= raw_len was checked: this is bounded by the input.
        let mut out = Vec::with_capacity(self.header.record_count as usize);
        for i in 0..self.header.record_count {
            let _ = i;
            let seq = r.u64("seq")?;
            let recv_wall_ms = r.u64("recv_wall_ms")? as i64;
            let recv_mono_ns = r.u64("recv_mono_ns")?;
            let flags_at = r.pos;
            let flags = r.take(1, "flags")?[0];
            if flags & REC_RESERVED != 0 {
                return Err(r.err(
                    flags_at,
                    format!("record flags {flags:#04x} has reserved bits set"),
                ));
            }
            let qos = (flags & REC_QOS_MASK) >> REC_QOS_SHIFT;
            if qos > 2 {
                return Err(r.err(flags_at, "record QoS 3".to_owned()));
            }
            let route = r.u16("route")?;
            let n = r.u16("kafka_topic length")? as usize;
            let kafka_topic = r.str(n, "kafka_topic")?;
            let kafka_key = if flags & REC_HAS_KEY != 0 {
                let n = r.u32("kafka_key length")? as usize;
                Some(r.take(n, "kafka_key")?)
            } else {
                None
            };
            let n = r.u16("mqtt_topic length")? as usize;
            let mqtt_topic = r.str(n, "mqtt_topic")?;
            let n = r.u32("payload length")? as usize;
            let payload = r.take(n, "payload")?;
            let np = r.u16("user property count")? as usize;
            // each property takes at least 4 bytes: bound the allocation by what is left
            let mut user_properties = Vec::with_capacity(np.min((r.buf.len() - r.pos) / 4));
            for _ in 0..np {
                let n = r.u16("user property name length")? as usize;
                let name = r.str(n, "user property name")?;
                let n = r.u16("user property value length")? as usize;
                let value = r.str(n, "user property value")?;
                user_properties.push((name, value));
            }
            out.push(Record {
                seq,
                recv_wall_ms,
                recv_mono_ns,
                clock_synced: flags & REC_CLOCK_SYNCED != 0,
                qos,
                retain: flags & REC_RETAIN != 0,
                route,
                kafka_topic,
                kafka_key,
                mqtt_topic,
                payload,
                user_properties,
            });
        }
        if r.pos != r.buf.len() {
            return Err(r.err(
                r.pos,
                format!(
                    "{} bytes after the last of {} records",
                    r.buf.len() - r.pos,
                    self.header.record_count
                ),
            ));
        }
        Ok(out)
    }
}

/// Decode a batch into its boot id and owned copies of its records (convenience for tests).
pub fn decode_batch_owned(data: &[u8]) -> Result<([u8; 16], Vec<OwnedRecord>)> {
    let b = open_batch(data)?;
    let recs = b.records()?.iter().map(OwnedRecord::from).collect();
    Ok((b.header.boot_id, recs))
}

/// An owned [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub seq: u64,
    pub recv_wall_ms: i64,
    pub recv_mono_ns: u64,
    pub clock_synced: bool,
    pub qos: u8,
    pub retain: bool,
    pub route: u16,
    pub kafka_topic: String,
    pub kafka_key: Option<Vec<u8>>,
    pub mqtt_topic: String,
    pub payload: Vec<u8>,
    pub user_properties: Vec<(String, String)>,
}

impl From<&Record<'_>> for OwnedRecord {
    fn from(r: &Record<'_>) -> Self {
        OwnedRecord {
            seq: r.seq,
            recv_wall_ms: r.recv_wall_ms,
            recv_mono_ns: r.recv_mono_ns,
            clock_synced: r.clock_synced,
            qos: r.qos,
            retain: r.retain,
            route: r.route,
            kafka_topic: r.kafka_topic.to_owned(),
            kafka_key: r.kafka_key.map(<[u8]>::to_vec),
            mqtt_topic: r.mqtt_topic.to_owned(),
            payload: r.payload.to_vec(),
            user_properties: r
                .user_properties
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }
}

impl OwnedRecord {
    /// Borrow as a [`Record`] (to encode).
    pub fn as_record(&self) -> Record<'_> {
        Record {
            seq: self.seq,
            recv_wall_ms: self.recv_wall_ms,
            recv_mono_ns: self.recv_mono_ns,
            clock_synced: self.clock_synced,
            qos: self.qos,
            retain: self.retain,
            route: self.route,
            kafka_topic: &self.kafka_topic,
            kafka_key: self.kafka_key.as_deref(),
            mqtt_topic: &self.mqtt_topic,
            payload: &self.payload,
            user_properties: self
                .user_properties
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, payload: &[u8]) -> OwnedRecord {
        OwnedRecord {
            seq,
            recv_wall_ms: 1_700_000_000_000,
            recv_mono_ns: 42,
            clock_synced: seq % 2 == 0,
            qos: (seq % 3) as u8,
            retain: seq % 5 == 0,
            route: 3,
            kafka_topic: "telemetry".into(),
            kafka_key: if seq % 2 == 0 {
                Some(b"v1".to_vec())
            } else {
                None
            },
            mqtt_topic: "vehicles/v1/telemetry".into(),
            payload: payload.to_vec(),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        }
    }

    fn encode(recs: &[OwnedRecord], c: Compression) -> Vec<u8> {
        let rs: Vec<Record<'_>> = recs.iter().map(OwnedRecord::as_record).collect();
        encode_batch(&rs, &[7; 16], c).unwrap()
    }

    #[test]
    fn round_trip_all_compressions() {
        let recs: Vec<_> = (0..50).map(|i| rec(i, &[b'x'; 300])).collect();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
            let b = encode(&recs, c);
            let (boot, got) = decode_batch_owned(&b).unwrap();
            assert_eq!(boot, [7; 16]);
            assert_eq!(got, recs);
            assert_eq!(batch_record_count(&b).unwrap(), 50);
            if c != Compression::None {
                assert!(b.len() < HEADER_LEN + 50 * 300, "{c:?} did not compress");
                assert_eq!(b[OFF_FLAGS], c.code());
            }
        }
        let empty = encode(&[], Compression::None);
        assert_eq!(empty.len(), HEADER_LEN);
        assert!(decode_batch_owned(&empty).unwrap().1.is_empty());
    }

    #[test]
    fn damage_is_reported_with_offset_and_count() {
        let recs: Vec<_> = (0..3).map(|i| rec(i, b"hello")).collect();
        let good = encode(&recs, Compression::None);
        // body damage: count still known
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        match decode_batch_owned(&b) {
            Err(Error::CorruptBatch {
                offset: HEADER_LEN,
                record_count: Some(3),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(batch_record_count(&b).unwrap(), 3);
        // header damage: count unknown
        let mut b = good.clone();
        b[OFF_COUNT] ^= 1;
        assert!(matches!(
            decode_batch_owned(&b),
            Err(Error::CorruptBatch {
                record_count: None,
                ..
            })
        ));
        assert!(batch_record_count(&b).is_err());
        // truncation
        for n in [0, 3, 10, HEADER_LEN, good.len() - 1] {
            assert!(
                matches!(
                    decode_batch_owned(&good[..n]),
                    Err(Error::CorruptBatch { .. })
                ),
                "{n}"
            );
        }
        // every single bit flip is detected
        for i in 0..good.len() * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                decode_batch_owned(&b).is_err(),
                "flip of bit {i} went unnoticed"
            );
        }
    }

    #[test]
    fn newer_version_is_not_damage() {
        let mut b = encode(&[rec(1, b"x")], Compression::None);
        b[OFF_VERSION] = 2;
        let crc = crc32c::crc32c(&b[..OFF_HEADER_CRC]);
        b[OFF_HEADER_CRC..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_batch_owned(&b),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        assert_eq!(batch_record_count(&b).unwrap(), 1);
    }

    #[test]
    fn encode_refuses_bad_input() {
        let mut r = rec(1, b"x");
        r.qos = 3;
        assert!(encode_batch(&[r.as_record()], &[0; 16], Compression::None).is_err());
        assert!(Compression::from_name("gzip").is_err());
        assert_eq!(
            Compression::from_name("zstd:19").unwrap(),
            Compression::Zstd(19)
        );
    }
}
