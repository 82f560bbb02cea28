//! Protobuf -> JSON.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::gotime;
use crate::path::Path;
use crate::schema::{self, Field, Shape, Special, Ty};
use crate::wire::{Raw, Reader};
use crate::{ProtobufError, MAX_DEPTH};

fn malformed(path: &Path, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::Malformed {
        path: path.render(),
        reason: reason.into(),
    }
}

fn wire_mismatch(path: &Path, expected: &str, raw: &Raw) -> ProtobufError {
    malformed(
        path,
        format!("expected {expected} wire type, found {}", raw.wire_name()),
    )
}

/// Decodes one message into its JSON value; `None` means "omit" (a zero metav1.Time).
pub(crate) fn decode_message(
    index: u16,
    bytes: &[u8],
    path: &Path,
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep {
            path: path.render(),
            limit: MAX_DEPTH,
        });
    }
    let msg = schema::message(index);
    if msg.special != Special::None {
        return decode_special(msg.special, msg.fields, bytes, path, depth);
    }
    let mut obj = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, raw)) = reader.next_field().map_err(|r| malformed(path, r))? {
        let Some(field) = msg.field(tag) else {
            continue; // unknown field: skipped, as proto2 parsers do
        };
        if field.json.is_empty() {
            // Go embedded struct: its fields live in this object.
            let Ty::Msg(sub) = field.ty else { continue };
            let Raw::Bytes(b) = raw else {
                return Err(wire_mismatch(path, "length-delimited", &raw));
            };
            if let Some(Value::Object(m)) = decode_message(sub, b, path, depth + 1)? {
                obj.extend(m);
            }
            continue;
        }
        let fpath = path.key(field.json);
        match field.shape {
            Shape::One => match decode_single(field.ty, raw, &fpath, depth)? {
                Some(v) if field.keep_zero || matches!(field.ty, Ty::Msg(_)) || !is_zero(&v) => {
                    obj.insert(field.json.to_string(), v);
                }
                _ => {
                    obj.remove(field.json);
                }
            },
            Shape::Rep => {
                let entry = obj
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !entry.is_array() {
                    *entry = Value::Array(Vec::new());
                }
                let Value::Array(items) = entry else {
                    continue;
                };
                decode_repeated(field, raw, &fpath, depth, items)?;
            }
            Shape::Map => {
                let entry = obj
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                let Value::Object(map) = entry else {
                    continue;
                };
                let Raw::Bytes(b) = raw else {
                    return Err(wire_mismatch(&fpath, "length-delimited", &raw));
                };
                let (k, v) = decode_map_entry(field.ty, b, &fpath, depth)?;
                map.insert(k, v);
            }
        }
    }
    // Lists always show their items, even when empty.
    for f in msg.fields {
        if f.shape == Shape::Rep && f.keep_zero && f.json == "items" && !obj.contains_key("items") {
            obj.insert("items".into(), Value::Array(Vec::new()));
        }
    }
    Ok(Some(Value::Object(obj)))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn decode_repeated(
    field: &Field,
    raw: Raw,
    path: &Path,
    depth: usize,
    items: &mut Vec<Value>,
) -> Result<(), ProtobufError> {
    let packable = matches!(field.ty, Ty::Bool | Ty::I32 | Ty::I64 | Ty::F64);
    if let (true, Raw::Bytes(b)) = (packable, raw) {
        let mut r = Reader::new(b);
        while !r.at_end() {
            let raw = if field.ty == Ty::F64 {
                Raw::Fixed64(r.fixed64().map_err(|e| malformed(path, e))?)
            } else {
                Raw::Varint(r.varint().map_err(|e| malformed(path, e))?)
            };
            let p = path.index(items.len());
            if let Some(v) = decode_single(field.ty, raw, &p, depth)? {
                items.push(v);
            }
        }
        return Ok(());
    }
    let p = path.index(items.len());
    let v = decode_single(field.ty, raw, &p, depth)?.unwrap_or(Value::Null);
    items.push(v);
    Ok(())
}

