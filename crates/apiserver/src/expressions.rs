//! CEL as the API server evaluates it: the one environment every expression is compiled
//! and run in (CRD validation rules, webhook match conditions, admission policies), the
//! JSON values bound to its variables, and its results turned back into JSON.
//!
//! Expressions are compiled once per source text ([`compile`]). The mutations of a
//! MutatingAdmissionPolicy compile with upstream's extra types ([`compile_mutation`]):
//! they build objects with `Object{spec: Object.spec{replicas: 3}}` and JSON patches with
//! `JSONPatch{op: "add", path: "/x", value: 1}`, and may call `jsonpatch.escapeKey`. The
//! `cel` crate constructs only struct types registered with an environment, and the
//! `Object` types are named by the field path they build (`Object.spec.template`), so
//! such an expression's environment registers every type name its literals use; names
//! other than those are refused when it is compiled, as upstream's type check refuses
//! them.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::common::types::{CelString, CelStruct, Type};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, IdedExpr, Program};
use serde_json::{json, Map, Value};

/// The root of the types an apply configuration builds.
pub(crate) const OBJECT: &str = "Object";
/// The type of one operation of a JSON patch.
pub(crate) const JSON_PATCH: &str = "JSONPatch";

/// A compiled expression and the environment it runs in.
pub(crate) struct Expression {
    program: Program,
    env: Arc<Env>,
}

/// The standard environment, shared by every expression that builds no struct.
static BASE: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

static COMPILED: LazyLock<crate::crd::Memo<Expression>> = LazyLock::new(crate::crd::Memo::new);
static COMPILED_MUTATIONS: LazyLock<crate::crd::Memo<Expression>> =
    LazyLock::new(crate::crd::Memo::new);

/// Compiles an expression of the standard environment (validation rules, conditions,
/// variables).
pub(crate) fn compile(source: &str) -> Result<Arc<Expression>, String> {
    COMPILED.get(source, |s| {
        let program = Program::compile(s).map_err(|e| e.to_string())?;
        Ok(Expression {
            program,
            env: BASE.clone(),
        })
    })
}

/// Compiles a mutation of a MutatingAdmissionPolicy: the standard environment with the
/// `Object` and `JSONPatch` types and the `jsonpatch` functions.
pub(crate) fn compile_mutation(source: &str) -> Result<Arc<Expression>, String> {
    COMPILED_MUTATIONS.get(source, |s| {
        let program = Program::compile(s).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        struct_names(program.expression(), &mut names);
        let mut env = Env::stdlib();
        for name in names {
            if name != OBJECT && !name.starts_with("Object.") && name != JSON_PATCH {
                return Err(format!("undeclared reference to '{name}'"));
            }
            if env.types().find_struct(&name).is_none() {
                let constructible = Constructible {
                    r#type: Type::new_struct(name),
                };
                env.add_type(constructible).map_err(|e| e.to_string())?;
            }
        }
        env.add_overload(
            "jsonpatch.escapeKey",
            "jsonpatch_escape_key_string",
            vec![cel::common::types::STRING_TYPE],
            escape_key,
        )
        .map_err(|e| e.to_string())?;
        Ok(Expression {
            program,
            env: Arc::new(env),
        })
    })
}

impl Expression {
    /// Whether the expression names the variable `name`.
    pub(crate) fn names_variable(&self, name: &str) -> bool {
        self.program.references().has_variable(name)
    }

    /// Runs the expression with JSON values bound to names (`self`, `object`, `request`, …).
    pub(crate) fn run(&self, vars: &[(&str, &Value)]) -> Result<cel::Value, String> {
        let mut context = Context::with_env(self.env.clone());
        for (name, value) in vars {
            let value = cel::to_value(Signed(value)).map_err(|e| e.to_string())?;
            context
                .add_variable(*name, value)
                .map_err(|e| e.to_string())?;
        }
        self.program.execute(&context).map_err(|e| e.to_string())
    }
}

/// The type names of every struct literal in `expr`.
fn struct_names(expr: &IdedExpr, names: &mut Vec<String>) {
    match &expr.expr {
        Expr::Struct(literal) => {
            names.push(literal.type_name.clone());
            for entry in &literal.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => struct_names(&field.value, names),
                    EntryExpr::MapEntry(entry) => {
                        struct_names(&entry.key, names);
                        struct_names(&entry.value, names);
                    }
                }
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                struct_names(target, names);
            }
            for arg in &call.args {
                struct_names(arg, names);
            }
        }
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                struct_names(part, names);
            }
        }
        Expr::List(list) => {
            for element in &list.elements {
                struct_names(element, names);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(entry) = &entry.expr {
                    struct_names(&entry.key, names);
                    struct_names(&entry.value, names);
                }
            }
        }
        Expr::Select(select) => struct_names(&select.operand, names),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// A struct type any field may be set on, as upstream's `Object` types are without a
/// schema; `JSONPatch` takes only its four fields, `op`, `path` and `from` strings.
struct Constructible {
    r#type: Type,
}

impl cel::StructType for Constructible {
    fn get_type(&self) -> &Type {
        &self.r#type
    }

