//! Checks a model's tool arguments against the tool's input schema before the call, so a
//! malformed or invented argument comes back to the model as a precise message instead of reaching
//! the server. It covers the JSON Schema subset that schemars (through rmcp) emits: `type` (one or
//! several), `required`, `properties`, `additionalProperties`, `enum`, `const`, `minimum` /
//! `maximum` (and the exclusive forms), `minLength` / `maxLength`, `items`, `minItems` /
//! `maxItems`, `anyOf` / `oneOf` / `allOf`, `nullable`, and local `$ref`s into `$defs` or
//! `definitions`. Keywords it does not know are accepted, as JSON Schema says.

use serde_json::{Map, Value};

/// The most errors reported for one call (the model needs the first few, not a hundred).
const MAX_ERRORS: usize = 8;
/// `$ref`s nested deeper than this are refused rather than followed forever.
const MAX_DEPTH: usize = 32;

/// Every way `arguments` breaks `schema`, each naming the argument's path; empty when it fits.
pub(crate) fn validate(schema: &Value, arguments: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, arguments, "arguments", 0, &mut errors);
    errors.truncate(MAX_ERRORS);
    errors
}

fn check(
    root: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    if errors.len() >= MAX_ERRORS {
        return;
    }
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{path}: no value is allowed here"));
            return;
        }
        Value::Object(schema) => schema,
        _ => return,
    };
    if depth > MAX_DEPTH {
        errors.push(format!("{path}: the schema nests too deeply to check"));
        return;
    }
    if let Some(Value::String(reference)) = schema.get("$ref") {
        match resolve(root, reference) {
            Some(target) => check(root, target, value, path, depth + 1, errors),
            None => errors.push(format!(
                "{path}: the tool's schema refers to {reference}, which it does not define"
            )),
        }
    }
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if !check_type(schema, value, path, errors) {
        return;
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        errors.push(format!(
            "{path}: {} is not one of {}",
            short(value),
            short(&Value::Array(allowed.clone()))
        ));
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        errors.push(format!("{path}: must be {}", short(expected)));
    }
    check_combinations(root, schema, value, path, depth, errors);
    match value {
        Value::Number(number) => check_number(schema, number.as_f64().unwrap_or(0.0), path, errors),
        Value::String(text) => check_length(schema, text.chars().count(), path, errors),
        Value::Array(items) => check_items(root, schema, items, path, depth, errors),
        Value::Object(fields) => check_object(root, schema, fields, path, depth, errors),
        _ => {}
    }
}

/// False when the value has the wrong type (then nothing else is worth checking).
fn check_type(
    schema: &Map<String, Value>,
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
) -> bool {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(several)) => several.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    let nullable = schema.get("nullable") == Some(&Value::Bool(true));
    let fits = types.iter().any(|name| type_fits(name, value)) || (nullable && value.is_null());
    if !fits {
        errors.push(format!(
            "{path}: expected {}, got {}",
            types.join(" or "),
            type_name(value)
        ));
    }
    fits
}

fn type_fits(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(number) => {
                number.is_i64()
                    || number.is_u64()
                    || number.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_combinations(
    root: &Value,
    schema: &Map<String, Value>,
    value: &Value,
    path: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    let fitting = |options: &[Value]| {
        options
            .iter()
            .map(|option| {
                let mut found = Vec::new();
                check(root, option, value, path, depth + 1, &mut found);
                found
            })
            .collect::<Vec<_>>()
    };
    for keyword in ["anyOf", "oneOf"] {
        let Some(Value::Array(options)) = schema.get(keyword) else {
            continue;
        };
        let results = fitting(options);
        let matching = results.iter().filter(|found| found.is_empty()).count();
        if matching == 0 {
            // The option closest to fitting explains best what is wrong.
            let closest = results.into_iter().min_by_key(Vec::len).unwrap_or_default();
            errors.extend(closest);
        } else if keyword == "oneOf" && matching > 1 {
            errors.push(format!(
                "{path}: matches more than one of the allowed shapes"
            ));
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for part in all {
            check(root, part, value, path, depth + 1, errors);
        }
    }
}

fn check_number(schema: &Map<String, Value>, number: f64, path: &str, errors: &mut Vec<String>) {
    let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_f64);
    if let Some(minimum) = bound("minimum")
        && number < minimum
    {
        errors.push(format!("{path}: {number} is below the minimum {minimum}"));
    }
    if let Some(maximum) = bound("maximum")
        && number > maximum
    {
        errors.push(format!("{path}: {number} is above the maximum {maximum}"));
    }
    if let Some(minimum) = bound("exclusiveMinimum")
        && number <= minimum
    {
        errors.push(format!("{path}: {number} must be above {minimum}"));
    }
    if let Some(maximum) = bound("exclusiveMaximum")
        && number >= maximum
    {
        errors.push(format!("{path}: {number} must be below {maximum}"));
    }
}

fn check_length(schema: &Map<String, Value>, length: usize, path: &str, errors: &mut Vec<String>) {
    let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_u64);
    if let Some(minimum) = bound("minLength")
        && (length as u64) < minimum
    {
        errors.push(format!("{path}: must have at least {minimum} characters"));
    }
    if let Some(maximum) = bound("maxLength")
        && (length as u64) > maximum
    {
        errors.push(format!("{path}: must have at most {maximum} characters"));
    }
}

fn check_items(
    root: &Value,
    schema: &Map<String, Value>,
    items: &[Value],
    path: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_u64);
    if let Some(minimum) = bound("minItems")
        && (items.len() as u64) < minimum
    {
        errors.push(format!("{path}: must have at least {minimum} items"));
    }
    if let Some(maximum) = bound("maxItems")
        && (items.len() as u64) > maximum
    {
        errors.push(format!("{path}: must have at most {maximum} items"));
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            check(
                root,
                item_schema,
                item,
                &format!("{path}[{index}]"),
                depth + 1,
                errors,
            );
        }
    }
}

