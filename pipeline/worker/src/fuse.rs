//! Raw jobs that are each one aggregation of `events` grouped by their key,
//! evaluated together in one pass.
//!
//! Most jobs over raw events have the same shape: `SELECT key, agg AS
//! name, ... FROM events GROUP BY key`. Run one by one, each hashes every
//! event's key into its own table and pays a run's fixed cost; together,
//! one aggregation computes every job's expressions over one grouping.
//! Nothing about a job changes: its SQL file, golden tests and `jobs
//! explain` are the job alone, and its output here is taken out of the
//! combined one column by column, under the names and types its own plan
//! gives (a test holds the two equal, batch for batch, on generated
//! traffic). A job of any other shape, or one whose columns would not come
//! out the same, simply runs alone.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, SelectItem, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::jobs::{normalize_output, record_job_time, Job, JobError, JobInput, JobSet};
use crate::plan::Prepared;

/// Jobs evaluated as one aggregation.
#[derive(Debug)]
pub struct FusedJobs {
    /// `fused:` and the jobs' names, for timings.
    pub name: String,
    plan: Prepared,
    /// Per job (in the job set's order), its output: each column's index in
    /// the combined output, under the job's own schema.
    outputs: Vec<(String, Vec<usize>, SchemaRef)>,
}

/// A job's select list: the key or an aliased expression, in output order.
enum Item {
    Key,
    Expr(String),
}

/// Fusible jobs by key and lateness, each with its select list.
type Candidates<'a> = BTreeMap<(String, i64), Vec<(&'a Job, Vec<Item>)>>;

/// The select list of `job` when its SQL is exactly `SELECT <key and
/// aliased expressions> FROM events GROUP BY <key>`: no CTE, filter,
/// having, ordering, limit, join or DISTINCT (checked by printing the
/// parsed statement back and comparing it with that shape).
fn shape(job: &Job) -> Option<Vec<Item>> {
    if job.input != JobInput::Events {
        return None;
    }
    let mut statements = Parser::parse_sql(&GenericDialect {}, &job.sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let statement = statements.pop()?;
    let Statement::Query(query) = &statement else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let GroupByExpr::Expressions(group, modifiers) = &select.group_by else {
        return None;
    };
    let is_key = |e: &Expr| matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value == job.key);
    if group.len() != 1 || !is_key(&group[0]) || !modifiers.is_empty() {
        return None;
    }
    let mut items = Vec::new();
    let mut printed = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) if is_key(e) => items.push(Item::Key),
            SelectItem::ExprWithAlias { expr, .. } => items.push(Item::Expr(expr.to_string())),
            _ => return None,
        }
        printed.push(item.to_string());
    }
    if items.iter().filter(|i| matches!(i, Item::Key)).count() != 1 {
        return None;
    }
    let plain = format!(
        "SELECT {} FROM events GROUP BY {}",
        printed.join(", "),
        job.key
    );
    (statement.to_string() == plain).then_some(items)
}

/// Groups of at least two raw jobs with the fusible shape, the same key
/// and the same lateness (a revision re-runs the jobs of one lateness
/// together), each planned as one query over `events`. `plans` are the
/// jobs' own plans: a job whose column in the combined query would not
/// have the name, type and nullability of its own output is left out.
pub async fn plan_groups(jobs: &JobSet, events: &SchemaRef) -> Result<Vec<FusedJobs>, JobError> {
    let mut candidates = Candidates::new();
    for job in &jobs.jobs {
        if let Some(items) = shape(job) {
            candidates
                .entry((job.key.clone(), job.lateness_ms))
                .or_default()
                .push((job, items));
        }
    }
    let mut groups = Vec::new();
    for ((key, _), members) in candidates {
        if members.len() < 2 {
            continue;
        }
        let mut select = vec![key.clone()];
        let mut outputs = Vec::new();
        for (job, items) in &members {
            let Some(own) = jobs.plans.get(&job.name) else {
                continue;
            };
            let mut columns = Vec::new();
            for item in items {
                columns.push(match item {
                    Item::Key => 0,
                    Item::Expr(e) => {
                        select.push(format!("{e} AS \"f{}\"", select.len()));
                        select.len() - 1
                    }
                });
            }
            outputs.push((job.name.clone(), columns, own.schema()));
        }
        let sql = format!(
            "SELECT {} FROM events GROUP BY {key}",
            select.join(",\n    ")
        );
        let name = format!(
            "fused:{}",
            outputs
                .iter()
                .map(|(n, _, _)| n.as_str())
                .collect::<Vec<_>>()
                .join("+")
        );
        let plan = match Prepared::plan(
            crate::join::window_context(),
            &sql,
            &[("events", events.clone())],
        )
        .await
        {
            Ok(plan) => plan,
            Err(e) => {
                tracing::debug!(group = %name, error = %e, "jobs not fused: the combined query does not plan");
                continue;
            }
        };
        let combined = plan.schema();
        outputs.retain(|(_, columns, own)| {
            own.fields().len() == columns.len()
                && own.fields().iter().zip(columns).all(|(f, &c)| {
                    let g = combined.field(c);
                    f.data_type() == g.data_type() && f.is_nullable() == g.is_nullable()
                })
        });
        if outputs.len() < 2 {
            continue;
        }
        groups.push(FusedJobs {
            name,
            plan,
            outputs,
        });
    }
    Ok(groups)
}

