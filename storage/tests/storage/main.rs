//! Behaviour tests of the storage engine through its public API.

mod corruption;
mod format;
mod log;
mod model;
mod producers;
mod support;
mod vectors;
