//! Topics, the subscription cover and the router.

use edgefwd_core::{cover, router, topic, RouteOutcome, RouteSpec};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::errors::CoreResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(validate_topic_name, m)?)?;
    m.add_function(wrap_pyfunction!(validate_topic_filter, m)?)?;
    m.add_function(wrap_pyfunction!(topic_matches, m)?)?;
    m.add_function(wrap_pyfunction!(disjoint_cover, m)?)?;
    m.add_function(wrap_pyfunction!(filters_overlap, m)?)?;
    m.add_class::<Router>()?;
    Ok(())
}

/// Raise TopicError unless `topic` is a valid MQTT topic name.
#[pyfunction]
fn validate_topic_name(topic: &str) -> CoreResult<()> {
    Ok(topic::validate_topic_name(topic)?)
}

/// Raise TopicError unless `filter` is a valid MQTT topic filter (`$share/<group>/<filter>` included).
#[pyfunction]
#[pyo3(signature = (filter))]
fn validate_topic_filter(filter: &str) -> CoreResult<()> {
    Ok(topic::validate_topic_filter(filter)?)
}

/// Whether `topic` matches `filter`, as MQTT says (both validated).
#[pyfunction]
#[pyo3(signature = (filter, topic))]
fn topic_matches(filter: &str, topic: &str) -> CoreResult<bool> {
    Ok(topic::topic_matches(filter, topic)?)
}

/// The filters to subscribe with so that each message is delivered at most once.
#[pyfunction]
fn disjoint_cover(filters: Vec<PyBackedStr>) -> CoreResult<Vec<String>> {
    let v: Vec<&str> = filters.iter().map(|s| &**s).collect();
    Ok(cover::disjoint_cover(&v)?)
}

/// Whether some topic matches both filters.
#[pyfunction]
fn filters_overlap(a: &str, b: &str) -> CoreResult<bool> {
    Ok(cover::filters_overlap(a, b)?)
}

/// The compiled route table.
#[pyclass(frozen, module = "edgefwd._core")]
pub struct Router {
    inner: router::Router,
}

fn outcome_tuple<'py>(py: Python<'py>, o: &RouteOutcome) -> PyResult<Bound<'py, PyTuple>> {
    match &o.result {
        Ok(d) => PyTuple::new(
            py,
            [
                o.route.into_pyobject(py)?.into_any(),
                PyString::new(py, &d.kafka_topic).into_any(),
                match &d.kafka_key {
                    Some(k) => PyBytes::new(py, k.as_bytes()).into_any(),
                    None => py.None().into_bound(py),
                },
                py.None().into_bound(py),
            ],
        ),
        Err(reason) => PyTuple::new(
            py,
            [
                o.route.into_pyobject(py)?.into_any(),
                py.None().into_bound(py),
                py.None().into_bound(py),
                PyString::new(py, reason).into_any(),
            ],
        ),
    }
}

fn outcomes_list<'py>(py: Python<'py>, v: &[RouteOutcome]) -> PyResult<Bound<'py, PyList>> {
    let items = v
        .iter()
        .map(|o| outcome_tuple(py, o))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

#[pymethods]
impl Router {
    #[new]
    fn new(
        py: Python<'_>,
        routes: Vec<(PyBackedStr, PyBackedStr, Option<PyBackedStr>)>,
        gateway_id: &str,
    ) -> CoreResult<Self> {
        let specs: Vec<RouteSpec> = routes
            .iter()
            .map(|(f, t, k)| RouteSpec::new(f, t, k.as_deref()))
            .collect();
        let gateway_id = gateway_id.to_owned();
        let inner = py.detach(move || router::Router::new(&specs, &gateway_id))?;
        Ok(Router { inner })
    }

    /// Every matching route in route-index order: (route_index, kafka_topic, key, error).
    fn route<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        payload: &[u8],
    ) -> CoreResult<Bound<'py, PyList>> {
        let out = self.inner.route(topic, payload);
        Ok(outcomes_list(py, &out)?)
    }

    /// `route` for a batch of (topic, payload), with the GIL released for the work.
    fn route_many<'py>(
        &self,
        py: Python<'py>,
        messages: Vec<(PyBackedStr, PyBackedBytes)>,
    ) -> CoreResult<Bound<'py, PyList>> {
        let inner = &self.inner;
        let results: Vec<Vec<RouteOutcome>> = py.detach(|| {
            let mut scratch = router::Scratch::new();
            messages
                .iter()
                .map(|(t, p)| {
                    let mut out = Vec::new();
                    inner.route_into(t, p, &mut scratch, &mut out);
                    out
                })
                .collect()
        });
        let lists = results
            .iter()
            .map(|v| outcomes_list(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, lists)?)
    }

    /// Indices of the routes whose filter matches `topic` (no rendering).
    fn matching_routes(&self, topic: &str) -> Vec<u16> {
        let mut s = router::Scratch::new();
        self.inner.match_into(topic, &mut s).to_vec()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("<edgefwd._core.Router with {} routes>", self.inner.len())
    }
}