impl FusedJobs {
    /// Names of the jobs this group evaluates.
    pub fn jobs(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|(n, _, _)| n.as_str())
    }

    /// Every job's output over `events`, as [`crate::jobs::run_bound`]
    /// gives it for the job alone.
    pub async fn run(
        &self,
        jobs: &JobSet,
        events: RecordBatch,
    ) -> Result<Vec<(String, RecordBatch)>, JobError> {
        let started = std::time::Instant::now();
        let rows_in = events.num_rows() as u64;
        let sql_err = |source| JobError::Sql {
            job: self.name.clone(),
            source,
        };
        let batches = self
            .plan
            .run(vec![("events".to_string(), vec![events])])
            .await
            .map_err(sql_err)?;
        let combined = arrow::compute::concat_batches(&self.plan.schema(), &batches)
            .map_err(|e| sql_err(e.into()))?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for (name, columns, schema) in &self.outputs {
            let job = jobs.get(name).expect("a fused job is in its job set");
            let batch = RecordBatch::try_new(
                schema.clone(),
                columns
                    .iter()
                    .map(|&c| combined.column(c).clone())
                    .collect(),
            )
            .map_err(|e| sql_err(e.into()))?;
            out.push((name.clone(), normalize_output(job, batch)?));
        }
        record_job_time(&self.name, rows_in, started.elapsed());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn job(sql: &str) -> Job {
        let header = "-- name: t\n-- input: events\n-- key: account_id\n-- window: tumble 10m\n-- lateness: 0s\n";
        Job::parse(Path::new("t.sql"), &format!("{header}{sql}")).unwrap()
    }

    #[test]
    fn only_one_plain_aggregation_by_the_key_is_fusible() {
        let fusible = [
            "SELECT account_id, count(*) AS n FROM events GROUP BY account_id",
            "SELECT\n  account_id, -- the key\n  sum(x) / (count(*) + 5.0) AS s,\n  count(DISTINCT y) AS d\nFROM events\nGROUP BY account_id",
            "SELECT max(a) AS m, account_id FROM events GROUP BY account_id",
        ];
        for sql in fusible {
            assert!(shape(&job(sql)).is_some(), "{sql}");
        }
        let alone = [
            "SELECT account_id, count(*) AS n FROM events WHERE x > 1 GROUP BY account_id",
            "SELECT account_id, count(*) AS n FROM events GROUP BY account_id HAVING count(*) > 1",
            "SELECT account_id, count(*) AS n FROM events GROUP BY account_id ORDER BY n",
            "SELECT account_id, count(*) AS n FROM events GROUP BY account_id LIMIT 3",
            "SELECT DISTINCT account_id, count(*) AS n FROM events GROUP BY account_id",
            "WITH e AS (SELECT * FROM events) SELECT account_id, count(*) AS n FROM e GROUP BY account_id",
            "SELECT account_id, count(*) AS n FROM events e GROUP BY account_id",
            "SELECT account_id, count(*) AS n FROM events JOIN a USING (account_id) GROUP BY account_id",
            "SELECT account_id, count(*) FROM events GROUP BY account_id",
            "SELECT account_id, api_key_id, count(*) AS n FROM events GROUP BY account_id, api_key_id",
            "SELECT account_id AS a, count(*) AS n FROM events GROUP BY account_id",
            "SELECT account_id, count(*) AS n FROM events GROUP BY account_id UNION ALL SELECT account_id, 1 AS n FROM events GROUP BY account_id",
        ];
        for sql in alone {
            assert!(shape(&job(sql)).is_none(), "{sql}");
        }
    }
}
