//! Replayed scores as an Apache Parquet file: one row a score, the columns
//! of the `RiskScore` record (reasons and features as lists of structs).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    StructBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use distill_watch::replay::{Output, ReplayError};
use distill_watch::score::RiskScore;

/// Rows per batch handed to the writer. Fixed, so that the same rows
/// always meet the writer in the same batches and pages: the same file
/// bytes on every replay of a range.
const ROWS: usize = 8192;

pub struct ParquetOutput {
    writer: Option<ArrowWriter<File>>,
    schema: SchemaRef,
    pending: Vec<RiskScore>,
    name: String,
}

fn reason_fields() -> Fields {
    Fields::from(vec![
        Field::new("feature", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("contribution", DataType::Float64, false),
    ])
}

fn feature_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ])
}

pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("account_id", DataType::Utf8, false),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("score", DataType::Float64, false),
        Field::new("level", DataType::Utf8, false),
        Field::new(
            "reasons",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(reason_fields()),
                true,
            ))),
            false,
        ),
        Field::new(
            "features",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(feature_fields()),
                true,
            ))),
            false,
        ),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("event_count", DataType::Int64, false),
        Field::new("response_count", DataType::Int64, false),
        Field::new("revision", DataType::Int32, false),
        Field::new("cluster_id", DataType::Utf8, true),
    ]))
}

/// The scores as one batch of [`schema`].
pub fn batch(scores: &[RiskScore]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = scores.len();
    let mut account = StringBuilder::with_capacity(n, n * 16);
    let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut score = Float64Builder::with_capacity(n);
    let mut level = StringBuilder::with_capacity(n, n * 8);
    let reason_item = Field::new("item", DataType::Struct(reason_fields()), true);
    let mut reasons = ListBuilder::new(StructBuilder::from_fields(reason_fields(), n))
        .with_field(Arc::new(reason_item));
    let feature_item = Field::new("item", DataType::Struct(feature_fields()), true);
    let mut features = ListBuilder::new(StructBuilder::from_fields(feature_fields(), n))
        .with_field(Arc::new(feature_item));
    let mut model = StringBuilder::with_capacity(n, n * 24);
    let mut events = Int64Builder::with_capacity(n);
    let mut responses = Int64Builder::with_capacity(n);
    let mut revision = Int32Builder::with_capacity(n);
    let mut cluster = StringBuilder::with_capacity(n, 0);
    for s in scores {
        account.append_value(&s.account_id);
        start.append_value(s.window_start);
        end.append_value(s.window_end);
        score.append_value(s.score);
        level.append_value(s.level.as_str());
        let r = reasons.values();
        for reason in &s.reasons {
            r.field_builder::<StringBuilder>(0)
                .expect("feature")
                .append_value(&reason.feature);
            r.field_builder::<Float64Builder>(1)
                .expect("value")
                .append_value(reason.value);
            r.field_builder::<Float64Builder>(2)
                .expect("contribution")
                .append_value(reason.contribution);
            r.append(true);
        }
        reasons.append(true);
        let f = features.values();
        for (name, value) in &s.features {
            f.field_builder::<StringBuilder>(0)
                .expect("name")
                .append_value(name);
            f.field_builder::<Float64Builder>(1)
                .expect("value")
                .append_option(*value);
            f.append(true);
        }
        features.append(true);
        model.append_value(&s.model_version);
        events.append_value(s.event_count);
        responses.append_value(s.response_count);
        revision.append_value(s.revision);
        cluster.append_option(s.cluster_id.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(account.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(score.finish()),
        Arc::new(level.finish()),
        Arc::new(reasons.finish()),
        Arc::new(features.finish()),
        Arc::new(model.finish()),
        Arc::new(events.finish()),
        Arc::new(responses.finish()),
        Arc::new(revision.finish()),
        Arc::new(cluster.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

impl ParquetOutput {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by("distill-watch replay".to_string())
            .build();
        let schema = schema();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .with_context(|| format!("starting the Parquet file {}", path.display()))?;
        Ok(ParquetOutput {
            writer: Some(writer),
            schema,
            pending: Vec::new(),
            name: path.display().to_string(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ReplayError {
        ReplayError::Output(format!("writing {}: {e}", self.name))
    }

    fn write_rows(&mut self, rows: &[RiskScore]) -> Result<(), ReplayError> {
        let b = batch(rows).map_err(|e| self.err(e))?;
        debug_assert_eq!(b.schema(), self.schema);
        let Some(w) = self.writer.as_mut() else {
            return Err(self.err("the file was already closed"));
        };
        w.write(&b)
            .map_err(|e| ReplayError::Output(format!("writing {}: {e}", self.name)))
    }
}

#[async_trait::async_trait]
impl Output for ParquetOutput {
    async fn write(&mut self, scores: &[RiskScore]) -> Result<(), ReplayError> {
        self.pending.extend_from_slice(scores);
        while self.pending.len() >= ROWS {
            let rest = self.pending.split_off(ROWS);
            let full = std::mem::replace(&mut self.pending, rest);
            self.write_rows(&full)?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ReplayError> {
        if !self.pending.is_empty() {
            let rows = std::mem::take(&mut self.pending);
            self.write_rows(&rows)?;
        }
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