fn decode_map_entry(
    ty: Ty,
    bytes: &[u8],
    path: &Path,
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value: Option<Value> = None;
    let mut r = Reader::new(bytes);
    while let Some((tag, raw)) = r.next_field().map_err(|e| malformed(path, e))? {
        match tag {
            1 => {
                let Raw::Bytes(b) = raw else {
                    return Err(wire_mismatch(path, "length-delimited", &raw));
                };
                key = String::from_utf8_lossy(b).into_owned();
            }
            2 => {
                let p = path.key(&key);
                value = Some(decode_single(ty, raw, &p, depth)?.unwrap_or(Value::Null));
            }
            _ => {}
        }
    }
    let value = match value {
        Some(v) => v,
        None => {
            let p = path.key(&key);
            default_value(ty, &p, depth)?
        }
    };
    Ok((key, value))
}

/// The JSON of a field's zero value, for map entries without a value.
fn default_value(ty: Ty, path: &Path, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match ty {
        Ty::Str | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::I32 | Ty::I64 => Value::from(0),
        Ty::F64 => Value::from(0.0),
        Ty::Msg(sub) => decode_message(sub, &[], path, depth + 1)?.unwrap_or(Value::Null),
    })
}

fn decode_single(
    ty: Ty,
    raw: Raw,
    path: &Path,
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    Ok(Some(match (ty, raw) {
        (Ty::Str, Raw::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Ty::Bytes, Raw::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Ty::Bool, Raw::Varint(v)) => Value::Bool(v != 0),
        (Ty::I32, Raw::Varint(v)) => Value::from(v as i64 as i32),
        (Ty::I64, Raw::Varint(v)) => Value::from(v as i64),
        (Ty::F64, Raw::Fixed64(v)) => Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (Ty::Msg(sub), Raw::Bytes(b)) => return decode_message(sub, b, path, depth + 1),
        (Ty::Str | Ty::Bytes | Ty::Msg(_), raw) => {
            return Err(wire_mismatch(path, "length-delimited", &raw))
        }
        (Ty::Bool | Ty::I32 | Ty::I64, raw) => return Err(wire_mismatch(path, "varint", &raw)),
        (Ty::F64, raw) => return Err(wire_mismatch(path, "fixed64", &raw)),
    }))
}

/// The last value of each of the first few tags of a small message.
fn scalars<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<(u32, Raw<'a>)>, ProtobufError> {
    let mut out: Vec<(u32, Raw<'a>)> = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some((tag, raw)) = r.next_field().map_err(|e| malformed(path, e))? {
        out.push((tag, raw));
    }
    Ok(out)
}

fn last<'a>(fields: &[(u32, Raw<'a>)], tag: u32) -> Option<Raw<'a>> {
    fields
        .iter()
        .rev()
        .find(|(t, _)| *t == tag)
        .map(|(_, r)| *r)
}

fn varint_of(fields: &[(u32, Raw)], tag: u32, path: &Path) -> Result<u64, ProtobufError> {
    match last(fields, tag) {
        None => Ok(0),
        Some(Raw::Varint(v)) => Ok(v),
        Some(raw) => Err(wire_mismatch(path, "varint", &raw)),
    }
}

