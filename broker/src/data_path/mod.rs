//! The broker's data path: producing batches to partition leaders, reading
//! committed batches (fetch, subscribe) and resolving offsets. Control-path
//! operations (topics, groups) live in `admin` and `groups`.

pub mod fetch;
pub mod fetch_session;
pub mod offsets;
pub mod produce;
