//! Avro (Confluent framing) → Arrow `RecordBatch`, one batch per poll.
//!
//! Every message either becomes one row or one [`Reject`] with a reason; the
//! caller routes rejects to the DLQ. Rows keep where they came from in three
//! trailing columns (`_partition`, `_offset`, `_msg`), so later stages can
//! track offsets and find the original bytes without per-event structs.

pub mod validate;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use bytes::Bytes;

use crate::schemas::{unframe, ContractSchema, SchemaSet};
use validate::{check_datum, Shape};

/// Column with the Kafka partition a row came from.
pub const PARTITION_COL: &str = "_partition";
/// Column with the Kafka offset a row came from.
pub const OFFSET_COL: &str = "_offset";
/// Column with the row's index in the slice of messages given to `decode`.
pub const MSG_COL: &str = "_msg";

/// One Kafka record, owned, independent of the Kafka client. Key and
/// value are shared buffers: copied once out of the client, never again on
/// the way through (windows, DLQ, the in-memory broker's redeliveries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp (CreateTime or LogAppendTime), if any.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
}

/// Why a message did not become a row. The string form is the DLQ header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    MissingKey,
    MissingValue,
    BadFraming,
    UnknownSchemaId,
    WrongSchema,
    MalformedAvro,
    KeyMismatch,
    InvalidValue,
    FutureEventTime,
    LateEvent,
}

impl RejectKind {
    pub const ALL: [RejectKind; 10] = [
        RejectKind::MissingKey,
        RejectKind::MissingValue,
        RejectKind::BadFraming,
        RejectKind::UnknownSchemaId,
        RejectKind::WrongSchema,
        RejectKind::MalformedAvro,
        RejectKind::KeyMismatch,
        RejectKind::InvalidValue,
        RejectKind::FutureEventTime,
        RejectKind::LateEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::MissingKey => "missing_key",
            RejectKind::MissingValue => "missing_value",
            RejectKind::BadFraming => "bad_framing",
            RejectKind::UnknownSchemaId => "unknown_schema_id",
            RejectKind::WrongSchema => "wrong_schema",
            RejectKind::MalformedAvro => "malformed_avro",
            RejectKind::KeyMismatch => "key_mismatch",
            RejectKind::InvalidValue => "invalid_value",
            RejectKind::FutureEventTime => "future_event_time",
            RejectKind::LateEvent => "late_event",
        }
    }
}

/// A message that will not be processed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Index into the slice given to [`RecordDecoder::decode`].
    pub msg_index: usize,
    pub kind: RejectKind,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot build the Avro decoder for {schema}: {message}")]
    Setup {
        schema: &'static str,
        message: String,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// The decoded rows of one poll, plus the messages that were rejected.
#[derive(Debug)]
pub struct Decoded {
    /// Decoded columns followed by `_partition`, `_offset`, `_msg`.
    pub batch: RecordBatch,
    pub rejects: Vec<Reject>,
}

/// Decodes the messages of one topic, whose values must carry `schema`.
pub struct RecordDecoder {
    schema: &'static ContractSchema,
    /// Per wire id (the current one first, then other versions): what a
    /// valid datum written with it looks like.
    shapes: Vec<(u32, Shape)>,
    decoder: Decoder,
    max_rows: usize,
    output_schema: SchemaRef,
    checks: RowChecks,
    /// Event times more than this after the Kafka timestamp are rejected.
    max_future_skew_ms: i64,
}

impl std::fmt::Debug for RecordDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordDecoder")
            .field("schema", &self.schema.name)
            .finish_non_exhaustive()
    }
}

impl RecordDecoder {
    pub fn new(
        schema: &'static ContractSchema,
        max_rows: usize,
        max_future_skew_ms: i64,
    ) -> Result<Self, DecodeError> {
        let shape = |avro| {
            Shape::compile(avro).map_err(|message| DecodeError::Setup {
                schema: schema.name,
                message,
            })
        };
        let mut shapes = vec![(schema.id, shape(&schema.avro)?)];
        for v in &schema.versions {
            shapes.push((v.id, shape(&v.avro)?));
        }
        let max_rows = max_rows.max(1);
        let decoder = build_decoder(schema, max_rows)?;
        // Without arrow-avro's field metadata: with writer versions it
        // describes how the first version it resolved differs (a default it
        // applies), which depends on the order of its schema store, and
        // every batch must have the same columns whatever wrote it.
        let mut fields: Vec<Field> = decoder
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect();
        let checks = RowChecks::for_schema(&decoder.schema());
        fields.push(Field::new(PARTITION_COL, DataType::Int32, false));
        fields.push(Field::new(OFFSET_COL, DataType::Int64, false));
        fields.push(Field::new(MSG_COL, DataType::UInt32, false));
        Ok(Self {
            schema,
            shapes,
            decoder,
            max_rows,
            output_schema: Arc::new(Schema::new(fields)),
            checks,
            max_future_skew_ms,
        })
    }

