//! SQL functions the jobs may call beyond DataFusion's own.
//!
//! A job's output columns are numeric features, so a job that needs to carry
//! a *name* from one window to a roll-up (which model an account used, to
//! find out later which models are new) carries a number standing for it:
//! `label_id(text)`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::jobs::Fnv64;

/// Name of the function in SQL.
pub const LABEL_ID: &str = "label_id";

/// A stable number naming `text`: FNV-1a 64 of its UTF-8 bytes, cut to 52
/// bits so that it survives the trip through a Float64 feature exactly. The
/// same text gives the same number on every machine and release (it is part
/// of what roll-ups hold across restarts); two texts collide with a
/// probability of about n²/2⁵³, negligible for model names.
pub fn label_id(text: &str) -> i64 {
    let mut h = Fnv64::new();
    h.write(text.as_bytes());
    (h.finish() >> 12) as i64
}

fn label_id_udf() -> ScalarUDF {
    create_udf(
        LABEL_ID,
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(DataFusionError::Plan(format!(
                    "{LABEL_ID} takes one text argument"
                )));
            };
            Ok(match arg {
                ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                    ColumnarValue::Scalar(ScalarValue::Int64(v.as_deref().map(label_id)))
                }
                ColumnarValue::Scalar(other) => {
                    return Err(DataFusionError::Plan(format!(
                        "{LABEL_ID} takes text, not {}",
                        other.data_type()
                    )))
                }
                ColumnarValue::Array(a) => {
                    let strings = a.as_string::<i32>();
                    let out: Int64Array = (0..strings.len())
                        .map(|i| (!strings.is_null(i)).then(|| label_id(strings.value(i))))
                        .collect();
                    ColumnarValue::Array(Arc::new(out) as ArrayRef)
                }
            })
        }),
    )
}

/// Make the functions above callable from the jobs' SQL.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(label_id_udf());
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    #[test]
    fn label_ids_are_stable_distinct_and_exact_as_floats() {
        // Pinned: held roll-up rows written by one release are read by the next.
        assert_eq!(label_id(""), (0xcbf29ce484222325u64 >> 12) as i64);
        let a = label_id("atlas-3-large");
        let b = label_id("atlas-4");
        assert_ne!(a, b);
        for v in [a, b] {
            assert!((0..1i64 << 52).contains(&v));
            assert_eq!(v as f64 as i64, v);
        }
    }

    #[tokio::test]
    async fn sql_sees_label_id_over_columns_nulls_and_literals() {
        let ctx = crate::join::window_context();
        let schema = Arc::new(Schema::new(vec![Field::new("m", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![Some("atlas-4"), None]))],
        )
        .unwrap();
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
        )
        .unwrap();
        let out = ctx
            .sql("SELECT label_id(m) AS id, label_id('atlas-4') AS lit FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let ids = out[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let lit = out[0]
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.value(0), label_id("atlas-4"));
        assert!(ids.is_null(1));
        assert_eq!(lit.value(0), label_id("atlas-4"));
    }
}
