//! The cluster stage: accounts that share a payment instrument, org,
//! client IP prefix, user agent, prompt template, system prompt or sign-up
//! day and channel, scored together.
//!
//! The account stage (the worker loop) publishes, for each account scored
//! in a base window, one member row per cluster key the account has
//! (`keys`) to the features topic, keyed by cluster id, together with a
//! progress mark per partition, in the same transaction as its scores. The
//! cluster stage (`stage`), its own consumer group, aggregates member rows
//! per key and cluster window (`agg`) once every upstream partition's mark
//! has passed the window's end, scores them (`model`) and publishes
//! `ClusterRisk` records and member scores (`wire`).

pub mod agg;
pub mod keys;
pub mod model;
pub mod repeats;
pub mod stage;
pub mod wire;

pub use agg::{ClusterFeatures, ClusterWindows, Limits};
pub use keys::{member_rows, MemberRow};
pub use model::{ClusterModel, ClusterRisk};
pub use wire::{decode_feature, encode_cluster, encode_feature, FeatureRecord};
