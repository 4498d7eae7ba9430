//! Avro of the features topic (`ClusterFeature`, internal) and of
//! `risk.clusters.v1` (`ClusterRisk`).

use apache_avro::types::Value;

use super::keys::MemberRow;
use super::model::ClusterRisk;
use crate::schemas::{encode_framed, unframe, SchemaSet};

/// One record of the features topic.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRecord {
    pub group: String,
    pub upstream_partition: i32,
    pub upstream_partitions: i32,
    pub through: i64,
    pub final_: bool,
    /// `None`: a progress mark.
    pub member: Option<MemberRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),
    #[error("not a Confluent-framed value")]
    Unframed,
    #[error("schema id {0} is not ClusterFeature")]
    WrongSchema(u32),
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        Some(x) => Value::Union(1, Box::new(f(x))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

pub fn encode_feature(r: &FeatureRecord) -> Result<Vec<u8>, apache_avro::Error> {
    let member = opt(r.member.as_ref(), |m| {
        Value::Record(vec![
            ("kind".into(), Value::String(m.kind.clone())),
            ("key".into(), Value::String(m.key.clone())),
            ("account_id".into(), Value::String(m.account_id.clone())),
            ("window_start".into(), Value::Long(m.window_start)),
            ("window_end".into(), Value::Long(m.window_end)),
            ("requests".into(), Value::Long(m.requests)),
            ("output_tokens".into(), Value::Long(m.output_tokens)),
            (
                "minute_counts".into(),
                Value::Array(m.minute_counts.iter().map(|c| Value::Int(*c)).collect()),
            ),
            (
                "templates".into(),
                Value::Array(m.templates.iter().map(|t| Value::Long(*t)).collect()),
            ),
            (
                "account_age_days".into(),
                opt(m.account_age_days, Value::Double),
            ),
            ("signup_day".into(), opt(m.signup_day, Value::Long)),
            (
                "signup_channel".into(),
                opt(m.signup_channel.clone(), Value::String),
            ),
            ("verified".into(), Value::Boolean(m.verified)),
            ("own_score".into(), Value::Double(m.own_score)),
            ("tool_requests".into(), Value::Long(m.tool_requests)),
            (
                "tool_schemas".into(),
                Value::Array(m.tool_schemas.iter().map(|t| Value::Long(*t)).collect()),
            ),
        ])
    });
    let value = Value::Record(vec![
        ("group".into(), Value::String(r.group.clone())),
        (
            "upstream_partition".into(),
            Value::Int(r.upstream_partition),
        ),
        (
            "upstream_partitions".into(),
            Value::Int(r.upstream_partitions),
        ),
        ("through".into(), Value::Long(r.through)),
        ("final".into(), Value::Boolean(r.final_)),
        ("member".into(), member),
    ]);
    encode_framed(&SchemaSet::builtin().cluster_feature, value)
}

fn fields(v: Value) -> Result<Vec<(String, Value)>, WireError> {
    match v {
        Value::Record(f) => Ok(f),
        _ => Err(WireError::Shape("record expected")),
    }
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        v => v,
    }
}

fn long(v: &Value) -> Result<i64, WireError> {
    match v {
        Value::Long(x) => Ok(*x),
        Value::Int(x) => Ok(i64::from(*x)),
        _ => Err(WireError::Shape("long expected")),
    }
}

fn string(v: Value) -> Result<String, WireError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(WireError::Shape("string expected")),
    }
}

