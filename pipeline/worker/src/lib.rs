//! distill-watch: streaming detection of LLM distillation attacks.
//!
//! One module per pipeline stage; Arrow `RecordBatch`es flow between them:
//! `source` (Kafka) → `decode` (Avro → Arrow) → `window` (event time) →
//! `join` (request ⋈ response) → `enrich` (accounts) → `jobs` (SQL features)
//! → `score` (risk + reasons) → `sink` (Avro → Kafka). `process` chains the
//! per-window stages; `worker` drives the loop.

pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod decode;
pub mod enrich;
pub mod functions;
pub mod golden;
pub mod io;
pub mod jobs;
pub mod join;
pub mod metrics;
pub mod partition;
pub mod plan;
pub mod process;
pub mod redact;
pub mod reload;
pub mod replay;
pub mod rollup;
pub mod schemas;
pub mod score;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod topics;
pub mod window;
pub mod worker;
