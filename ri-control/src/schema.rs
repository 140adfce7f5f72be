//! Argument schemas: a small, strict subset of JSON Schema.
//!
//! A command's schema is `null` (the command takes no arguments) or an
//! object schema:
//!
//! ```json
//! {"type": "object",
//!  "properties": {"n": {"type": "integer", "minimum": 1, "description": "..."}},
//!  "required": ["n"],
//!  "additionalProperties": false}
//! ```
//!
//! Supported keywords: `type` (a name or a list of names among `string`,
//! `integer`, `number`, `boolean`, `object`, `array`, `null`), `properties`,
//! `required`, `additionalProperties` (a boolean; **defaults to false**, unlike
//! JSON Schema, so that a misspelt argument is an error rather than
//! silently ignored), `items`, `enum`, `minimum`, `maximum`, `default` (filled
//! in before the handler runs), and the annotations `description` and
//! `title`. Any other keyword is rejected at registration, so nobody believes
//! a constraint is enforced when it is not.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

/// Maximum nesting depth of a schema.
const MAX_DEPTH: usize = 16;

/// A schema that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema text is not JSON.
    #[error("schema is not valid JSON: {0}")]
    Json(String),
    /// The top level must describe an object (or be null).
    #[error("the top-level schema must be null or {{\"type\": \"object\", ...}}")]
    TopLevelNotObject,
    /// A schema node is not a JSON object.
    #[error("{path}: a schema must be a JSON object")]
    NotAnObject {
        /// Where in the schema.
        path: String,
    },
    /// A keyword this subset does not implement.
    #[error("{path}: unsupported schema keyword {key:?}")]
    UnknownKeyword {
        /// Where in the schema.
        path: String,
        /// The keyword.
        key: String,
    },
    /// A type name that is not one of the seven JSON types.
    #[error("{path}: unknown type {name:?}")]
    UnknownType {
        /// Where in the schema.
        path: String,
        /// The offending name.
        name: String,
    },
    /// A keyword with a value of the wrong shape.
    #[error("{path}: {key:?} must be {expected}")]
    BadKeyword {
        /// Where in the schema.
        path: String,
        /// The keyword.
        key: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// `required` names a property that `properties` does not declare.
    #[error("{path}: required property {name:?} is not declared in \"properties\"")]
    UndeclaredRequired {
        /// Where in the schema.
        path: String,
        /// The property.
        name: String,
    },
    /// A `default` that its own schema rejects.
    #[error("{path}: default does not match the schema: {reason}")]
    BadDefault {
        /// Where in the schema.
        path: String,
        /// Why.
        reason: String,
    },
    /// Nested too deeply.
    #[error("schema nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Arguments that do not match a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A required argument is absent.
    #[error("missing required argument {path}")]
    Missing {
        /// Path of the argument, e.g. `args.n`.
        path: String,
    },
    /// An argument the schema does not declare.
    #[error("unexpected argument {path}")]
    Unexpected {
        /// Path of the argument.
        path: String,
    },
    /// A value of the wrong JSON type.
    #[error("{path} must be {expected}, got {found}")]
    WrongType {
        /// Path of the value.
        path: String,
        /// Allowed types.
        expected: String,
        /// Actual type.
        found: &'static str,
    },
    /// A value outside its `enum`.
    #[error("{path} must be one of {allowed}")]
    NotInEnum {
        /// Path of the value.
        path: String,
        /// The allowed values, as JSON.
        allowed: String,
    },
    /// A number outside `minimum`/`maximum`.
    #[error("{path} must be {bound}")]
    OutOfRange {
        /// Path of the value.
        path: String,
        /// The violated bound, e.g. `>= 1`.
        bound: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
    Null,
}

impl JsonType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => JsonType::String,
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "null" => JsonType::Null,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Null => "null",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match (self, v) {
            (JsonType::String, Value::String(_)) => true,
            (JsonType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (JsonType::Number, Value::Number(_)) => true,
            (JsonType::Boolean, Value::Bool(_)) => true,
            (JsonType::Object, Value::Object(_)) => true,
            (JsonType::Array, Value::Array(_)) => true,
            (JsonType::Null, Value::Null) => true,
            _ => false,
        }
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[derive(Debug, Clone, Default)]
struct ObjectRules {
    properties: BTreeMap<String, Node>,
    required: Vec<String>,
    additional: bool,
}

#[derive(Debug, Clone, Default)]
struct Node {
    types: Vec<JsonType>,
    enumeration: Option<Vec<Value>>,
    minimum: Option<Number>,
    maximum: Option<Number>,
    default: Option<Value>,
    items: Option<Box<Node>>,
    object: Option<ObjectRules>,
}

const KEYWORDS: [&str; 11] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "default",
    "description",
    "title",
];

/// A validated argument schema.
#[derive(Debug, Clone)]
pub struct Schema {
    raw: Value,
    rules: Option<ObjectRules>,
}

impl Schema {
    /// The schema of a command without arguments.
    pub fn none() -> Self {
        Schema {
            raw: Value::Null,
            rules: None,
        }
    }

    /// Checks and compiles a schema value.
    pub fn parse(raw: &Value) -> Result<Self, SchemaError> {
        if raw.is_null() {
            return Ok(Schema::none());
        }
        let node = parse_node(raw, "schema", 0)?;
        if node.types != [JsonType::Object] {
            return Err(SchemaError::TopLevelNotObject);
        }
        if node.default.is_some() || node.enumeration.is_some() {
            return Err(SchemaError::TopLevelNotObject);
        }
        Ok(Schema {
            raw: raw.clone(),
            rules: Some(node.object.unwrap_or_default()),
        })
    }

    /// Parses a schema given as JSON text (used by the C API).
    pub fn parse_str(text: &str) -> Result<Self, SchemaError> {
        let v: Value = serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        Schema::parse(&v)
    }

    /// The schema as given at registration.
    pub fn as_json(&self) -> &Value {
        &self.raw
    }

    /// Validates `args` and returns them with defaults filled in.
    pub fn validate(&self, args: &Map<String, Value>) -> Result<Map<String, Value>, ArgsError> {
        match &self.rules {
            None => match args.keys().next() {
                Some(k) => Err(ArgsError::Unexpected {
                    path: format!("args.{k} (this command takes no arguments)"),
                }),
                None => Ok(Map::new()),
            },
            Some(rules) => validate_object(rules, args, "args"),
        }
    }
}

fn parse_node(v: &Value, path: &str, depth: usize) -> Result<Node, SchemaError> {
    if depth > MAX_DEPTH {
        return Err(SchemaError::TooDeep);
    }
    let Value::Object(obj) = v else {
        return Err(SchemaError::NotAnObject { path: path.into() });
    };
    if let Some(k) = obj.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
        return Err(SchemaError::UnknownKeyword {
            path: path.into(),
            key: k.clone(),
        });
    }
    let bad = |key: &str, expected: &'static str| SchemaError::BadKeyword {
        path: path.into(),
        key: key.into(),
        expected,
    };
    let mut node = Node::default();
    match obj.get("type") {
        None => {}
        Some(Value::String(s)) => node.types.push(parse_type(s, path)?),
        Some(Value::Array(list)) if !list.is_empty() => {
            for t in list {
                let Value::String(s) = t else {
                    return Err(bad("type", "a type name or a non-empty list of them"));
                };
                node.types.push(parse_type(s, path)?);
            }
        }
        Some(_) => return Err(bad("type", "a type name or a non-empty list of them")),
    }
    for t in ["description", "title"] {
        if let Some(x) = obj.get(t)
            && !x.is_string()
        {
            return Err(bad(t, "a string"));
        }
    }
    for key in ["minimum", "maximum"] {
        match obj.get(key) {
            None => {}
            Some(Value::Number(n)) => {
                if key == "minimum" {
                    node.minimum = Some(n.clone());
                } else {
                    node.maximum = Some(n.clone());
                }
            }
            Some(_) => return Err(bad(key, "a number")),
        }
    }
    match obj.get("enum") {
        None => {}
        Some(Value::Array(list)) if !list.is_empty() => node.enumeration = Some(list.clone()),
        Some(_) => return Err(bad("enum", "a non-empty array")),
    }
    if let Some(items) = obj.get("items") {
        node.items = Some(Box::new(parse_node(
            items,
            &format!("{path}.items"),
            depth + 1,
        )?));
    }
    let has_object_keys = ["properties", "required", "additionalProperties"]
        .iter()
        .any(|k| obj.contains_key(*k));
    if has_object_keys || node.types == [JsonType::Object] {
        let mut rules = ObjectRules::default();
        match obj.get("properties") {
            None => {}
            Some(Value::Object(props)) => {
                for (name, p) in props {
                    let child = parse_node(p, &format!("{path}.properties.{name}"), depth + 1)?;
                    rules.properties.insert(name.clone(), child);
                }
            }
            Some(_) => return Err(bad("properties", "an object")),
        }
        match obj.get("required") {
            None => {}
            Some(Value::Array(list)) => {
                for r in list {
                    let Value::String(name) = r else {
                        return Err(bad("required", "an array of property names"));
                    };
                    if !rules.properties.contains_key(name) {
                        return Err(SchemaError::UndeclaredRequired {
                            path: path.into(),
                            name: name.clone(),
                        });
                    }
                    rules.required.push(name.clone());
                }
            }
            Some(_) => return Err(bad("required", "an array of property names")),
        }
        match obj.get("additionalProperties") {
            None => {}
            Some(Value::Bool(b)) => rules.additional = *b,
            Some(_) => return Err(bad("additionalProperties", "a boolean")),
        }
        node.object = Some(rules);
    }
    if let Some(d) = obj.get("default") {
        let mut probe = node.clone();
        probe.default = None;
        let checked = validate_value(&probe, d, path).map_err(|e| SchemaError::BadDefault {
            path: path.into(),
            reason: e.to_string(),
        })?;
        node.default = Some(checked);
    }
    Ok(node)
}

