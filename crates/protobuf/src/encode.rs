//! JSON -> protobuf.

use base64::Engine as _;
use serde_json::Value;

use crate::gotime;
use crate::path::Path;
use crate::schema::{self, Field, Shape, Special, Ty};
use crate::wire::{put_bytes, put_key, put_uint};
use crate::{ProtobufError, MAX_DEPTH};

fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn mismatch(path: &Path, expected: &'static str, found: &Value) -> ProtobufError {
    ProtobufError::TypeMismatch {
        path: path.render(),
        expected,
        found: json_type(found),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::InvalidValue {
        path: path.render(),
        reason: reason.into(),
    }
}

/// Appends the body of message `index` built from `value` to `out`.
pub(crate) fn encode_message(
    index: u16,
    value: &Value,
    path: &Path,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep {
            path: path.render(),
            limit: MAX_DEPTH,
        });
    }
    let msg = schema::message(index);
    if msg.special != Special::None {
        return encode_special(msg.special, msg.fields, value, path, depth, out);
    }
    let Value::Object(obj) = value else {
        return Err(mismatch(path, "object", value));
    };
    for field in msg.fields {
        if field.json.is_empty() {
            // Go embedded struct: built from this same object's keys.
            if let Ty::Msg(sub) = field.ty {
                let mut buf = Vec::new();
                encode_message(sub, value, path, depth + 1, &mut buf)?;
                if !buf.is_empty() {
                    put_bytes(out, field.tag, &buf);
                }
            }
            continue;
        }
        let Some(v) = obj.get(field.json) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        let fpath = path.key(field.json);
        match field.shape {
            Shape::One => encode_single(field, field.tag, v, &fpath, depth, out)?,
            Shape::Rep => {
                let Value::Array(items) = v else {
                    return Err(mismatch(&fpath, "array", v));
                };
                for (i, item) in items.iter().enumerate() {
                    let p = fpath.index(i);
                    if item.is_null() {
                        return Err(mismatch(&p, "non-null list item", item));
                    }
                    encode_single(field, field.tag, item, &p, depth, out)?;
                }
            }
            Shape::Map => {
                let Value::Object(map) = v else {
                    return Err(mismatch(&fpath, "object", v));
                };
                // Go (gogo-protobuf) writes map entries sorted by key.
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for key in keys {
                    let item = &map[key.as_str()];
                    let p = fpath.key(key);
                    let mut entry = Vec::new();
                    put_bytes(&mut entry, 1, key.as_bytes());
                    if item.is_null() {
                        put_bytes(&mut entry, 2, b"");
                    } else {
                        encode_single(field, 2, item, &p, depth, &mut entry)?;
                    }
                    put_bytes(out, field.tag, &entry);
                }
            }
        }
    }
    Ok(())
}

fn as_i64(v: &Value, path: &Path) -> Result<i64, ProtobufError> {
    let Value::Number(n) = v else {
        return Err(mismatch(path, "integer", v));
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => Ok(f as i64),
        _ => Err(mismatch(path, "integer", v)),
    }
}

fn encode_single(
    field: &Field,
    tag: u32,
    v: &Value,
    path: &Path,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    match field.ty {
        Ty::Str => {
            let Value::String(s) = v else {
                return Err(mismatch(path, "string", v));
            };
            put_bytes(out, tag, s.as_bytes());
        }
        Ty::Bytes => {
            let Value::String(s) = v else {
                return Err(mismatch(path, "base64 string", v));
            };
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| invalid(path, format!("invalid base64: {e}")))?;
            put_bytes(out, tag, &b);
        }
        Ty::Bool => {
            let Value::Bool(b) = v else {
                return Err(mismatch(path, "boolean", v));
            };
            put_uint(out, tag, u64::from(*b));
        }
        Ty::I32 => {
            let i = as_i64(v, path)?;
            let i = i32::try_from(i).map_err(|_| invalid(path, format!("{i} overflows int32")))?;
            put_uint(out, tag, i64::from(i) as u64);
        }
        Ty::I64 => {
            let i = as_i64(v, path)?;
            put_uint(out, tag, i as u64);
        }
        Ty::F64 => {
            let Some(f) = v.as_f64() else {
                return Err(mismatch(path, "number", v));
            };
            put_key(out, tag, 1);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Ty::Msg(sub) => {
            let mut buf = Vec::new();
            encode_message(sub, v, path, depth + 1, &mut buf)?;
            put_bytes(out, tag, &buf);
        }
    }
    Ok(())
}

