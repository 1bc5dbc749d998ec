//! A small JSON Schema validator for the subset schemars emits (draft 2020-12: `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`, `anyOf`, `oneOf`,
//! `allOf`, local `$ref`s into `$defs`, numeric bounds), so every tool's `structuredContent` can
//! be checked against its `outputSchema` without a heavy dependency.
//!
//! A keyword outside that subset is an error, never ignored: a schema this validator does not
//! understand fails the test instead of passing unchecked.

use serde_json::{Map, Value};

/// Keywords that only annotate; they constrain nothing.
const ANNOTATIONS: [&str; 7] = [
    "description",
    "title",
    "format",
    "default",
    "examples",
    "$defs",
    "$schema",
];

/// The places where `value` breaks `schema` (empty when it conforms), as `path: problem`.
pub fn violations(schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(schema, schema, value, "$", &mut found);
    found
}

fn check(root: &Value, schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            found.push(format!("{path}: no value is allowed here"));
            return;
        }
        Value::Object(schema) => schema,
        other => {
            found.push(format!("{path}: the schema {other} is not a schema"));
            return;
        }
    };
    for (keyword, argument) in schema {
        match keyword.as_str() {
            "type" => check_type(argument, value, path, found),
            "properties" | "required" | "additionalProperties" => {}
            "items" => {
                if let Value::Array(items) = value {
                    for (index, item) in items.iter().enumerate() {
                        check(root, argument, item, &format!("{path}[{index}]"), found);
                    }
                }
            }
            "enum" => {
                if !argument
                    .as_array()
                    .is_some_and(|allowed| allowed.contains(value))
                {
                    found.push(format!("{path}: {value} is not one of {argument}"));
                }
            }
            "const" => {
                if argument != value {
                    found.push(format!("{path}: {value} is not {argument}"));
                }
            }
            "anyOf" | "oneOf" => {
                let matching = alternatives(argument)
                    .filter(|alternative| violations_at(root, alternative, value).is_empty())
                    .count();
                let fits = if keyword == "oneOf" {
                    matching == 1
                } else {
                    matching >= 1
                };
                if !fits {
                    found.push(format!(
                        "{path}: {value} matches {matching} of the {keyword} alternatives"
                    ));
                }
            }
            "allOf" => {
                for alternative in alternatives(argument) {
                    check(root, alternative, value, path, found);
                }
            }
            "$ref" => match argument.as_str().and_then(|target| resolve(root, target)) {
                Some(target) => check(root, target, value, path, found),
                None => found.push(format!("{path}: cannot resolve $ref {argument}")),
            },
            "minimum" | "maximum" => {
                if let (Some(number), Some(bound)) = (value.as_f64(), argument.as_f64()) {
                    let outside = if keyword == "minimum" {
                        number < bound
                    } else {
                        number > bound
                    };
                    if outside {
                        found.push(format!("{path}: {number} is beyond the {keyword} {bound}"));
                    }
                }
            }
            annotation if ANNOTATIONS.contains(&annotation) => {}
            unknown => found.push(format!(
                "{path}: the keyword `{unknown}` is outside what this validator checks"
            )),
        }
    }
    if let Value::Object(object) = value {
        check_object(root, schema, object, path, found);
    }
}

fn check_object(
    root: &Value,
    schema: &Map<String, Value>,
    object: &Map<String, Value>,
    path: &str,
    found: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !object.contains_key(required) {
            found.push(format!("{path}: the required `{required}` is missing"));
        }
    }
    for (name, field) in object {
        let field_path = format!("{path}.{name}");
        match properties.and_then(|properties| properties.get(name)) {
            Some(field_schema) => check(root, field_schema, field, &field_path, found),
            None => {
                if let Some(additional) = schema.get("additionalProperties") {
                    check(root, additional, field, &field_path, found);
                }
            }
        }
    }
}

fn check_type(argument: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let names: Vec<&str> = match argument {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !names.iter().any(|name| is_of_type(value, name)) {
        found.push(format!("{path}: {value} is not of type {argument}"));
    }
}

fn is_of_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
        }
        _ => false,
    }
}

fn alternatives(argument: &Value) -> impl Iterator<Item = &Value> {
    argument.as_array().into_iter().flatten()
}

fn violations_at(root: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(root, schema, value, "$", &mut found);
    found
}

/// A local reference such as `#/$defs/AlertItem`.
fn resolve<'a>(root: &'a Value, target: &str) -> Option<&'a Value> {
    let pointer = target.strip_prefix('#')?;
    root.pointer(pointer)
}

#[test]
fn the_validator_catches_what_it_should() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "count": { "type": "integer", "minimum": 0 },
            "state": { "type": ["string", "null"], "enum": ["on", "off", null] },
            "items": { "type": "array", "items": { "$ref": "#/$defs/Item" } },
            "peak": { "anyOf": [{ "$ref": "#/$defs/Item" }, { "type": "null" }] }
        },
        "required": ["name", "count", "state", "items", "peak"],
        "$defs": { "Item": { "type": "object", "properties": { "at": { "type": "string" } }, "required": ["at"] } }
    });
    let good = serde_json::json!({ "name": "a", "count": 1, "state": null, "items": [{ "at": "x" }], "peak": null });
    assert_eq!(violations(&schema, &good), Vec::<String>::new());
    let check = |value: Value, expected: &str| {
        let found = violations(&schema, &value).join("; ");
        assert!(
            found.contains(expected),
            "{expected:?} missing from {found:?}"
        );
    };
    check(
        serde_json::json!({ "name": 1, "count": 1, "state": "on", "items": [], "peak": null }),
        "$.name",
    );
    check(
        serde_json::json!({ "name": "a", "count": -1, "state": "on", "items": [], "peak": null }),
        "minimum",
    );
    check(
        serde_json::json!({ "name": "a", "count": 1, "state": "dim", "items": [], "peak": null }),
        "not one of",
    );
    check(
        serde_json::json!({ "name": "a", "count": 1, "state": "on", "items": [{}], "peak": null }),
        "$.items[0]: the required `at`",
    );
    check(
        serde_json::json!({ "name": "a", "count": 1, "state": "on", "items": [], "peak": 3 }),
        "anyOf",
    );
    check(serde_json::json!({ "name": "a" }), "the required `count`");
    let unknown = serde_json::json!({ "type": "string", "pattern": "^a" });
    assert!(violations(&unknown, &serde_json::json!("a"))[0].contains("`pattern`"));
}