    /// Arrow schema of [`Decoded::batch`].
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    pub fn contract(&self) -> &'static ContractSchema {
        self.schema
    }

    /// Decode `msgs`. Never fails because of message content: bad messages
    /// come back as rejects. An `Err` means the decoder itself is broken.
    pub fn decode(&mut self, msgs: &[RawMessage]) -> Result<Decoded, DecodeError> {
        let mut rejects = Vec::new();
        let mut accepted: Vec<usize> = Vec::with_capacity(msgs.len());
        let set = SchemaSet::builtin();
        for (i, m) in msgs.iter().enumerate() {
            let reject = |kind, detail: String| Reject {
                msg_index: i,
                kind,
                detail,
            };
            if m.key.as_deref().is_none_or(<[u8]>::is_empty) {
                rejects.push(reject(RejectKind::MissingKey, "record has no key".into()));
                continue;
            };
            let Some(payload) = m.payload.as_deref() else {
                rejects.push(reject(
                    RejectKind::MissingValue,
                    "record has no value (tombstone)".into(),
                ));
                continue;
            };
            let Some((id, body)) = unframe(payload) else {
                rejects.push(reject(
                    RejectKind::BadFraming,
                    format!(
                        "value does not start with the Confluent header (magic byte 0 + 4-byte schema id); {} bytes, first byte {:#04x}",
                        payload.len(),
                        payload.first().copied().unwrap_or(0)
                    ),
                ));
                continue;
            };
            let Some((_, shape)) = self.shapes.iter().find(|(v, _)| *v == id) else {
                let (kind, detail) = match set.by_id(id) {
                    Some(other) => (
                        RejectKind::WrongSchema,
                        format!(
                            "schema id {id} is {}, this topic carries {} (id {})",
                            other.name, self.schema.name, self.schema.id
                        ),
                    ),
                    None => (
                        RejectKind::UnknownSchemaId,
                        format!(
                            "unknown schema id {id}; this topic carries {} (id {})",
                            self.schema.name, self.schema.id
                        ),
                    ),
                };
                rejects.push(reject(kind, detail));
                continue;
            };
            if let Err(e) = check_datum(shape, body) {
                rejects.push(reject(
                    RejectKind::MalformedAvro,
                    format!("not a valid {} datum: {e}", self.schema.name),
                ));
                continue;
            }
            accepted.push(i);
        }

        let decoded = self.decode_accepted(msgs, &accepted, &mut rejects)?;
        let (batch, row_msgs) = decoded;
        let mut out = self.append_origin(batch, &row_msgs, msgs)?;
        out = self.apply_row_checks(out, msgs, &mut rejects)?;
        rejects.sort_by_key(|r| r.msg_index);
        Ok(Decoded {
            batch: out,
            rejects,
        })
    }

    /// Feed validated messages to arrow-avro. If it still fails (a decoder
    /// bug or a check gap), fall back to one message per batch to isolate the
    /// culprit instead of losing the whole poll.
    fn decode_accepted(
        &mut self,
        msgs: &[RawMessage],
        accepted: &[usize],
        rejects: &mut Vec<Reject>,
    ) -> Result<(RecordBatch, Vec<usize>), DecodeError> {
        let empty = || RecordBatch::new_empty(self.decoder.schema());
        if accepted.is_empty() {
            return Ok((empty(), Vec::new()));
        }
        match self.decode_all(msgs, accepted) {
            Ok(batch) => Ok((batch, accepted.to_vec())),
            Err(first_error) => {
                tracing::warn!(schema = self.schema.name, error = %first_error, "arrow-avro failed on a validated batch; isolating messages one by one");
                let mut batches = Vec::new();
                let mut rows = Vec::new();
                for &i in accepted {
                    self.decoder = build_decoder(self.schema, self.max_rows)?;
                    match self.decode_all(msgs, &[i]) {
                        Ok(b) => {
                            batches.push(b);
                            rows.push(i);
                        }
                        Err(e) => rejects.push(Reject {
                            msg_index: i,
                            kind: RejectKind::MalformedAvro,
                            detail: format!(
                                "arrow-avro could not decode the {}: {e}",
                                self.schema.name
                            ),
                        }),
                    }
                }
                self.decoder = build_decoder(self.schema, self.max_rows)?;
                let batch = concat_batches(&self.decoder.schema(), &batches)?;
                Ok((batch, rows))
            }
        }
    }

    fn decode_all(&mut self, msgs: &[RawMessage], which: &[usize]) -> Result<RecordBatch, String> {
        let mut batches = Vec::new();
        for &i in which {
            let payload = msgs[i].payload.as_deref().unwrap_or_default();
            let mut rest = payload;
            while !rest.is_empty() {
                // Full, or switching to another writer version (which ends
                // the batch after the new prefix): flush and go on.
                if self.decoder.batch_is_full() {
                    if let Some(b) = self.decoder.flush().map_err(|e| e.to_string())? {
                        batches.push(b);
                    }
                }
                let used = self.decoder.decode(rest).map_err(|e| e.to_string())?;
                if used == 0 && !self.decoder.batch_is_full() {
                    return Err(format!(
                        "decoder consumed {} of {} bytes",
                        payload.len() - rest.len(),
                        payload.len()
                    ));
                }
                rest = &rest[used..];
            }
        }
        if let Some(b) = self.decoder.flush().map_err(|e| e.to_string())? {
            batches.push(b);
        }
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows != which.len() {
            return Err(format!("decoded {rows} rows from {} messages", which.len()));
        }
        concat_batches(&self.decoder.schema(), &batches).map_err(|e| e.to_string())
    }

    fn append_origin(
        &self,
        batch: RecordBatch,
        row_msgs: &[usize],
        msgs: &[RawMessage],
    ) -> Result<RecordBatch, DecodeError> {
        let partitions: Int32Array = row_msgs.iter().map(|&i| Some(msgs[i].partition)).collect();
        let offsets: Int64Array = row_msgs.iter().map(|&i| Some(msgs[i].offset)).collect();
        let idx: UInt32Array = row_msgs.iter().map(|&i| Some(i as u32)).collect();
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(partitions));
        cols.push(Arc::new(offsets));
        cols.push(Arc::new(idx));
        Ok(RecordBatch::try_new(self.output_schema.clone(), cols)?)
    }

    /// Semantic checks a schema cannot express: key = account_id, no
    /// negative counts, event time not in the future of its Kafka timestamp.
    fn apply_row_checks(
        &self,
        batch: RecordBatch,
        msgs: &[RawMessage],
        rejects: &mut Vec<Reject>,
    ) -> Result<RecordBatch, DecodeError> {
        if batch.num_rows() == 0 {
            return Ok(batch);
        }
        let msg_idx = batch
            .column_by_name(MSG_COL)
            .expect("appended above")
            .as_primitive::<arrow::datatypes::UInt32Type>();
        let mut keep = vec![true; batch.num_rows()];
        if let Some(ids) = self
            .checks
            .account_id
            .map(|c| batch.column(c).as_string::<i32>())
        {
            for (row, k) in keep.iter_mut().enumerate() {
                let m = &msgs[msg_idx.value(row) as usize];
                let key = m.key.as_deref().unwrap_or_default();
                if ids.is_null(row) || ids.value(row).as_bytes() != key || ids.value(row).is_empty()
                {
                    *k = false;
                    rejects.push(Reject {
                        msg_index: msg_idx.value(row) as usize,
                        kind: RejectKind::KeyMismatch,
                        detail: format!(
                            "record key {:?} differs from account_id {:?}; events must be keyed by account so requests and responses are co-partitioned",
                            String::from_utf8_lossy(key),
                            if ids.is_null(row) { "" } else { ids.value(row) }
                        ),
                    });
                }
            }
        }
        for &(col, name) in &self.checks.non_negative {
            let arr = batch.column(col);
            for (row, k) in keep.iter_mut().enumerate() {
                if !*k || arr.is_null(row) {
                    continue;
                }
                let negative = match arr.data_type() {
                    DataType::Int32 => arr.as_primitive::<Int32Type>().value(row) < 0,
                    DataType::Int64 => arr.as_primitive::<Int64Type>().value(row) < 0,
                    _ => false,
                };
                if negative {
                    *k = false;
                    rejects.push(Reject {
                        msg_index: msg_idx.value(row) as usize,
                        kind: RejectKind::InvalidValue,
                        detail: format!("{name} is negative"),
                    });
                }
            }
        }
        if let Some(col) = self.checks.event_time {
            let times = batch
                .column(col)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            for (row, k) in keep.iter_mut().enumerate() {
                if !*k {
                    continue;
                }
                let m = &msgs[msg_idx.value(row) as usize];
                let et = times.value(row);
                if !EVENT_TIME_RANGE.contains(&et) {
                    // Also keeps window arithmetic far from i64 overflow when
                    // a record carries no Kafka timestamp to compare with.
                    *k = false;
                    rejects.push(Reject {
                        msg_index: msg_idx.value(row) as usize,
                        kind: RejectKind::InvalidValue,
                        detail: format!("event_time {et} is outside 1970..2200"),
                    });
                    continue;
                }
                if let Some(ts) = m.timestamp_ms.filter(|t| *t >= 0) {
                    if et > ts.saturating_add(self.max_future_skew_ms) {
                        *k = false;
                        rejects.push(Reject {
                            msg_index: msg_idx.value(row) as usize,
                            kind: RejectKind::FutureEventTime,
                            detail: format!(
                                "event_time {et} is {} ms after the record's Kafka timestamp {ts} (limit {} ms)",
                                et - ts,
                                self.max_future_skew_ms
                            ),
                        });
                    }
                }
            }
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?)
    }
}