fn sub_message(fields: &[Field], tag: u32) -> Option<u16> {
    fields
        .iter()
        .find(|f| f.tag == tag)
        .and_then(|f| match f.ty {
            Ty::Msg(i) => Some(i),
            _ => None,
        })
}

fn encode_special(
    special: Special,
    fields: &'static [Field],
    v: &Value,
    path: &Path,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    match special {
        Special::None => {}
        Special::Time | Special::MicroTime => {
            let Value::String(s) = v else {
                return Err(mismatch(path, "RFC 3339 time string", v));
            };
            let (seconds, nanos) = gotime::parse_time(s).map_err(|e| invalid(path, e))?;
            put_uint(out, 1, seconds as u64);
            put_uint(out, 2, i64::from(nanos) as u64);
        }
        Special::Duration => {
            let Value::String(s) = v else {
                return Err(mismatch(path, "duration string", v));
            };
            let nanos = gotime::parse_duration(s).map_err(|e| invalid(path, e))?;
            put_uint(out, 1, nanos as u64);
        }
        Special::Quantity => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(mismatch(path, "quantity string", v)),
            };
            put_bytes(out, 1, s.as_bytes());
        }
        Special::IntOrString => match v {
            Value::String(s) => {
                put_uint(out, 1, 1);
                put_uint(out, 2, 0);
                put_bytes(out, 3, s.as_bytes());
            }
            Value::Number(_) => {
                let i = as_i64(v, path)?;
                let i =
                    i32::try_from(i).map_err(|_| invalid(path, format!("{i} overflows int32")))?;
                put_uint(out, 1, 0);
                put_uint(out, 2, i64::from(i) as u64);
                put_bytes(out, 3, b"");
            }
            _ => return Err(mismatch(path, "integer or string", v)),
        },
        Special::RawExtension | Special::FieldsV1 | Special::Json => {
            let raw = serde_json::to_vec(v).map_err(|e| invalid(path, e.to_string()))?;
            put_bytes(out, 1, &raw);
        }
        Special::PropsOrArray | Special::PropsOrStringArray => {
            let schema_msg = sub_message(fields, 1)
                .ok_or_else(|| invalid(path, "schema message missing from the schema table"))?;
            match v {
                Value::Object(_) => {
                    let mut buf = Vec::new();
                    encode_message(schema_msg, v, path, depth + 1, &mut buf)?;
                    put_bytes(out, 1, &buf);
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = path.index(i);
                        if special == Special::PropsOrArray {
                            let mut buf = Vec::new();
                            encode_message(schema_msg, item, &p, depth + 1, &mut buf)?;
                            put_bytes(out, 2, &buf);
                        } else {
                            let Value::String(s) = item else {
                                return Err(mismatch(&p, "string", item));
                            };
                            put_bytes(out, 2, s.as_bytes());
                        }
                    }
                }
                _ => return Err(mismatch(path, "object or array", v)),
            }
        }
        Special::PropsOrBool => {
            let schema_msg = sub_message(fields, 2)
                .ok_or_else(|| invalid(path, "schema message missing from the schema table"))?;
            match v {
                Value::Bool(b) => put_uint(out, 1, u64::from(*b)),
                Value::Object(_) => {
                    put_uint(out, 1, 1);
                    let mut buf = Vec::new();
                    encode_message(schema_msg, v, path, depth + 1, &mut buf)?;
                    put_bytes(out, 2, &buf);
                }
                _ => return Err(mismatch(path, "boolean or object", v)),
            }
        }
        Special::StringList => {
            let Value::Array(items) = v else {
                return Err(mismatch(path, "array of strings", v));
            };
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(mismatch(&path.index(i), "string", item));
                };
                put_bytes(out, 1, s.as_bytes());
            }
        }
    }
    Ok(())
}
