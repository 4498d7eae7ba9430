//! The Avro contract, loaded from `schemas/` at build time.
//!
//! The `.avsc` files are the single source of truth: they are compiled into the
//! binary with `include_str!` so a deployed worker cannot drift from the schemas
//! it was built with, and nothing here restates a field.
//!
//! Producers may write other versions of a schema (older ones still in use,
//! newer ones with fields this worker does not know yet): `[schemas] dir`
//! names a directory like `schemas/` whose `ids.toml` lists them under
//! `[versions.<Schema>]`, by wire id. Each is decoded into the current
//! schema by Avro schema resolution, and one that cannot be (a changed type,
//! a new field without a default) is refused before the worker starts.

use std::collections::HashMap;
use std::path::Path;
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
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{schema} version {id} ({file}) cannot be read as the current {schema}: {reason}. Producers writing it would be refused; a compatible change only adds fields with defaults or removes fields that have one (docs: schemas/README.md)")]
    Incompatible {
        schema: &'static str,
        id: u32,
        file: String,
        reason: String,
    },
    #[error("the schemas in use were fixed before {0} was read: install them first")]
    AlreadyInUse(String),
}

/// Another version of a contract schema that producers may write.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: u32,
    /// Where it was read from (for messages).
    pub file: String,
    pub json: String,
    pub avro: Schema,
}

/// One schema of the contract with its wire id.
#[derive(Debug, Clone)]
pub struct ContractSchema {
    pub name: &'static str,
    pub id: u32,
    pub json: &'static str,
    pub avro: Schema,
    /// Other versions producers may write, each readable as this one.
    pub versions: Vec<Version>,
}

impl ContractSchema {
    /// Whether values framed with `id` are this schema (any version).
    pub fn accepts(&self, id: u32) -> bool {
        id == self.id || self.versions.iter().any(|v| v.id == id)
    }
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
        let ids = current_ids(IDS)?;
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
                versions: Vec::new(),
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

    /// The schemas in use: those compiled into this binary, plus the other
    /// versions [`install`]ed at startup, if any. Parsing the compiled ones
    /// is checked by the unit tests, so failing here means a broken build,
    /// not bad data.
    pub fn builtin() -> &'static SchemaSet {
        ACTIVE.get_or_init(|| {
            SchemaSet::load().expect("schemas/ compiled into the binary must parse")
        })
    }

    /// The compiled-in schemas with the other versions `dir/ids.toml` lists
    /// under `[versions.<Schema>]` (`<id> = "<file under dir>"`). Its
    /// current ids must be this binary's; every version must have an id of
    /// its own and be readable as the current schema.
    pub fn with_versions(dir: &Path) -> Result<SchemaSet, SchemaError> {
        let mut set = SchemaSet::load()?;
        let ids_path = dir.join("ids.toml");
        let file_err = |path: &Path, message: String| SchemaError::File {
            path: path.display().to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(&ids_path).map_err(|e| file_err(&ids_path, e.to_string()))?;
        let theirs = current_ids(&text)?;
        for s in set.all() {
            if theirs.get(s.name) != Some(&s.id) {
                return Err(file_err(
                    &ids_path,
                    format!(
                        "{} is id {:?} there but {} in this binary: versions are listed against the contract the worker was built with",
                        s.name,
                        theirs.get(s.name),
                        s.id
                    ),
                ));
            }
        }
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| file_err(&ids_path, e.message().to_string()))?;
        let mut taken: Vec<u32> = set.all().iter().map(|s| s.id).collect();
        let Some(versions) = table.get("versions") else {
            return Ok(set);
        };
        let versions = versions
            .as_table()
            .ok_or_else(|| file_err(&ids_path, "[versions] must be a table of tables".into()))?;
        for (name, listed) in versions {
            let contract = set
                .all_mut()
                .into_iter()
                .find(|s| s.name == name.as_str())
                .ok_or_else(|| file_err(&ids_path, format!("[versions.{name}]: no such schema")))?;
            let listed = listed.as_table().ok_or_else(|| {
                file_err(
                    &ids_path,
                    format!("[versions.{name}] must map ids to files"),
                )
            })?;
            for (id, file) in listed {
                let bad = |m: String| file_err(&ids_path, format!("[versions.{name}] {id}: {m}"));
                let id: u32 = id.parse().map_err(|_| bad("not a schema id".into()))?;
                let file = file
                    .as_str()
                    .ok_or_else(|| bad("must name a file".into()))?
                    .to_string();
                if taken.contains(&id) {
                    return Err(bad("id used twice".into()));
                }
                taken.push(id);
                let path = dir.join(&file);
                let json =
                    std::fs::read_to_string(&path).map_err(|e| file_err(&path, e.to_string()))?;
                let avro = Schema::parse_str(&json).map_err(|e| file_err(&path, e.to_string()))?;
                apache_avro::schema_compatibility::SchemaCompatibility::can_read(
                    &avro,
                    &contract.avro,
                )
                .map_err(|e| SchemaError::Incompatible {
                    schema: contract.name,
                    id,
                    file: file.clone(),
                    reason: e.to_string(),
                })?;
                contract.versions.push(Version {
                    id,
                    file,
                    json,
                    avro,
                });
            }
        }
        Ok(set)
    }

    fn all_mut(&mut self) -> [&mut ContractSchema; 6] {
        [
            &mut self.request,
            &mut self.response,
            &mut self.account,
            &mut self.risk_score,
            &mut self.cluster_risk,
            &mut self.cluster_feature,
        ]
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
        self.all().into_iter().find(|s| s.accepts(id))
    }
}

static ACTIVE: OnceLock<SchemaSet> = OnceLock::new();

/// Make `set` the schemas of this process ([`SchemaSet::builtin`]): before
/// anything decodes, since decoders are built from it.
pub fn install(set: SchemaSet, from: &Path) -> Result<(), SchemaError> {
    ACTIVE
        .set(set)
        .map_err(|_| SchemaError::AlreadyInUse(from.display().to_string()))
}

/// The top-level `<Schema> = <id>` entries of an `ids.toml`.
fn current_ids(text: &str) -> Result<HashMap<String, u32>, SchemaError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| SchemaError::Ids(e.to_string()))?;
    table
        .iter()
        .filter(|(_, v)| !v.is_table())
        .map(|(k, v)| {
            let id = v
                .as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| SchemaError::Ids(format!("{k}: not a schema id")))?;
            Ok((k.clone(), id))
        })
        .collect()
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

    /// Every version `schemas/ids.toml` lists is readable as the current
    /// schema: what a worker with `[schemas] dir = "schemas"` checks at
    /// startup, checked here before anything ships.
    #[test]
    fn the_repositorys_listed_versions_are_compatible() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"));
        let set = SchemaSet::with_versions(dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.request.id, SchemaSet::load().unwrap().request.id);
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