    fn new_value<'b, 'v>(
        &self,
        fields: BTreeMap<String, CowVal<'b, 'v>>,
    ) -> Result<Box<dyn Val + 'v>, ExecutionError> {
        let name = self.r#type.name();
        if name == JSON_PATCH {
            for (field, value) in &fields {
                match field.as_str() {
                    "op" | "path" | "from" => {
                        if value.as_ref().downcast_ref::<CelString>().is_none() {
                            return Err(ExecutionError::function_error(
                                JSON_PATCH,
                                format!(
                                    "unexpected type {} for JSONPatchType '{field}' field",
                                    value.get_type().name()
                                ),
                            ));
                        }
                    }
                    "value" => {}
                    other => {
                        return Err(ExecutionError::function_error(
                            JSON_PATCH,
                            format!("unexpected JSONPatchType field: {other}"),
                        ))
                    }
                }
            }
        }
        let mut value = CelStruct::new(name.to_string());
        for (field, v) in fields {
            value.add_field_value(field, v);
        }
        Ok(Box::new(value))
    }
}

/// `jsonpatch.escapeKey`: a key as one segment of a JSON pointer (RFC 6901).
fn escape_key<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let key = args
        .first()
        .and_then(|a| a.as_ref().downcast_ref::<CelString>())
        .map(|s| s.inner().replace('~', "~0").replace('/', "~1"))
        .ok_or_else(|| {
            ExecutionError::function_error("jsonpatch.escapeKey", "expects one string")
        })?;
    Ok(CowVal::owned(CelString::from(key)))
}

/// A CEL value as JSON: maps with string keys become objects, structs (`Object{…}`)
/// objects of their fields.
pub(crate) fn to_json(value: &cel::Value) -> Result<Value, String> {
    Ok(match value {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => json!(b),
        cel::Value::Int(i) => json!(i),
        cel::Value::UInt(u) => json!(u),
        cel::Value::Float(f) => json!(f),
        cel::Value::String(s) => json!(s.as_str()),
        cel::Value::List(list) => Value::Array(list.iter().map(to_json).collect::<Result<_, _>>()?),
        cel::Value::Map(map) => {
            let mut out = Map::new();
            for (key, value) in map.map.iter() {
                let key = match key {
                    cel::objects::Key::String(s) => s.to_string(),
                    other => return Err(format!("map key {other:?} is not a string")),
                };
                out.insert(key, to_json(value)?);
            }
            Value::Object(out)
        }
        cel::Value::Struct(s) => {
            let mut out = Map::new();
            for (field, v) in s.field_values() {
                let v = cel::Value::try_from(v.as_ref()).map_err(|e| e.to_string())?;
                out.insert(field, to_json(&v)?);
            }
            Value::Object(out)
        }
        other => return Err(format!("{other:?} cannot be represented as JSON")),
    })
}

/// A JSON value as CEL sees a Kubernetes object: integers are `int` (int64), as
/// upstream's are, not the unsigned integers JSON's non-negative numbers would become.
struct Signed<'a>(&'a Value);

impl serde::Serialize for Signed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Number(n) => match n.as_i64() {
                Some(i) => serializer.serialize_i64(i),
                None => n.serialize(serializer),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Signed(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &Signed(v))?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_mutation(source: &str, object: &Value) -> Result<Value, String> {
        let expression = compile_mutation(source)?;
        to_json(&expression.run(&[("object", object)])?)
    }

    #[test]
    fn object_literals_build_json_objects() {
        let built = run_mutation(
            r#"Object{metadata: Object.metadata{annotations: {"mutated-by": "policy"}}, spec: Object.spec{replicas: object.spec.replicas + 1}}"#,
            &json!({"spec": {"replicas": 2}}),
        );
        assert_eq!(
            built,
            Ok(
                json!({"metadata": {"annotations": {"mutated-by": "policy"}}, "spec": {"replicas": 3}})
            )
        );
        let listed = run_mutation(
            "Object{spec: Object.spec{template: Object.spec.template{spec: Object.spec.template.spec{containers: [Object.spec.template.spec.containers{name: 'c'}]}}}}",
            &json!({}),
        );
        assert_eq!(
            listed,
            Ok(json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}))
        );
    }

    #[test]
    fn json_patches_and_escaped_keys() {
        let patch = run_mutation(
            r#"[JSONPatch{op: "add", path: "/metadata/labels/" + jsonpatch.escapeKey("a/b~c"), value: "x"}]"#,
            &json!({}),
        );
        assert_eq!(
            patch,
            Ok(json!([{"op": "add", "path": "/metadata/labels/a~1b~0c", "value": "x"}]))
        );
        let wrong = run_mutation(r#"[JSONPatch{op: "add", where: "/x"}]"#, &json!({}));
        assert!(
            wrong
                .as_ref()
                .is_err_and(|e| e.contains("unexpected JSONPatchType field: where")),
            "{wrong:?}"
        );
        let typed = run_mutation(r#"[JSONPatch{op: 1, path: "/x"}]"#, &json!({}));
        assert!(
            typed
                .as_ref()
                .is_err_and(|e| e.contains("for JSONPatchType 'op' field")),
            "{typed:?}"
        );
    }

    #[test]
    fn only_upstreams_types_are_constructed() {
        let unknown = compile_mutation("Deployment{spec: 1}").err();
        assert_eq!(
            unknown.as_deref(),
            Some("undeclared reference to 'Deployment'")
        );
        // The standard environment builds none of them.
        let plain = compile("Object{spec: 1}").and_then(|e| e.run(&[]));
        assert!(plain.is_err(), "{plain:?}");
        assert_eq!(
            compile("object.spec.replicas > 1")
                .and_then(|e| e.run(&[("object", &json!({"spec": {"replicas": 2}}))])),
            Ok(cel::Value::Bool(true))
        );
    }
}