pub fn decode_feature(bytes: &[u8]) -> Result<FeatureRecord, WireError> {
    let schema = &SchemaSet::builtin().cluster_feature;
    let (id, mut body) = unframe(bytes).ok_or(WireError::Unframed)?;
    if id != schema.id {
        return Err(WireError::WrongSchema(id));
    }
    let v = apache_avro::from_avro_datum(&schema.avro, &mut body, None)?;
    let mut f = fields(v)?.into_iter().map(|(_, v)| v);
    let mut next = || f.next().ok_or(WireError::Shape("missing field"));
    let group = string(next()?)?;
    let upstream_partition = long(&next()?)? as i32;
    let upstream_partitions = long(&next()?)? as i32;
    let through = long(&next()?)?;
    let final_ = matches!(next()?, Value::Boolean(true));
    let member = match unwrap_union(next()?) {
        Value::Null => None,
        v => {
            let mut m = fields(v)?.into_iter().map(|(_, v)| unwrap_union(v));
            let mut next = || m.next().ok_or(WireError::Shape("missing member field"));
            Some(MemberRow {
                kind: string(next()?)?,
                key: string(next()?)?,
                account_id: string(next()?)?,
                window_start: long(&next()?)?,
                window_end: long(&next()?)?,
                requests: long(&next()?)?,
                output_tokens: long(&next()?)?,
                minute_counts: match next()? {
                    Value::Array(a) => a
                        .iter()
                        .map(|v| long(v).map(|x| x as i32))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(WireError::Shape("array expected")),
                },
                templates: match next()? {
                    Value::Array(a) => a.iter().map(long).collect::<Result<_, _>>()?,
                    _ => return Err(WireError::Shape("array expected")),
                },
                account_age_days: match next()? {
                    Value::Double(d) => Some(d),
                    _ => None,
                },
                signup_day: match next()? {
                    Value::Null => None,
                    v => Some(long(&v)?),
                },
                signup_channel: match next()? {
                    Value::String(s) => Some(s),
                    _ => None,
                },
                verified: matches!(next()?, Value::Boolean(true)),
                own_score: match next()? {
                    Value::Double(d) => d,
                    _ => return Err(WireError::Shape("double expected")),
                },
                tool_requests: long(&next()?)?,
                tool_schemas: match next()? {
                    Value::Array(a) => a.iter().map(long).collect::<Result<_, _>>()?,
                    _ => return Err(WireError::Shape("array expected")),
                },
            })
        }
    };
    Ok(FeatureRecord {
        group,
        upstream_partition,
        upstream_partitions,
        through,
        final_,
        member,
    })
}

/// Kafka key of a cluster record: `<cluster_id>/<window_start>`.
pub fn cluster_key(r: &ClusterRisk) -> String {
    format!("{}/{}", r.cluster_id(), r.cluster.window_start)
}

pub fn encode_cluster(r: &ClusterRisk) -> Result<Vec<u8>, apache_avro::Error> {
    let c = &r.cluster;
    let reasons = r
        .reasons
        .iter()
        .map(|x| {
            Value::Record(vec![
                ("feature".into(), Value::String(x.feature.clone())),
                ("value".into(), Value::Double(x.value)),
                ("contribution".into(), Value::Double(x.contribution)),
            ])
        })
        .collect();
    let features = c
        .features
        .iter()
        .map(|(n, v)| {
            Value::Record(vec![
                ("name".into(), Value::String(n.clone())),
                ("value".into(), opt(*v, Value::Double)),
            ])
        })
        .collect();
    let value = Value::Record(vec![
        ("cluster_id".into(), Value::String(r.cluster_id())),
        ("kind".into(), Value::String(c.kind.clone())),
        ("key".into(), Value::String(c.key.clone())),
        (
            "window_start".into(),
            Value::TimestampMillis(c.window_start),
        ),
        ("window_end".into(), Value::TimestampMillis(c.window_end)),
        ("score".into(), Value::Double(r.score)),
        (
            "level".into(),
            Value::Enum(r.level.index(), r.level.as_str().into()),
        ),
        ("reasons".into(), Value::Array(reasons)),
        ("features".into(), Value::Array(features)),
        (
            "members".into(),
            Value::Array(c.members.iter().map(|m| Value::String(m.clone())).collect()),
        ),
        ("member_count".into(), Value::Long(c.member_count as i64)),
        ("broad".into(), Value::Boolean(c.broad)),
        ("requests".into(), Value::Long(c.requests)),
        (
            "model_version".into(),
            Value::String(r.model_version.clone()),
        ),
    ]);
    encode_framed(&SchemaSet::builtin().cluster_risk, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_and_mark_round_trip() {
        let member = MemberRow {
            kind: "payment".into(),
            key: "card-1".into(),
            account_id: "acct-1".into(),
            window_start: 0,
            window_end: 600_000,
            requests: 3,
            output_tokens: 900,
            minute_counts: vec![1, 0, 2, 0, 0, 0, 0, 0, 0, 0],
            templates: vec![-5, 7],
            account_age_days: Some(2.5),
            signup_day: Some(20_000),
            signup_channel: None,
            verified: false,
            own_score: 0.25,
            tool_requests: 3,
            tool_schemas: vec![11, -2],
        };
        for r in [
            FeatureRecord {
                group: "g".into(),
                upstream_partition: 1,
                upstream_partitions: 4,
                through: 600_000,
                final_: false,
                member: Some(member),
            },
            FeatureRecord {
                group: "g".into(),
                upstream_partition: 3,
                upstream_partitions: 4,
                through: 1_200_000,
                final_: true,
                member: None,
            },
        ] {
            let bytes = encode_feature(&r).unwrap();
            assert_eq!(decode_feature(&bytes).unwrap(), r);
        }
    }
}
