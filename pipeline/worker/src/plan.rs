//! Plan a query once, run it on every window's data.
//!
//! Parsing, optimising and physically planning a job's SQL costs
//! milliseconds, far more than running it over one window of one partition
//! (about a thousand rows). A [`Prepared`] query is planned once against
//! **bound tables**: providers that know their schema but not their rows.
//! Each run hands the rows in through the task context, resets the stateful
//! operators (hash joins keep their build side between executions) and
//! executes the same physical plan again.
//!
//! A bound table reports unknown statistics, so the planner can never fold
//! a count of rows it saw at planning time into the plan; the plan is the
//! same for every window, and so is its output order for the same input.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::prelude::SessionContext;

/// Jobs' plans by job name.
pub type JobPlans = std::collections::BTreeMap<String, Arc<Prepared>>;

/// A query planned once over bound tables.
pub struct Prepared {
    plan: Arc<dyn ExecutionPlan>,
    /// Each bound table and the schema the plan expects of it.
    tables: Vec<(String, SchemaRef)>,
    /// Functions, configuration and runtime of the planning session.
    base: Arc<TaskContext>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Plan `sql` in `ctx` (a fresh context with the project's functions)
    /// over the bound `tables`.
    pub async fn plan(
        ctx: SessionContext,
        sql: &str,
        tables: &[(&str, SchemaRef)],
    ) -> Result<Prepared> {
        for (name, schema) in tables {
            ctx.register_table(
                *name,
                Arc::new(BoundTable {
                    name: name.to_string(),
                    schema: schema.clone(),
                }),
            )?;
        }
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        Ok(Prepared {
            plan,
            tables: tables
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            base: ctx.task_ctx(),
        })
    }

    /// Schema of the query's output.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// Whether rows of `schema` can be bound to table `name` (same fields,
    /// types and nullability as planned).
    pub fn accepts(&self, name: &str, schema: &SchemaRef) -> bool {
        self.tables
            .iter()
            .any(|(n, s)| n == name && s.fields() == schema.fields())
    }

    /// Run the plan over `data`, one entry per bound table. Every batch
    /// must have the schema the table was planned with (see
    /// [`Prepared::accepts`]).
    pub async fn run(&self, data: Vec<(String, Vec<RecordBatch>)>) -> Result<Vec<RecordBatch>> {
        for (name, batches) in &data {
            if let Some(b) = batches.iter().find(|b| !self.accepts(name, &b.schema())) {
                return Err(DataFusionError::Plan(format!(
                    "rows bound to table {name} do not have its planned schema: {:?}",
                    b.schema()
                )));
            }
        }
        let bound = Arc::new(BoundData(data.into_iter().collect()));
        let config = self.base.session_config().clone().with_extension(bound);
        // No function registries: the physical plan holds the functions it
        // calls, and copying the session's (hundreds of named entries, three
        // maps) for every run of every job was a good part of a run's fixed
        // cost.
        let task = Arc::new(TaskContext::new(
            None,
            self.base.session_id(),
            config,
            Default::default(),
            Default::default(),
            Default::default(),
            Default::default(),
            self.base.runtime_env(),
        ));
        datafusion::physical_plan::collect(fresh(&self.plan)?, task).await
    }
}

/// A copy of `plan` whose stateful operators start afresh, sharing
/// everything else (properties are kept, not recomputed).
fn fresh(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan
        .children()
        .into_iter()
        .map(fresh)
        .collect::<Result<Vec<_>>>()?;
    let node = if children.is_empty() {
        Arc::clone(plan)
    } else {
        Arc::clone(plan).replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
    };
    node.reset_state()
}

/// The rows of one run, by bound table name.
#[derive(Debug)]
struct BoundData(HashMap<String, Vec<RecordBatch>>);

/// A table whose rows are bound at execution, not at planning.
#[derive(Debug)]
struct BoundTable {
    name: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for BoundTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(BoundExec {
            name: self.name.clone(),
            projection: projection.cloned(),
            schema: projected,
            properties: Arc::new(properties),
        }))
    }
}

/// Scan of a bound table: the rows the run's task context carries for it.
#[derive(Debug)]
struct BoundExec {
    name: String,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for BoundExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BoundExec: table={}", self.name)
    }
}

impl ExecutionPlan for BoundExec {
    fn name(&self) -> &'static str {
        "BoundExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let bound = context
            .session_config()
            .get_extension::<BoundData>()
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "table {} is bound at execution, and this run bound no rows",
                    self.name
                ))
            })?;
        let batches = bound.0.get(&self.name).cloned().unwrap_or_default();
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema.clone(),
            self.projection.clone(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn table(rows: &[(&str, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn sums(batches: &[RecordBatch]) -> Vec<(String, i64, i64)> {
        batches
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_string::<i32>();
                let s = b.column(1).as_primitive::<Int64Type>();
                let n = b.column(2).as_primitive::<Int64Type>();
                (0..b.num_rows()).map(move |i| (k.value(i).to_string(), s.value(i), n.value(i)))
            })
            .collect()
    }

    #[tokio::test]
    async fn one_plan_runs_on_each_windows_rows_and_a_join_forgets_the_last_build_side() {
        let schema = table(&[]).schema();
        let sql = "SELECT a.k, sum(b.v) AS s, count(*) AS n FROM a JOIN b ON a.k = b.k \
                   GROUP BY a.k ORDER BY a.k";
        let p = Prepared::plan(
            SessionContext::new(),
            sql,
            &[("a", schema.clone()), ("b", schema.clone())],
        )
        .await
        .unwrap();
        let run = |a: &[(&str, i64)], b: &[(&str, i64)]| {
            p.run(vec![
                ("a".to_string(), vec![table(a)]),
                ("b".to_string(), vec![table(b)]),
            ])
        };
        let first = run(&[("x", 0), ("y", 0)], &[("x", 1), ("x", 2), ("y", 5)])
            .await
            .unwrap();
        assert_eq!(sums(&first), vec![("x".into(), 3, 2), ("y".into(), 5, 1)]);
        // A second window: a hash join that kept its build side would still
        // see x and y.
        let second = run(&[("z", 0)], &[("z", 7), ("x", 100)]).await.unwrap();
        assert_eq!(sums(&second), vec![("z".into(), 7, 1)]);
        // No rows at all: no groups, and no count of rows seen at planning.
        let empty = run(&[], &[]).await.unwrap();
        assert!(sums(&empty).is_empty());
    }

    #[tokio::test]
    async fn rows_of_another_schema_are_refused() {
        let schema = table(&[]).schema();
        let p = Prepared::plan(SessionContext::new(), "SELECT k FROM a", &[("a", schema)])
            .await
            .unwrap();
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = p
            .run(vec![("a".to_string(), vec![other])])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("planned schema"), "{err}");
    }
}
