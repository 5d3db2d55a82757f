//! The batch codec and the drainer's decode.

use edgefwd_core::batch::{self, Compression, Record};
use edgefwd_core::produce::{self, HeaderName, HeaderValue};
use edgefwd_core::Error;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::errors::CoreResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(batch_record_count, m)?)?;
    m.add_function(wrap_pyfunction!(decode_for_produce, m)?)?;
    Ok(())
}

/// A record tuple as Python passes it (field order is the contract).
#[derive(FromPyObject)]
struct RecordIn(
    u64,
    i64,
    u64,
    bool,
    u8,
    bool,
    u16,
    PyBackedStr,
    Option<PyBackedBytes>,
    PyBackedStr,
    PyBackedBytes,
    Vec<(PyBackedStr, PyBackedStr)>,
);

impl RecordIn {
    fn as_record(&self) -> Record<'_> {
        Record {
            seq: self.0,
            recv_wall_ms: self.1,
            recv_mono_ns: self.2,
            clock_synced: self.3,
            qos: self.4,
            retain: self.5,
            route: self.6,
            kafka_topic: &self.7,
            kafka_key: self.8.as_deref(),
            mqtt_topic: &self.9,
            payload: &self.10,
            user_properties: self.11.iter().map(|(n, v)| (&**n, &**v)).collect(),
        }
    }
}

fn boot_id_array(boot_id: &[u8]) -> CoreResult<[u8; 16]> {
    Ok(boot_id.try_into().map_err(|_| {
        Error::InvalidInput(format!("boot_id must be 16 bytes, got {}", boot_id.len()))
    })?)
}

/// Encode records into one batch.
#[pyfunction]
#[pyo3(signature = (records, boot_id, compression = "none"))]
fn encode_batch<'py>(
    py: Python<'py>,
    records: Vec<RecordIn>,
    boot_id: &[u8],
    compression: &str,
) -> CoreResult<Bound<'py, PyBytes>> {
    let boot_id = boot_id_array(boot_id)?;
    let compression = Compression::from_name(compression)?;
    let encoded = py.detach(|| {
        let recs: Vec<Record<'_>> = records.iter().map(RecordIn::as_record).collect();
        batch::encode_batch(&recs, &boot_id, compression)
    })?;
    Ok(PyBytes::new(py, &encoded))
}

fn record_tuple<'py>(py: Python<'py>, r: &Record<'_>) -> PyResult<Bound<'py, PyTuple>> {
    let props = PyList::new(
        py,
        r.user_properties
            .iter()
            .map(|(n, v)| PyTuple::new(py, [PyString::new(py, n), PyString::new(py, v)]))
            .collect::<PyResult<Vec<_>>>()?,
    )?;
    PyTuple::new(
        py,
        [
            r.seq.into_pyobject(py)?.into_any(),
            r.recv_wall_ms.into_pyobject(py)?.into_any(),
            r.recv_mono_ns.into_pyobject(py)?.into_any(),
            pyo3::types::PyBool::new(py, r.clock_synced)
                .to_owned()
                .into_any(),
            r.qos.into_pyobject(py)?.into_any(),
            pyo3::types::PyBool::new(py, r.retain).to_owned().into_any(),
            r.route.into_pyobject(py)?.into_any(),
            PyString::new(py, r.kafka_topic).into_any(),
            match r.kafka_key {
                Some(k) => PyBytes::new(py, k).into_any(),
                None => py.None().into_bound(py),
            },
            PyString::new(py, r.mqtt_topic).into_any(),
            PyBytes::new(py, r.payload).into_any(),
            props.into_any(),
        ],
    )
}

/// Decode a batch: (boot_id, records).
#[pyfunction]
fn decode_batch<'py>(py: Python<'py>, data: &[u8]) -> CoreResult<Bound<'py, PyTuple>> {
    let b = py.detach(|| batch::open_batch(data))?;
    let recs = py.detach(|| b.records())?;
    let list = PyList::new(
        py,
        recs.iter()
            .map(|r| record_tuple(py, r))
            .collect::<PyResult<Vec<_>>>()?,
    )?;
    Ok(PyTuple::new(
        py,
        [PyBytes::new(py, b.boot_id()).into_any(), list.into_any()],
    )?)
}

