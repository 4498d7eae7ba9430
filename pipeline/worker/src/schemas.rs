//! The Avro contract, loaded from `schemas/` at build time.
//!
//! The `.avsc` files are the single source of truth: they are compiled into the
//! binary with `include_str!` so a deployed worker cannot drift from the schemas
//! it was built with, and nothing here restates a field.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;

/// Magic byte that starts every Confluent-framed value.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Magic byte plus the 4-byte big-endian schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {name}: {source}")]
    Parse {
        name: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("schemas/ids.toml: {0}")]
    Ids(String),
}

/// One schema of the contract with its wire id.
#[derive(Debug, Clone)]
pub struct ContractSchema {
    pub name: &'static str,
    pub id: u32,
    pub json: &'static str,
    pub avro: Schema,
}

/// Every schema in `schemas/`, with the ids from `schemas/ids.toml`.
#[derive(Debug, Clone)]
pub struct SchemaSet {
    pub request: ContractSchema,
    pub response: ContractSchema,
    pub account: ContractSchema,
    pub risk_score: ContractSchema,
    pub cluster_risk: ContractSchema,
    /// Internal: the repartition topic between the two stages.
    pub cluster_feature: ContractSchema,
}

const SOURCES: [(&str, &str); 6] = [
    (
        "ApiRequest",
        include_str!("../../../schemas/ApiRequest.avsc"),
    ),
    (
        "ApiResponse",
        include_str!("../../../schemas/ApiResponse.avsc"),
    ),
    ("Account", include_str!("../../../schemas/Account.avsc")),
    ("RiskScore", include_str!("../../../schemas/RiskScore.avsc")),
    (
        "ClusterRisk",
        include_str!("../../../schemas/ClusterRisk.avsc"),
    ),
    (
        "ClusterFeature",
        include_str!("../../../schemas/ClusterFeature.avsc"),
    ),
];
const IDS: &str = include_str!("../../../schemas/ids.toml");

impl SchemaSet {
    fn load() -> Result<Self, SchemaError> {
        let ids: HashMap<String, u32> =
            toml::from_str(IDS).map_err(|e| SchemaError::Ids(e.to_string()))?;
        let mut loaded = Vec::with_capacity(SOURCES.len());
        for (name, json) in SOURCES {
            let avro = Schema::parse_str(json).map_err(|source| SchemaError::Parse {
                name,
                source: Box::new(source),
            })?;
            let id = *ids
                .get(name)
                .ok_or_else(|| SchemaError::Ids(format!("no id for {name}")))?;
            loaded.push(ContractSchema {
                name,
                id,
                json,
                avro,
            });
        }
        let mut it = loaded.into_iter();
        let mut next = || it.next().expect("SOURCES has six entries");
        Ok(Self {
            request: next(),
            response: next(),
            account: next(),
            risk_score: next(),
            cluster_risk: next(),
            cluster_feature: next(),
        })
    }

    /// The schemas compiled into this binary. Parsing them is checked by the
    /// unit tests, so failing here means a broken build, not bad data.
    pub fn builtin() -> &'static SchemaSet {
        static SET: OnceLock<SchemaSet> = OnceLock::new();
        SET.get_or_init(|| SchemaSet::load().expect("schemas/ compiled into the binary must parse"))
    }

    pub fn all(&self) -> [&ContractSchema; 6] {
        [
            &self.request,
            &self.response,
            &self.account,
            &self.risk_score,
            &self.cluster_risk,
            &self.cluster_feature,
        ]
    }

    pub fn by_id(&self, id: u32) -> Option<&ContractSchema> {
        self.all().into_iter().find(|s| s.id == id)
    }
}

/// Prefix an Avro binary body with the Confluent header.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONFLUENT_HEADER_LEN + body.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Split a Confluent-framed value into schema id and Avro body.
pub fn unframe(bytes: &[u8]) -> Option<(u32, &[u8])> {
    if bytes.len() < CONFLUENT_HEADER_LEN || bytes[0] != CONFLUENT_MAGIC {
        return None;
    }
    let id = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
    Some((id, &bytes[CONFLUENT_HEADER_LEN..]))
}

/// Encode one `apache_avro` value with `schema` and frame it.
pub fn encode_framed(
    schema: &ContractSchema,
    value: apache_avro::types::Value,
) -> Result<Vec<u8>, apache_avro::Error> {
    let body = apache_avro::to_avro_datum(&schema.avro, value)?;
    Ok(frame(schema.id, &body))
}

/// A record of `schema` from the given fields, every other field taking its
/// schema default. Panics if a field without default is missing: callers are
/// tests and the generator, whose inputs are code, not data.
pub fn record_with_defaults(
    schema: &Schema,
    given: Vec<(&str, apache_avro::types::Value)>,
) -> apache_avro::types::Value {
    use apache_avro::types::Value;
    let Schema::Record(r) = schema else {
        panic!("record_with_defaults needs a record schema");
    };
    let fields = r
        .fields
        .iter()
        .map(|f| {
            let v = match given.iter().find(|(n, _)| *n == f.name) {
                Some((_, v)) => v.clone(),
                None => {
                    let d = f
                        .default
                        .clone()
                        .unwrap_or_else(|| panic!("field {} has no default", f.name));
                    Value::from(d)
                        .resolve(&f.schema)
                        .unwrap_or_else(|e| panic!("default of {}: {e}", f.name))
                }
            };
            (f.name.clone(), v)
        })
        .collect();
    Value::Record(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_parse_with_distinct_ids() {
        let set = SchemaSet::load().unwrap();
        let mut ids: Vec<u32> = set.all().iter().map(|s| s.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6);
        assert_eq!(set.by_id(set.request.id).unwrap().name, "ApiRequest");
    }

    #[test]
    fn every_field_is_documented() {
        for s in SchemaSet::load().unwrap().all() {
            let v: serde_json::Value = serde_json::from_str(s.json).unwrap();
            for f in v["fields"].as_array().unwrap() {
                assert!(f["doc"].is_string(), "{}.{} lacks doc", s.name, f["name"]);
            }
        }
    }

    #[test]
    fn frame_round_trip_and_rejects_bad_magic() {
        let framed = frame(1003, b"abc");
        assert_eq!(unframe(&framed), Some((1003, &b"abc"[..])));
        assert_eq!(unframe(&[1, 0, 0, 3, 235, 1]), None);
        assert_eq!(unframe(&[0, 0]), None);
    }
}