fn check_object(
    root: &Value,
    schema: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                errors.push(format!("{path}.{name}: required, but missing"));
            }
        }
    }
    for (name, value) in fields {
        let field_path = format!("{path}.{name}");
        match properties.and_then(|properties| properties.get(name)) {
            Some(property) => check(root, property, value, &field_path, depth + 1, errors),
            None => match schema.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = properties
                        .map(|properties| properties.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    errors.push(format!(
                        "{field_path}: unknown argument (the tool takes: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
                Some(additional @ Value::Object(_)) => {
                    check(root, additional, value, &field_path, depth + 1, errors);
                }
                _ => {}
            },
        }
    }
}

/// A local reference such as `#/$defs/IncidentAction`.
pub(crate) fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

/// A value as a message shows it: its JSON, cut short.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((byte, _)) => format!("{}…", &text[..byte]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::{Value, json};

    /// The shape schemars emits for internal-mcp's `transition_incident`.
    fn transition_schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "incident": {"type": "string", "description": "The incident"},
                "action": {"$ref": "#/$defs/IncidentAction"},
                "note": {"type": ["string", "null"]},
                "minutes": {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 10080},
                "max_rows": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
                "level": {"type": "number", "nullable": true}
            },
            "required": ["incident", "action"],
            "$defs": {"IncidentAction": {"type": "string", "enum": ["acknowledge", "resolve"]}}
        })
    }

    // By value, so each case reads as one `json!` literal.
    #[allow(clippy::needless_pass_by_value)]
    fn check(arguments: Value, expected: &[&str]) {
        let errors = validate(&transition_schema(), &arguments);
        assert_eq!(errors.len(), expected.len(), "{arguments}: {errors:?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(
                error.contains(expected),
                "{arguments}: {error:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn arguments_are_checked_like_the_server_would() {
        check(json!({"incident": "INC-4", "action": "resolve"}), &[]);
        check(
            json!({"incident": "INC-4", "action": "resolve", "note": null, "max_rows": null, "level": null}),
            &[],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "minutes": 30.0, "max_rows": 5}),
            &[],
        );
        check(
            json!({"incident": "INC-4"}),
            &["arguments.action: required"],
        );
        check(
            json!({"incident": 4, "action": "resolve"}),
            &["arguments.incident: expected string, got a number"],
        );
        check(
            json!({"incident": "INC-4", "action": "close"}),
            &["arguments.action: \"close\" is not one of"],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "confirmation_token": "imc_x"}),
            &["arguments.confirmation_token: unknown argument (the tool takes: "],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "minutes": 1.5}),
            &["expected integer"],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "minutes": 10081}),
            &["above the maximum 10080"],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "max_rows": 0}),
            &["below the minimum 1"],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "tags": ["a", ""]}),
            &["arguments.tags[1]: must have at least 1 characters"],
        );
        check(
            json!({"incident": "INC-4", "action": "resolve", "tags": ["a", "b", "c", "d"]}),
            &["at most 3 items"],
        );
        check(json!([1, 2]), &["arguments: expected object, got an array"]);
        check(json!({}), &["incident: required", "action: required"]);
    }

    #[test]
    fn unknown_references_and_boolean_schemas_are_handled() {
        assert!(validate(&json!(true), &json!({"anything": 1})).is_empty());
        assert_eq!(validate(&json!(false), &json!({})).len(), 1);
        let dangling = json!({"properties": {"x": {"$ref": "#/$defs/Missing"}}});
        assert!(validate(&dangling, &json!({"x": 1}))[0].contains("does not define"));
        let looping = json!({"$ref": "#"});
        assert!(!validate(&looping, &json!({})).is_empty());
    }
}