/// Event times a real gateway can produce: 1970-01-01 up to 2200-01-01.
const EVENT_TIME_RANGE: std::ops::Range<i64> = 0..7_258_118_400_000;

/// Column positions the row checks look at, found by name once.
#[derive(Debug, Clone, Default)]
struct RowChecks {
    account_id: Option<usize>,
    event_time: Option<usize>,
    non_negative: Vec<(usize, &'static str)>,
}

/// Counts and durations: a negative value is an upstream bug, not a signal.
const NON_NEGATIVE: [&str; 9] = [
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "latency_ms",
    "n",
    "top_logprobs",
    "logit_bias_size",
    "tool_count",
];

impl RowChecks {
    fn for_schema(schema: &Schema) -> Self {
        let mut c = RowChecks {
            account_id: schema.index_of("account_id").ok(),
            ..Default::default()
        };
        if let Ok(i) = schema.index_of("event_time") {
            if matches!(
                schema.field(i).data_type(),
                DataType::Timestamp(TimeUnit::Millisecond, _)
            ) {
                c.event_time = Some(i);
            }
        }
        for name in NON_NEGATIVE {
            if let Ok(i) = schema.index_of(name) {
                c.non_negative.push((i, name));
            }
        }
        c
    }
}

fn build_decoder(schema: &ContractSchema, max_rows: usize) -> Result<Decoder, DecodeError> {
    let setup = |message: String| DecodeError::Setup {
        schema: schema.name,
        message,
    };
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(
            Fingerprint::Id(schema.id),
            AvroSchema::new(schema.json.to_string()),
        )
        .map_err(|e| setup(e.to_string()))?;
    for v in &schema.versions {
        store
            .set(Fingerprint::Id(v.id), AvroSchema::new(v.json.clone()))
            .map_err(|e| setup(format!("version {}: {e}", v.id)))?;
    }
    let mut builder = ReaderBuilder::new()
        .with_batch_size(max_rows)
        .with_writer_schema_store(store);
    if !schema.versions.is_empty() {
        // Every version is read as the current one: the same columns
        // whichever version a producer wrote.
        builder = builder.with_reader_schema(AvroSchema::new(schema.json.to_string()));
    }
    builder.build_decoder().map_err(|e| setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::{encode_framed, frame};
    use apache_avro::types::Value;

    fn request(id: &str, account: &str, t: i64, prompt_tokens: i32) -> Vec<u8> {
        let s = &SchemaSet::builtin().request;
        let v = crate::schemas::record_with_defaults(
            &s.avro,
            vec![
                ("request_id", Value::String(id.into())),
                ("account_id", Value::String(account.into())),
                ("event_time", Value::TimestampMillis(t)),
                ("prompt_tokens", Value::Int(prompt_tokens)),
            ],
        );
        encode_framed(s, v).unwrap()
    }

    /// A directory like `schemas/` whose `ids.toml` lists `versions` of
    /// ApiRequest: (id, JSON).
    fn schemas_dir(versions: &[(u32, &serde_json::Value)]) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dw-schemas-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ids = include_str!("../../../../schemas/ids.toml").to_string();
        ids.push_str("\n[versions.ApiRequest]\n");
        for (id, json) in versions {
            let file = format!("ApiRequest.{id}.avsc");
            std::fs::write(dir.join(&file), json.to_string()).unwrap();
            ids.push_str(&format!("{id} = \"{file}\"\n"));
        }
        std::fs::write(dir.join("ids.toml"), ids).unwrap();
        dir
    }

    /// The current ApiRequest schema as JSON, changed by `f`.
    fn request_version(f: impl FnOnce(&mut Vec<serde_json::Value>)) -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(SchemaSet::builtin().request.json).unwrap();
        f(v["fields"].as_array_mut().unwrap());
        v
    }

