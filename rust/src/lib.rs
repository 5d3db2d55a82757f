//! `edgefwd._core`: the thin pyo3 layer over `edgefwd-core`. Argument conversion, the
//! GIL released around the work (`py.detach`), Python objects built from the results;
//! no logic of its own. The stub `python/edgefwd/_core.pyi` describes this module.

use pyo3::prelude::*;

mod batch;
mod errors;
mod routing;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", edgefwd_core::VERSION)?;
    m.add("BATCH_FORMAT_VERSION", edgefwd_core::FORMAT_VERSION)?;
    m.add("BATCH_HEADER_LEN", edgefwd_core::batch::HEADER_LEN)?;
    m.add("MAX_BATCH_BODY_LEN", edgefwd_core::batch::MAX_BODY_LEN)?;
    errors::register(m)?;
    routing::register(m)?;
    batch::register(m)?;
    Ok(())
}
