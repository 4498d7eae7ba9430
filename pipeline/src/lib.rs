//! distill-watch: streaming detection of LLM distillation attacks.
//!
//! One module per pipeline stage; Arrow `RecordBatch`es flow between them.

pub mod gen;
pub mod local_broker;
pub mod schemas;
pub mod topics;