/// The record count from the batch header (the body is not read).
#[pyfunction]
fn batch_record_count(data: &[u8]) -> CoreResult<u32> {
    Ok(batch::batch_record_count(data)?)
}

/// Decode a batch into what `Producer.produce` takes, per record:
/// (kafka_topic, payload, kafka_key, recv_wall_ms, headers).
///
/// Python objects are the cost here, not decoding: every object that repeats within the
/// batch (Kafka topics, keys, and whole header tuples such as `("mqtt.qos", b"1")`,
/// `("edgefwd.gateway", ...)` or a topic seen before) is made once per batch and shared,
/// which is safe because str, bytes and tuples are immutable.
#[pyfunction]
fn decode_for_produce<'py>(
    py: Python<'py>,
    data: &[u8],
    gateway_id: &str,
    epoch: &str,
) -> CoreResult<Bound<'py, PyList>> {
    let b = py.detach(|| batch::open_batch(data))?;
    let recs = py.detach(|| b.records())?;

    let mut header_cache: FxHashMap<(HeaderName<'_>, &[u8]), Bound<'py, PyTuple>> =
        FxHashMap::default();
    let mut topic_cache: FxHashMap<&str, Bound<'py, PyString>> = FxHashMap::default();
    let mut key_cache: FxHashMap<&[u8], Bound<'py, PyBytes>> = FxHashMap::default();
    let seq_name = pyo3::intern!(py, "edgefwd.seq");
    let none = py.None().into_bound(py);

    let mut out = Vec::with_capacity(recs.len());
    for r in &recs {
        let mut headers: Vec<Bound<'py, PyTuple>> = Vec::with_capacity(7 + r.user_properties.len());
        let mut err: Option<PyErr> = None;
        produce::for_each_header(r, gateway_id, epoch, |name, value| {
            let made = match value {
                HeaderValue::Seq(s) => {
                    let mut buf = [0u8; 20];
                    PyTuple::new(
                        py,
                        [
                            seq_name.clone().into_any(),
                            PyBytes::new(py, fmt_u64(s, &mut buf)).into_any(),
                        ],
                    )
                }
                HeaderValue::Fixed(v) | HeaderValue::Borrowed(v) => {
                    match header_cache.get(&(name, v)) {
                        Some(t) => Ok(t.clone()),
                        None => header_tuple(py, name, v).inspect(|t| {
                            header_cache.insert((name, v), t.clone());
                        }),
                    }
                }
            };
            match made {
                Ok(t) => headers.push(t),
                Err(e) => err = Some(e),
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        let topic = topic_cache
            .entry(r.kafka_topic)
            .or_insert_with(|| PyString::new(py, r.kafka_topic))
            .clone();
        let key = match r.kafka_key {
            Some(k) => key_cache
                .entry(k)
                .or_insert_with(|| PyBytes::new(py, k))
                .clone()
                .into_any(),
            None => none.clone(),
        };
        out.push(PyTuple::new(
            py,
            [
                topic.into_any(),
                PyBytes::new(py, r.payload).into_any(),
                key,
                r.recv_wall_ms.into_pyobject(py)?.into_any(),
                PyList::new(py, headers)?.into_any(),
            ],
        )?);
    }
    Ok(PyList::new(py, out)?)
}

fn header_tuple<'py>(
    py: Python<'py>,
    name: HeaderName<'_>,
    value: &[u8],
) -> PyResult<Bound<'py, PyTuple>> {
    let n = match name {
        HeaderName::Fixed(s) => PyString::new(py, s),
        HeaderName::User(u) => {
            let mut s = String::with_capacity(produce::H_USER_PREFIX.len() + u.len());
            s.push_str(produce::H_USER_PREFIX);
            s.push_str(u);
            PyString::new(py, &s)
        }
    };
    PyTuple::new(py, [n.into_any(), PyBytes::new(py, value).into_any()])
}

/// Decimal digits of `v` in `buf`.
fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