    #[test]
    fn older_and_newer_writer_versions_decode_as_the_current_schema() {
        let newer = request_version(|fields| {
            fields.push(serde_json::json!({"name": "client_region", "type": ["null", "string"], "default": null, "doc": "new"}))
        });
        let older = request_version(|fields| fields.retain(|f| f["name"] != "prompt_language"));
        let dir = schemas_dir(&[(1101, &newer), (1100, &older)]);
        let set: &'static SchemaSet = Box::leak(Box::new(SchemaSet::with_versions(&dir).unwrap()));
        let schema = &set.request;
        let parsed: Vec<(u32, apache_avro::Schema)> = vec![
            (schema.id, schema.avro.clone()),
            (1101, apache_avro::Schema::parse(&newer).unwrap()),
            (1100, apache_avro::Schema::parse(&older).unwrap()),
        ];
        // Versions interleaved, and batches of two rows: every switch of
        // writer schema falls inside or at the edge of a batch.
        let msgs: Vec<RawMessage> = (0..9)
            .map(|i| {
                let (id, avro) = &parsed[i % 3];
                let mut given = vec![
                    ("request_id", Value::String(format!("r{i}"))),
                    ("account_id", Value::String("acct".into())),
                    ("event_time", Value::TimestampMillis(1_000 + i as i64)),
                    ("prompt_tokens", Value::Int(i as i32)),
                ];
                if *id != 1100 {
                    given.push((
                        "prompt_language",
                        Value::Union(1, Box::new(Value::String("en".into()))),
                    ));
                }
                if *id == 1101 {
                    given.push((
                        "client_region",
                        Value::Union(1, Box::new(Value::String("eu".into()))),
                    ));
                }
                let v = crate::schemas::record_with_defaults(avro, given);
                let body = apache_avro::to_avro_datum(avro, v).unwrap();
                msg(i as i64, "acct", frame(*id, &body))
            })
            .collect();
        let mut d = RecordDecoder::new(schema, 2, i64::MAX / 2).unwrap();
        let out = d.decode(&msgs).unwrap();
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        let b = out.batch;
        assert_eq!(b.num_rows(), 9);
        // The same columns as a decoder of the current schema alone.
        let plain = RecordDecoder::new(&SchemaSet::builtin().request, 2, 0).unwrap();
        assert_eq!(b.schema(), plain.output_schema());
        let tokens = b
            .column_by_name("prompt_tokens")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(tokens.values().to_vec(), (0..9).collect::<Vec<i32>>());
        let lang = arrow::compute::cast(
            b.column_by_name("prompt_language").unwrap(),
            &DataType::Utf8,
        )
        .unwrap();
        let lang = lang.as_string::<i32>();
        for i in 0..9 {
            // The older version has no language: the current default (null).
            let expected = (i % 3 != 2).then_some("en");
            assert_eq!(lang.is_valid(i).then(|| lang.value(i)), expected, "row {i}");
        }
        // An id that is listed nowhere is still refused.
        let unknown = msg(9, "acct", frame(1199, &[0]));
        let out = d.decode(&[unknown]).unwrap();
        assert_eq!(out.rejects[0].kind, RejectKind::UnknownSchemaId);
    }