fn parse_type(s: &str, path: &str) -> Result<JsonType, SchemaError> {
    JsonType::parse(s).ok_or_else(|| SchemaError::UnknownType {
        path: path.into(),
        name: s.into(),
    })
}

fn validate_object(
    rules: &ObjectRules,
    args: &Map<String, Value>,
    path: &str,
) -> Result<Map<String, Value>, ArgsError> {
    let mut out = Map::new();
    for (k, v) in args {
        let child_path = format!("{path}.{k}");
        match rules.properties.get(k) {
            Some(node) => {
                out.insert(k.clone(), validate_value(node, v, &child_path)?);
            }
            None if rules.additional => {
                out.insert(k.clone(), v.clone());
            }
            None => return Err(ArgsError::Unexpected { path: child_path }),
        }
    }
    for name in &rules.required {
        if !out.contains_key(name) {
            return Err(ArgsError::Missing {
                path: format!("{path}.{name}"),
            });
        }
    }
    for (name, node) in &rules.properties {
        if let Some(d) = &node.default
            && !out.contains_key(name)
        {
            out.insert(name.clone(), d.clone());
        }
    }
    Ok(out)
}

fn validate_value(node: &Node, v: &Value, path: &str) -> Result<Value, ArgsError> {
    if !node.types.is_empty() && !node.types.iter().any(|t| t.matches(v)) {
        let expected = node
            .types
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" or ");
        return Err(ArgsError::WrongType {
            path: path.into(),
            expected,
            found: type_of(v),
        });
    }
    if let Some(list) = &node.enumeration
        && !list.contains(v)
    {
        return Err(ArgsError::NotInEnum {
            path: path.into(),
            allowed: Value::Array(list.clone()).to_string(),
        });
    }
    if let Value::Number(n) = v {
        if let Some(min) = &node.minimum
            && num_cmp(n, min) == Some(Ordering::Less)
        {
            return Err(ArgsError::OutOfRange {
                path: path.into(),
                bound: format!(">= {min}"),
            });
        }
        if let Some(max) = &node.maximum
            && num_cmp(n, max) == Some(Ordering::Greater)
        {
            return Err(ArgsError::OutOfRange {
                path: path.into(),
                bound: format!("<= {max}"),
            });
        }
    }
    match v {
        Value::Array(items) => match &node.items {
            Some(item_node) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(validate_value(item_node, item, &format!("{path}[{i}]"))?);
                }
                Ok(Value::Array(out))
            }
            None => Ok(v.clone()),
        },
        Value::Object(map) => match &node.object {
            Some(rules) => Ok(Value::Object(validate_object(rules, map, path)?)),
            None => Ok(v.clone()),
        },
        _ => Ok(v.clone()),
    }
}