fn bytes_of<'a>(
    fields: &[(u32, Raw<'a>)],
    tag: u32,
    path: &Path,
) -> Result<Option<&'a [u8]>, ProtobufError> {
    match last(fields, tag) {
        None => Ok(None),
        Some(Raw::Bytes(b)) => Ok(Some(b)),
        Some(raw) => Err(wire_mismatch(path, "length-delimited", &raw)),
    }
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

fn embedded_json(bytes: Option<&[u8]>, path: &Path, depth: usize) -> Result<Value, ProtobufError> {
    let Some(b) = bytes else {
        return Ok(Value::Null);
    };
    if b.is_empty() {
        return Ok(Value::Null);
    }
    if b.starts_with(crate::MAGIC) {
        // An embedded protobuf object (watch events carry one).
        return crate::decode_at(b, path, depth + 1);
    }
    serde_json::from_slice(b).map_err(|e| ProtobufError::InvalidValue {
        path: path.render(),
        reason: format!("embedded raw bytes are neither JSON nor protobuf: {e}"),
    })
}

fn decode_special(
    special: Special,
    fields: &'static [Field],
    bytes: &[u8],
    path: &Path,
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let f = scalars(bytes, path)?;
    let invalid = |reason: String| ProtobufError::InvalidValue {
        path: path.render(),
        reason,
    };
    Ok(Some(match special {
        Special::None => return Ok(None),
        Special::Time | Special::MicroTime => {
            if bytes.is_empty() {
                return Ok(None);
            }
            let seconds = varint_of(&f, 1, path)? as i64;
            let nanos = varint_of(&f, 2, path)? as i64 as i32;
            if seconds == gotime::GO_ZERO_UNIX && (nanos == 0 || special == Special::Time) {
                return Ok(None);
            }
            let s = if special == Special::Time {
                gotime::format_time(seconds)
            } else {
                gotime::format_micro_time(seconds, nanos)
            };
            Value::String(s.map_err(invalid)?)
        }
        Special::Duration => Value::String(gotime::format_duration(varint_of(&f, 1, path)? as i64)),
        Special::Quantity => {
            let s = bytes_of(&f, 1, path)?.unwrap_or_default();
            let s = String::from_utf8_lossy(s);
            Value::String(if s.is_empty() {
                "0".into()
            } else {
                s.into_owned()
            })
        }
        Special::IntOrString => {
            if varint_of(&f, 1, path)? == 1 {
                let s = bytes_of(&f, 3, path)?.unwrap_or_default();
                Value::String(String::from_utf8_lossy(s).into_owned())
            } else {
                Value::from(varint_of(&f, 2, path)? as i64 as i32)
            }
        }
        Special::RawExtension | Special::FieldsV1 | Special::Json => {
            embedded_json(bytes_of(&f, 1, path)?, path, depth)?
        }
        Special::PropsOrArray | Special::PropsOrBool | Special::PropsOrStringArray => {
            let (schema_tag, other_tag) = match special {
                Special::PropsOrBool => (2, 1),
                _ => (1, 2),
            };
            let schema_msg = sub_message(fields, schema_tag)
                .ok_or_else(|| invalid("schema message missing from the schema table".into()))?;
            let decode_schema = |b: &[u8], p: &Path| -> Result<Value, ProtobufError> {
                Ok(decode_message(schema_msg, b, p, depth + 1)?.unwrap_or(Value::Null))
            };
            match special {
                Special::PropsOrBool => match bytes_of(&f, 2, path)? {
                    Some(b) => decode_schema(b, path)?,
                    None => Value::Bool(varint_of(&f, 1, path)? != 0),
                },
                _ => {
                    let mut items = Vec::new();
                    for (tag, raw) in &f {
                        if *tag != other_tag {
                            continue;
                        }
                        let Raw::Bytes(b) = raw else {
                            return Err(wire_mismatch(path, "length-delimited", raw));
                        };
                        let p = path.index(items.len());
                        items.push(if special == Special::PropsOrArray {
                            decode_schema(b, &p)?
                        } else {
                            Value::String(String::from_utf8_lossy(b).into_owned())
                        });
                    }
                    if !items.is_empty() {
                        Value::Array(items)
                    } else if let Some(b) = bytes_of(&f, 1, path)? {
                        decode_schema(b, path)?
                    } else {
                        Value::Null
                    }
                }
            }
        }
        Special::StringList => {
            let mut items = Vec::new();
            for (tag, raw) in &f {
                if *tag != 1 {
                    continue;
                }
                let Raw::Bytes(b) = raw else {
                    return Err(wire_mismatch(path, "length-delimited", raw));
                };
                items.push(Value::String(String::from_utf8_lossy(b).into_owned()));
            }
            Value::Array(items)
        }
    }))
}