    #[test]
    fn a_version_that_cannot_be_read_as_the_current_one_is_refused() {
        let retyped = request_version(|fields| {
            for f in fields.iter_mut() {
                if f["name"] == "prompt_tokens" {
                    f["type"] = serde_json::json!("string");
                    f["default"] = serde_json::json!("0");
                }
            }
        });
        let err = SchemaSet::with_versions(&schemas_dir(&[(1102, &retyped)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ApiRequest version 1102 (ApiRequest.1102.avsc) cannot be read as the current ApiRequest"),
            "{err}"
        );
        // A field the current schema requires, missing from an old writer.
        let required = request_version(|fields| fields.retain(|f| f["name"] != "request_id"));
        let err = SchemaSet::with_versions(&schemas_dir(&[(1103, &required)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 1103"), "{err}");
        // And an id taken by the current contract.
        let err = SchemaSet::with_versions(&schemas_dir(&[(1002, &retyped)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("id used twice"), "{err}");
    }

    fn msg(offset: i64, key: &str, payload: Vec<u8>) -> RawMessage {
        RawMessage {
            partition: 3,
            offset,
            timestamp_ms: Some(1_000_000),
            key: Some(key.as_bytes().to_vec().into()),
            payload: Some(payload.into()),
        }
    }

    #[test]
    fn good_and_bad_messages_are_separated() {
        let set = SchemaSet::builtin();
        let mut d = RecordDecoder::new(&set.request, 16, 300_000).unwrap();
        let good = request("r1", "acct-1", 999_000, 10);
        let mut truncated = good.clone();
        truncated.truncate(good.len() - 3);
        let wrong_id = frame(set.account.id, &good[5..]);
        let unknown_id = frame(777, &good[5..]);
        let msgs = vec![
            msg(10, "acct-1", good.clone()),
            msg(11, "acct-1", b"\x00garbage!".to_vec()),
            msg(12, "acct-1", truncated),
            msg(13, "acct-1", wrong_id),
            msg(14, "acct-1", unknown_id),
            RawMessage {
                key: None,
                ..msg(15, "x", good.clone())
            },
            msg(16, "acct-2", good.clone()),
            msg(17, "acct-1", request("r2", "acct-1", 999_500, -4)),
            msg(18, "acct-1", request("r3", "acct-1", 9_000_000, 4)),
            msg(19, "acct-1", b"not avro at all".to_vec()),
            msg(20, "acct-1", request("r4", "acct-1", 999_900, 4)),
            RawMessage {
                timestamp_ms: None,
                ..msg(21, "acct-1", request("r5", "acct-1", i64::MAX, 4))
            },
        ];
        let out = d.decode(&msgs).unwrap();
        let kinds: Vec<(usize, RejectKind)> =
            out.rejects.iter().map(|r| (r.msg_index, r.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                // Magic byte 0 then "garb" read as a schema id.
                (1, RejectKind::UnknownSchemaId),
                (2, RejectKind::MalformedAvro),
                (3, RejectKind::WrongSchema),
                (4, RejectKind::UnknownSchemaId),
                (5, RejectKind::MissingKey),
                (6, RejectKind::KeyMismatch),
                (7, RejectKind::InvalidValue),
                (8, RejectKind::FutureEventTime),
                (9, RejectKind::BadFraming),
                (11, RejectKind::InvalidValue),
            ]
        );
        assert_eq!(out.batch.num_rows(), 2);
        let offsets = out
            .batch
            .column_by_name(OFFSET_COL)
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![10, 20]);
        let ids = out
            .batch
            .column_by_name("request_id")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(ids.value(1), "r4");
    }

    #[test]
    fn decoder_stays_usable_after_rejects_and_across_polls() {
        let set = SchemaSet::builtin();
        let mut d = RecordDecoder::new(&set.request, 2, 300_000).unwrap();
        for round in 0..3 {
            let msgs: Vec<RawMessage> = (0..5)
                .map(|i| msg(i, "a", request(&format!("r{round}-{i}"), "a", 999_000, 1)))
                .chain(std::iter::once(msg(5, "a", vec![0, 0, 0, 3, 233, 1, 2])))
                .collect();
            let out = d.decode(&msgs).unwrap();
            assert_eq!(out.batch.num_rows(), 5, "round {round}");
            assert_eq!(out.rejects.len(), 1);
        }
    }
}
