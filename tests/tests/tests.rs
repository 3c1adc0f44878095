//! Cross-crate integration tests: real brokers on ephemeral ports, real
//! files, the real client. One binary (see STYLE.md, "Tests").

mod bad_input;
mod groups;
mod harness;
mod idempotence;
mod layout;
mod many_partitions;
mod metrics;
mod produce_fetch;
mod protobuf_api;
mod security;
mod share_groups;
mod topic_ids;