/// Compares two JSON numbers exactly when both are integers.
fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn validates_required_and_types() {
        let s = Schema::parse(&json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 10},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["n"]
        }))
        .unwrap();
        let out = s.validate(&obj(json!({"n": 3}))).unwrap();
        assert_eq!(out["mode"], "a");
        assert!(matches!(
            s.validate(&obj(json!({}))),
            Err(ArgsError::Missing { .. })
        ));
        assert!(matches!(
            s.validate(&obj(json!({"n": "3"}))),
            Err(ArgsError::WrongType { .. })
        ));
        assert!(matches!(
            s.validate(&obj(json!({"n": 1.5}))),
            Err(ArgsError::WrongType { .. })
        ));
        assert!(matches!(
            s.validate(&obj(json!({"n": 11}))),
            Err(ArgsError::OutOfRange { .. })
        ));
        assert!(matches!(
            s.validate(&obj(json!({"n": 2, "mode": "c"}))),
            Err(ArgsError::NotInEnum { .. })
        ));
        assert!(matches!(
            s.validate(&obj(json!({"n": 2, "nn": 1}))),
            Err(ArgsError::Unexpected { .. })
        ));
        assert!(matches!(
            s.validate(&obj(json!({"n": 2, "tags": ["x", 1]}))),
            Err(ArgsError::WrongType { .. })
        ));
    }

    #[test]
    fn rejects_bad_schemas() {
        assert!(Schema::parse(&json!({"type": "string"})).is_err());
        assert!(Schema::parse(&json!({"type": "object", "pattern": "x"})).is_err());
        assert!(Schema::parse(&json!({"type": "object", "required": ["x"]})).is_err());
        assert!(
            Schema::parse(&json!({"type": "object", "properties": {"x": {"type": "wat"}}}))
                .is_err()
        );
        assert!(
            Schema::parse(
                &json!({"type": "object", "properties": {"x": {"type": "integer", "default": "s"}}})
            )
            .is_err()
        );
    }

    #[test]
    fn null_schema_means_no_args() {
        let s = Schema::none();
        assert!(s.validate(&Map::new()).is_ok());
        assert!(s.validate(&obj(json!({"a": 1}))).is_err());
    }
}
