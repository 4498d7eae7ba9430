//! A zero-allocation structural check of one Avro binary datum.
//!
//! arrow-avro's streaming decoder appends to its column builders field by
//! field, so a message that fails half-way leaves the builders out of step and
//! poisons every row of the batch. Checking each message first, and feeding
//! only messages that are exactly one well-formed datum, lets one bad message
//! go to the DLQ while its neighbours decode normally.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};

/// The shape of a schema, as far as the binary encoding is concerned.
#[derive(Debug, Clone)]
pub enum Shape {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(usize),
    Array(Box<Shape>),
    Map(Box<Shape>),
    Union(Vec<Shape>),
    Record(Vec<Shape>),
}

/// Deeper nesting than this is rejected rather than risking the stack.
const MAX_DEPTH: usize = 64;

impl Shape {
    pub fn compile(schema: &Schema) -> Result<Shape, String> {
        let mut names = HashMap::new();
        collect_names(schema, &mut names);
        compile(schema, &names, 0)
    }
}

fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<Name, &'a Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

fn compile(schema: &Schema, names: &HashMap<Name, &Schema>, depth: usize) -> Result<Shape, String> {
    if depth > MAX_DEPTH {
        return Err("schema nests too deeply (recursive types are not supported)".into());
    }
    let d = depth + 1;
    Ok(match schema {
        Schema::Null => Shape::Null,
        Schema::Boolean => Shape::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Shape::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Shape::Long,
        Schema::Float => Shape::Float,
        Schema::Double => Shape::Double,
        Schema::Bytes | Schema::BigDecimal => Shape::Bytes,
        Schema::String | Schema::Uuid => Shape::String,
        Schema::Duration => Shape::Fixed(12),
        Schema::Fixed(f) => Shape::Fixed(f.size),
        Schema::Decimal(dec) => compile(&dec.inner, names, d)?,
        Schema::Enum(e) => Shape::Enum(e.symbols.len()),
        Schema::Array(a) => Shape::Array(Box::new(compile(&a.items, names, d)?)),
        Schema::Map(m) => Shape::Map(Box::new(compile(&m.types, names, d)?)),
        Schema::Union(u) => Shape::Union(
            u.variants()
                .iter()
                .map(|v| compile(v, names, d))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Record(r) => Shape::Record(
            r.fields
                .iter()
                .map(|f| compile(&f.schema, names, d))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Ref { name } => {
            let target = names
                .get(name)
                .ok_or_else(|| format!("unresolved schema reference {name}"))?;
            compile(target, names, d)?
        }
    })
}

/// Why a datum is not well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Check that `buf` holds exactly one datum of `shape` and nothing after it.
pub fn check_datum(shape: &Shape, buf: &[u8]) -> Result<(), Malformed> {
    let mut cur = Cursor { buf, pos: 0 };
    cur.skip(shape, 0)?;
    if cur.pos != buf.len() {
        return Err(Malformed {
            at: cur.pos,
            what: "trailing bytes after the record",
        });
    }
    Ok(())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn err(&self, what: &'static str) -> Malformed {
        Malformed { at: self.pos, what }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Zig-zag varint, at most 10 bytes.
    fn long(&mut self) -> Result<i64, Malformed> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i32, Malformed> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| self.err("int out of range"))
    }

    fn len(&mut self) -> Result<usize, Malformed> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| self.err("negative length"))
    }

    fn skip(&mut self, shape: &Shape, depth: usize) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        match shape {
            Shape::Null => {}
            Shape::Boolean => match self.take(1)?[0] {
                0 | 1 => {}
                _ => return Err(self.err("boolean byte is neither 0 nor 1")),
            },
            Shape::Int => {
                self.int()?;
            }
            Shape::Long => {
                self.long()?;
            }
            Shape::Float => {
                self.take(4)?;
            }
            Shape::Double => {
                self.take(8)?;
            }
            Shape::Bytes => {
                let n = self.len()?;
                self.take(n)?;
            }
            Shape::String => {
                let n = self.len()?;
                let start = self.pos;
                let s = self.take(n)?;
                if std::str::from_utf8(s).is_err() {
                    return Err(Malformed {
                        at: start,
                        what: "string is not valid UTF-8",
                    });
                }
            }
            Shape::Fixed(n) => {
                self.take(*n)?;
            }
            Shape::Enum(symbols) => {
                let i = self.int()?;
                if i < 0 || i as usize >= *symbols {
                    return Err(self.err("enum index out of range"));
                }
            }
            Shape::Union(branches) => {
                let i = self.long()?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| self.err("union branch out of range"))?;
                self.skip(branch, depth + 1)?;
            }
            Shape::Record(fields) => {
                for f in fields {
                    self.skip(f, depth + 1)?;
                }
            }
            Shape::Array(item) => self.blocks(depth, |c| c.skip(item, depth + 1))?,
            Shape::Map(value) => self.blocks(depth, |c| {
                c.skip(&Shape::String, depth + 1)?;
                c.skip(value, depth + 1)
            })?,
        }
        Ok(())
    }

    /// Arrays and maps: blocks of `count` items, a negative count followed by
    /// the block's byte size, ended by a zero count.
    fn blocks(
        &mut self,
        _depth: usize,
        mut item: impl FnMut(&mut Self) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.long()?;
            }
            let count = count.unsigned_abs();
            // Each item takes at least one byte, except items of null type, so
            // a count beyond the remaining bytes cannot be honest; refusing it
            // also bounds the loop on hostile input.
            if count > (self.buf.len() - self.pos) as u64 + 1 {
                return Err(self.err("array or map block count exceeds message size"));
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn schema() -> Schema {
        Schema::parse_str(
            r#"{"type":"record","name":"T","fields":[
                {"name":"s","type":"string"},
                {"name":"o","type":["null","long"]},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"]}},
                {"name":"xs","type":{"type":"array","items":"int"}},
                {"name":"b","type":"boolean"}]}"#,
        )
        .unwrap()
    }

    fn good() -> Vec<u8> {
        let v = Value::Record(vec![
            ("s".into(), Value::String("héllo".into())),
            ("o".into(), Value::Union(1, Box::new(Value::Long(-7)))),
            ("e".into(), Value::Enum(1, "b".into())),
            (
                "xs".into(),
                Value::Array(vec![Value::Int(1), Value::Int(300)]),
            ),
            ("b".into(), Value::Boolean(true)),
        ]);
        apache_avro::to_avro_datum(&schema(), v).unwrap()
    }

    #[test]
    fn accepts_a_well_formed_datum() {
        let shape = Shape::compile(&schema()).unwrap();
        check_datum(&shape, &good()).unwrap();
    }

    #[test]
    fn rejects_truncation_trailing_bytes_and_bad_values() {
        let shape = Shape::compile(&schema()).unwrap();
        let g = good();
        for cut in 0..g.len() {
            assert!(
                check_datum(&shape, &g[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut trailing = g.clone();
        trailing.push(0);
        assert_eq!(
            check_datum(&shape, &trailing).unwrap_err().what,
            "trailing bytes after the record"
        );
        let mut bad_utf8 = g.clone();
        bad_utf8[1] = 0xff;
        assert!(check_datum(&shape, &bad_utf8).is_err());
        let mut bad_bool = g.clone();
        *bad_bool.last_mut().unwrap() = 7;
        assert!(check_datum(&shape, &bad_bool).is_err());
    }

    #[test]
    fn random_garbage_never_panics() {
        let shape = Shape::compile(&schema()).unwrap();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = check_datum(&shape, &bytes);
        }
    }
}
