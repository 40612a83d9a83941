//! Validation of requests and responses against the GSMA Mobile Money API v1.2 disbursement OpenAPI spec: owns the vendored spec copy (`testdata/gsma-mmapi-1.2-disbursement.yaml`), its loading ([`SpecValidator`]) and a small OpenAPI 3.0 schema checker.
//!
//! The bundled spec is a byte-for-byte copy of the project's
//! `shared/specs/gsma-mmapi-1.2-disbursement.yaml` (see `testdata/README.md`), compiled in with
//! `include_str!`; [`SpecValidator::load`] reads another copy from disk.
//!
//! # What is checked
//!
//! [`SpecValidator::check_request`] takes an operation (method + path template of the spec,
//! e.g. `POST` `/batchtransactions`; a concrete path such as `/batchtransactions/B1` is matched
//! against the templates too) and checks:
//!
//! * header parameters (path-level and operation-level, `$ref`s to
//!   `components/parameters` resolved, names compared case-insensitively): a `required` one
//!   must be present; a present one must match its schema (its value taken as a string, or as
//!   a number for `integer` / `number` schemas);
//! * the JSON body against the operation's `requestBody` (`$ref`s to
//!   `components/requestBodies` and `components/schemas` resolved): a `required` body must be
//!   there.
//!
//! The schema subset of OpenAPI 3.0 understood: `$ref` (siblings ignored, as in 3.0),
//! `allOf`, `anyOf`, `oneOf`, `not`, `nullable`, `type` (`string`, `number`, `integer`,
//! `boolean`, `array`, `object`), `enum`, `pattern` (Rust `regex` syntax, unanchored search as
//! in JSON Schema; the spec's patterns carry their own `^…$`), `minLength` / `maxLength`
//! (in characters), `minimum` / `maximum` with boolean `exclusiveMinimum` /
//! `exclusiveMaximum`, `multipleOf`, `minItems` / `maxItems` / `uniqueItems` / `items`,
//! `required` / `properties` / `additionalProperties` / `minProperties` / `maxProperties`.
//! `format` is checked loosely for `date-time` (RFC 3339, or RFC 2822 as HTTP dates are),
//! `date` (`YYYY-MM-DD`) and `uri` (a scheme, a colon, no whitespace); other formats (`int32`,
//! `int64`, …) are ignored. `readOnly` / `writeOnly`, `discriminator` and `example` are
//! ignored. Query and path parameters are not checked.
//!
//! Every `$ref` must resolve and every `pattern` must compile when the spec is loaded, so a
//! loaded validator cannot fail on the spec itself.
//!
//! A [`Violation`] names the place (`transactions[0].amount`, a header name such as
//! `X-CorrelationID`, or `body` for the body as a whole) and the rule broken; its text form is
//! `transactions[0].amount: does not match pattern ^…$: "12,50"`. At most
//! [`MAX_VIOLATIONS`] are collected per call.
//!
//! # What the spec says that one may not expect
//!
//! Findings in the v1.2 disbursement spec, kept as the spec says (the validator does not
//! patch it):
//!
//! * **No header is required** on `POST /batchtransactions`: `X-Date` and `X-CorrelationID`
//!   are `required: false` (the simulator still demands `X-CorrelationID` itself, as a
//!   business rule). A present `X-CorrelationID` must match the spec's UUID pattern.
//! * `requestTransaction` requires **`debitParty`** as well as `creditParty`, `type`,
//!   `amount` and `currency` (the per-type `requestTransactionType` makes the parties an
//!   `anyOf`, but batches use `requestTransaction`). [`crate::gsma::Transaction::debit_party`]
//!   is optional, so a client must fill it in to pass.
//! * The `amount` pattern `^([0]|([1-9][0-9]{0,17}))([.][0-9]{0,3}[1-9])?$` forbids trailing
//!   zeros in the fraction (`"65000.00"` and `"1.50"` are invalid, `"65000"` and `"1.5"` are
//!   valid), allows at most 4 decimals, and allows `"0"`.
//! * The batch description property is `batchdescription` (lower case) in
//!   `requestBatchTransaction` and `responseBatchTransaction`, and the error object's is
//!   `errordescription`, while the GSMA prose says `errorDescription`. No schema sets
//!   `additionalProperties: false`, so the camel-case keys pass unchecked.
//! * `responseBatchTransaction` requires `completionDate` (and `approvalDate`) even while the
//!   batch is not completed, so a `created` / `approved` batch cannot be valid as the spec is
//!   written; the simulator omits `completionDate` until the batch completes.
//! * The `X-Callback-URL` parameter says `format: uri` with no other constraint.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;

/// The vendored spec, compiled in.
const BUNDLED: &str = include_str!("../testdata/gsma-mmapi-1.2-disbursement.yaml");

/// At most this many violations are collected by one check (the rest are not reported).
pub const MAX_VIOLATIONS: usize = 1000;

/// How many `$ref`s / nested schemas deep a check goes before giving up (guards against
/// reference cycles).
const MAX_DEPTH: usize = 64;

/// How many enum values an error message lists before eliding the rest.
const ENUM_SHOWN: usize = 12;

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read the spec {}: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML (or not representable as JSON).
    #[error("the spec is not valid YAML: {0}")]
    Yaml(String),
    /// The document is not an OpenAPI 3.0 document with `paths`.
    #[error("the spec is not an OpenAPI 3.0 document: {0}")]
    NotOpenApi(String),
    /// A `$ref` points nowhere in the document.
    #[error("the spec's $ref `{reference}` does not resolve")]
    UnresolvedRef {
        /// The reference as written.
        reference: String,
    },
    /// A `pattern` is not a valid regular expression.
    #[error("the spec's pattern `{pattern}` does not compile: {reason}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// The regex error.
        reason: String,
    },
}

/// One rule broken by a request or response.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Where: a JSON path into the body (`transactions[0].creditParty`), `body` for the
    /// body as a whole, or a header name as the spec spells it (`X-CorrelationID`).
    pub path: String,
    /// The rule broken, e.g. `required property is missing`, `does not match pattern ^…$: "x"`.
    pub rule: String,
    /// The offending value; `None` when the value is missing.
    pub value: Option<Value>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

/// The GSMA MMAPI spec, loaded once, checking requests and responses against it.
pub struct SpecValidator {
    doc: Value,
    patterns: HashMap<String, Regex>,
}

impl fmt::Debug for SpecValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpecValidator")
            .field("title", &self.doc.pointer("/info/title"))
            .field("version", &self.doc.pointer("/info/version"))
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl SpecValidator {
    /// Reads and loads the spec at `path` (YAML or JSON).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The vendored GSMA MMAPI v1.2 disbursement spec (`testdata/`, compiled in).
    pub fn bundled() -> Result<Self, SpecError> {
        Self::from_yaml(BUNDLED)
    }

    /// Loads a spec from its YAML (or JSON) text.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| SpecError::Yaml(e.to_string()))?;
        // Integer keys (`202:` in `responses`) become strings here.
        let doc = serde_json::to_value(&yaml).map_err(|e| SpecError::Yaml(e.to_string()))?;
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
        if !version.starts_with("3.") {
            return Err(SpecError::NotOpenApi(format!(
                "`openapi` is `{version}`, not 3.x"
            )));
        }
        if !doc.get("paths").is_some_and(Value::is_object) {
            return Err(SpecError::NotOpenApi("no `paths` object".to_owned()));
        }
        let mut patterns = HashMap::new();
        let mut refs = Vec::new();
        collect(&doc, &mut patterns, &mut refs)?;
        for reference in refs {
            if pointer(&doc, &reference).is_none() {
                return Err(SpecError::UnresolvedRef { reference });
            }
        }
        Ok(Self { doc, patterns })
    }

    /// Checks a request to the operation `method` `path_template` (e.g. `POST`,
    /// `/batchtransactions`): its header parameters (`headers` as name/value pairs, names
    /// in any case) and its JSON `body` (`None` when there is none). `Err` lists every
    /// violation as `path: rule` text; see [`SpecValidator::check_request`].
    pub fn validate_request(
        &self,
        method: &str,
        path_template: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<(), Vec<String>> {
        into_result(self.check_request(method, path_template, headers, body))
    }

    /// Like [`SpecValidator::validate_request`], returning the violations as values (empty
    /// when the request is valid). An operation the spec does not have is one violation at
    /// path `operation`.
    pub fn check_request(
        &self,
        method: &str,
        path_template: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Vec<Violation> {
        let mut walk = Walk::new(self);
        let Some((path_item, operation)) = self.operation(method, path_template) else {
            walk.push(
                "operation",
                format!(
                    "the spec has no operation {} {path_template}",
                    method.to_uppercase()
                ),
                None,
            );
            return walk.out;
        };
        for parameter in self.parameters(path_item, operation) {
            if parameter.get("in").and_then(Value::as_str) != Some("header") {
                continue;
            }
            let Some(name) = parameter.get("name").and_then(Value::as_str) else {
                continue;
            };
            let required = parameter.get("required").and_then(Value::as_bool) == Some(true);
            let found = headers
                .iter()
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            match (found, parameter.get("schema")) {
                (None, _) if required => walk.push(name, "required header is missing", None),
                (Some(text), Some(schema)) => {
                    let value = header_value(self.resolve(schema).unwrap_or(schema), text);
                    walk.schema(schema, &value, name, 0);
                }
                _ => {}
            }
        }
        if let Some(request_body) = operation.get("requestBody") {
            let request_body = self.resolve(request_body).unwrap_or(request_body);
            let required = request_body.get("required").and_then(Value::as_bool) == Some(true);
            match body {
                None if required => walk.push("body", "request body is required", None),
                None => {}
                Some(body) => {
                    if let Some(schema) = json_schema(request_body) {
                        walk.schema(schema, body, "", 0);
                    }
                }
            }
        }
        walk.out
    }

    /// Checks a response body: the JSON schema of `status` (or of `default`) of the operation
    /// `method` `path_template`. A status the operation does not list is a violation; a status
    /// without a JSON schema accepts any body. Headers are not checked.
    pub fn validate_response(
        &self,
        method: &str,
        path_template: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), Vec<String>> {
        let mut walk = Walk::new(self);
        match self.operation(method, path_template) {
            None => walk.push(
                "operation",
                format!(
                    "the spec has no operation {} {path_template}",
                    method.to_uppercase()
                ),
                None,
            ),
            Some((_, operation)) => {
                let responses = operation.get("responses");
                let response = responses
                    .and_then(|r| r.get(status.to_string()))
                    .or_else(|| responses.and_then(|r| r.get(format!("{}XX", status / 100))))
                    .or_else(|| responses.and_then(|r| r.get("default")));
                match response {
                    None => walk.push(
                        "status",
                        format!("status {status} is not a documented response"),
                        Some(&Value::from(status)),
                    ),
                    Some(response) => {
                        let response = self.resolve(response).unwrap_or(response);
                        match (json_schema(response), body) {
                            (Some(schema), Some(body)) => walk.schema(schema, body, "", 0),
                            (Some(_), None) => walk.push("body", "response body is missing", None),
                            (None, _) => {}
                        }
                    }
                }
            }
        }
        into_result(walk.out)
    }

    /// Checks `value` against the schema `components/schemas/{name}` (e.g.
    /// `responseBatchTransaction`, the body of a batch callback).
    pub fn validate_schema(&self, name: &str, value: &Value) -> Result<(), Vec<String>> {
        let mut walk = Walk::new(self);
        match self
            .doc
            .pointer(&format!("/components/schemas/{}", escape(name)))
        {
            Some(schema) => walk.schema(schema, value, "", 0),
            None => walk.push("schema", format!("the spec has no schema `{name}`"), None),
        }
        into_result(walk.out)
    }

    /// The path item and operation object of `method` `path` (a template of the spec, or a
    /// concrete path matching one).
    fn operation(&self, method: &str, path: &str) -> Option<(&Value, &Value)> {
        let method = method.to_ascii_lowercase();
        if !METHODS.contains(&method.as_str()) {
            return None;
        }
        let paths = self.doc.get("paths")?.as_object()?;
        let path_item = match paths.get(path) {
            Some(item) => item,
            None => paths
                .iter()
                .find(|(template, _)| template_matches(template, path))
                .map(|(_, item)| item)?,
        };
        let path_item = self.resolve(path_item)?;
        let operation = path_item.get(&method)?;
        Some((path_item, operation))
    }

    /// The parameters of an operation: the path item's, overridden by the operation's of the
    /// same name and location.
    fn parameters<'s>(&'s self, path_item: &'s Value, operation: &'s Value) -> Vec<&'s Value> {
        let list = |holder: &'s Value| -> Vec<&'s Value> {
            holder
                .get("parameters")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(|p| self.resolve(p)).collect())
                .unwrap_or_default()
        };
        let key = |p: &Value| {
            (
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_ascii_lowercase(),
                p.get("in").and_then(Value::as_str).unwrap_or("").to_owned(),
            )
        };
        let own = list(operation);
        let mut all: Vec<&Value> = list(path_item)
            .into_iter()
            .filter(|p| !own.iter().any(|o| key(o) == key(p)))
            .collect();
        all.extend(own);
        all
    }

    /// Follows `$ref`s until a value without one.
    fn resolve<'s>(&'s self, mut value: &'s Value) -> Option<&'s Value> {
        for _ in 0..MAX_DEPTH {
            match value.get("$ref").and_then(Value::as_str) {
                Some(reference) => value = pointer(&self.doc, reference)?,
                None => return Some(value),
            }
        }
        None
    }
}

fn into_result(violations: Vec<Violation>) -> Result<(), Vec<String>> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations.iter().map(ToString::to_string).collect())
    }
}

/// The `application/json` (or first `…json`) schema of a request body or response object.
fn json_schema(holder: &Value) -> Option<&Value> {
    let content = holder.get("content")?.as_object()?;
    content
        .get("application/json")
        .or_else(|| {
            content
                .iter()
                .find(|(media, _)| media.contains("json"))
                .map(|(_, v)| v)
        })?
        .get("schema")
}

/// A header's text as the JSON value its schema expects: a number for `integer` / `number`
/// schemas when it parses as one, a boolean for `boolean`, else the string.
fn header_value(schema: &Value, text: &str) -> Value {
    let text = text.trim();
    match schema.get("type").and_then(Value::as_str) {
        Some("integer" | "number") => serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Some("boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        _ => Value::String(text.to_owned()),
    }
}

/// Whether a concrete path matches a template: same number of segments, `{name}` segments
/// matching any non-empty segment, others equal.
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

/// Resolves a local reference `#/a/b` in `doc`.
fn pointer<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// JSON-pointer escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Walks the whole document: compiles every `pattern` and lists every `$ref`.
fn collect(
    value: &Value,
    patterns: &mut HashMap<String, Regex>,
    refs: &mut Vec<String>,
) -> Result<(), SpecError> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("pattern", Value::String(p)) => {
                        if !patterns.contains_key(p) {
                            let regex = Regex::new(p).map_err(|e| SpecError::BadPattern {
                                pattern: p.clone(),
                                reason: e.to_string(),
                            })?;
                            patterns.insert(p.clone(), regex);
                        }
                    }
                    ("$ref", Value::String(r)) => refs.push(r.clone()),
                    _ => collect(child, patterns, refs)?,
                }
            }
        }
        Value::Array(items) => {
            for child in items {
                collect(child, patterns, refs)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Short text of a value for messages: strings quoted, long ones cut.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        // Unknown type names are not ours to judge.
        _ => true,
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn shown_path(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

/// Loose `format` checks; `None` when the format is fine or not checked.
fn format_problem(format: &str, text: &str) -> Option<&'static str> {
    let ok = match format {
        "date-time" => {
            chrono::DateTime::parse_from_rfc3339(text).is_ok()
                || chrono::DateTime::parse_from_rfc2822(text).is_ok()
        }
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "uri" => uri_ok(text),
        _ => return None,
    };
    (!ok).then_some(match format {
        "date-time" => "is not a date-time (RFC 3339)",
        "date" => "is not a date (YYYY-MM-DD)",
        _ => "is not an absolute URI",
    })
}

fn uri_ok(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !text.chars().any(char::is_whitespace)
}

/// One check in progress.
struct Walk<'v> {
    spec: &'v SpecValidator,
    out: Vec<Violation>,
}

impl<'v> Walk<'v> {
    fn new(spec: &'v SpecValidator) -> Self {
        Self {
            spec,
            out: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= MAX_VIOLATIONS
    }

    fn push(&mut self, path: &str, rule: impl Into<String>, value: Option<&Value>) {
        if !self.full() {
            self.out.push(Violation {
                path: shown_path(path).to_owned(),
                rule: rule.into(),
                value: value.cloned(),
            });
        }
    }

    /// Violations `value` would have against `schema`, in a scratch walk.
    fn trial(&self, schema: &Value, value: &Value, path: &str, depth: usize) -> Vec<Violation> {
        let mut scratch = Walk::new(self.spec);
        scratch.schema(schema, value, path, depth);
        scratch.out
    }

    fn schema(&mut self, schema: &Value, value: &Value, path: &str, depth: usize) {
        if self.full() {
            return;
        }
        if depth > MAX_DEPTH {
            self.push(path, "schema nesting too deep (reference cycle?)", None);
            return;
        }
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => match pointer(&self.spec.doc, reference) {
                Some(target) => return self.schema(target, value, path, depth + 1),
                None => {
                    self.push(
                        path,
                        format!("spec error: $ref `{reference}` does not resolve"),
                        None,
                    );
                    return;
                }
            },
            None => schema,
        };
        let Some(keywords) = schema.as_object() else {
            return; // `true`-like or malformed schema: accept
        };
        if value.is_null() && keywords.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if let Some(all) = keywords.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.schema(sub, value, path, depth + 1);
            }
        }
        if let Some(any) = keywords.get("anyOf").and_then(Value::as_array) {
            self.alternatives(any, value, path, depth, false);
        }
        if let Some(one) = keywords.get("oneOf").and_then(Value::as_array) {
            self.alternatives(one, value, path, depth, true);
        }
        if let Some(not) = keywords.get("not") {
            if self.trial(not, value, path, depth + 1).is_empty() {
                self.push(path, "matches a schema it must not (`not`)", Some(value));
            }
        }
        if let Some(expected) = keywords.get("type").and_then(Value::as_str) {
            if !type_matches(expected, value) {
                self.push(
                    path,
                    format!("expected type {expected}, found {}", type_name(value)),
                    Some(value),
                );
                return;
            }
        }
        if let Some(allowed) = keywords.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                let mut listed: Vec<String> = allowed
                    .iter()
                    .take(ENUM_SHOWN)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect();
                if allowed.len() > ENUM_SHOWN {
                    listed.push(format!("… ({} values)", allowed.len()));
                }
                self.push(
                    path,
                    format!("{} is not one of [{}]", show(value), listed.join(", ")),
                    Some(value),
                );
            }
        }
        match value {
            Value::String(text) => self.string(keywords, text, value, path),
            Value::Number(_) => self.number(keywords, value, path),
            Value::Array(items) => self.array(keywords, items, value, path, depth),
            Value::Object(map) => self.object(keywords, map, value, path, depth),
            _ => {}
        }
    }

    fn alternatives(&mut self, subs: &[Value], value: &Value, path: &str, depth: usize, one: bool) {
        let trials: Vec<Vec<Violation>> = subs
            .iter()
            .map(|sub| self.trial(sub, value, path, depth + 1))
            .collect();
        let passing = trials.iter().filter(|t| t.is_empty()).count();
        if one && passing > 1 {
            self.push(
                path,
                format!("matches {passing} of the oneOf alternatives, must match exactly one"),
                Some(value),
            );
        } else if passing == 0 {
            // Report the nearest alternative's violations.
            let keyword = if one { "oneOf" } else { "anyOf" };
            self.push(
                path,
                format!("matches none of the {keyword} alternatives"),
                Some(value),
            );
            if let Some(nearest) = trials.into_iter().min_by_key(Vec::len) {
                for v in nearest {
                    if self.full() {
                        break;
                    }
                    self.out.push(v);
                }
            }
        }
    }

    fn string(
        &mut self,
        keywords: &serde_json::Map<String, Value>,
        text: &str,
        value: &Value,
        path: &str,
    ) {
        let length = text.chars().count();
        if let Some(min) = keywords.get("minLength").and_then(Value::as_u64) {
            if (length as u64) < min {
                self.push(
                    path,
                    format!("length {length} is below minLength {min}"),
                    Some(value),
                );
            }
        }
        if let Some(max) = keywords.get("maxLength").and_then(Value::as_u64) {
            if (length as u64) > max {
                self.push(
                    path,
                    format!("length {length} is above maxLength {max}"),
                    Some(value),
                );
            }
        }
        if let Some(pattern) = keywords.get("pattern").and_then(Value::as_str) {
            // Compiled at load; a missing entry would be a pattern added since (cannot happen).
            if let Some(regex) = self.spec.patterns.get(pattern) {
                if !regex.is_match(text) {
                    self.push(
                        path,
                        format!("does not match pattern {pattern}: {}", show(value)),
                        Some(value),
                    );
                }
            }
        }
        if let Some(format) = keywords.get("format").and_then(Value::as_str) {
            if let Some(problem) = format_problem(format, text) {
                self.push(path, format!("{problem}: {}", show(value)), Some(value));
            }
        }
    }

    fn number(&mut self, keywords: &serde_json::Map<String, Value>, value: &Value, path: &str) {
        let Some(n) = value.as_f64() else {
            return;
        };
        let flag = |name: &str| keywords.get(name).and_then(Value::as_bool) == Some(true);
        if let Some(min) = keywords.get("minimum").and_then(Value::as_f64) {
            let exclusive = flag("exclusiveMinimum");
            if n < min || (exclusive && n == min) {
                let op = if exclusive { "above" } else { "at least" };
                self.push(path, format!("{n} is not {op} {min}"), Some(value));
            }
        } else if let Some(min) = keywords.get("exclusiveMinimum").and_then(Value::as_f64) {
            if n <= min {
                self.push(path, format!("{n} is not above {min}"), Some(value));
            }
        }
        if let Some(max) = keywords.get("maximum").and_then(Value::as_f64) {
            let exclusive = flag("exclusiveMaximum");
            if n > max || (exclusive && n == max) {
                let op = if exclusive { "below" } else { "at most" };
                self.push(path, format!("{n} is not {op} {max}"), Some(value));
            }
        } else if let Some(max) = keywords.get("exclusiveMaximum").and_then(Value::as_f64) {
            if n >= max {
                self.push(path, format!("{n} is not below {max}"), Some(value));
            }
        }
        if let Some(step) = keywords.get("multipleOf").and_then(Value::as_f64) {
            if step > 0.0 && ((n / step).round() * step - n).abs() > 1e-9 * n.abs().max(1.0) {
                self.push(
                    path,
                    format!("{n} is not a multiple of {step}"),
                    Some(value),
                );
            }
        }
    }

    fn array(
        &mut self,
        keywords: &serde_json::Map<String, Value>,
        items: &[Value],
        value: &Value,
        path: &str,
        depth: usize,
    ) {
        let count = items.len() as u64;
        if let Some(min) = keywords.get("minItems").and_then(Value::as_u64) {
            if count < min {
                self.push(
                    path,
                    format!("{count} items, fewer than minItems {min}"),
                    Some(value),
                );
            }
        }
        if let Some(max) = keywords.get("maxItems").and_then(Value::as_u64) {
            if count > max {
                self.push(
                    path,
                    format!("{count} items, more than maxItems {max}"),
                    Some(&Value::from(count)),
                );
            }
        }
        if keywords.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            let duplicate = items
                .iter()
                .enumerate()
                .any(|(i, a)| items[..i].contains(a));
            if duplicate {
                self.push(path, "items are not unique (uniqueItems)", None);
            }
        }
        if let Some(item_schema) = keywords.get("items") {
            for (i, item) in items.iter().enumerate() {
                if self.full() {
                    return;
                }
                let item_path = format!("{}[{i}]", path);
                self.schema(item_schema, item, &item_path, depth + 1);
            }
        }
    }

    fn object(
        &mut self,
        keywords: &serde_json::Map<String, Value>,
        map: &serde_json::Map<String, Value>,
        value: &Value,
        path: &str,
        depth: usize,
    ) {
        if let Some(required) = keywords.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    self.push(&child(path, name), "required property is missing", None);
                }
            }
        }
        let count = map.len() as u64;
        if let Some(min) = keywords.get("minProperties").and_then(Value::as_u64) {
            if count < min {
                self.push(
                    path,
                    format!("{count} properties, fewer than minProperties {min}"),
                    Some(value),
                );
            }
        }
        if let Some(max) = keywords.get("maxProperties").and_then(Value::as_u64) {
            if count > max {
                self.push(
                    path,
                    format!("{count} properties, more than maxProperties {max}"),
                    None,
                );
            }
        }
        let properties = keywords.get("properties").and_then(Value::as_object);
        let additional = keywords.get("additionalProperties");
        for (name, item) in map {
            if self.full() {
                return;
            }
            let item_path = child(path, name);
            match properties.and_then(|p| p.get(name)) {
                Some(property_schema) => self.schema(property_schema, item, &item_path, depth + 1),
                None => match additional {
                    Some(Value::Bool(false)) => {
                        self.push(
                            &item_path,
                            "property is not allowed (additionalProperties: false)",
                            Some(item),
                        );
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.schema(extra, item, &item_path, depth + 1);
                    }
                    _ => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn template_matching() {
        assert!(template_matches(
            "/batchtransactions/{batchId}",
            "/batchtransactions/B1"
        ));
        assert!(!template_matches(
            "/batchtransactions/{batchId}",
            "/batchtransactions"
        ));
        assert!(!template_matches(
            "/batchtransactions/{batchId}",
            "/batchtransactions/B1/completions"
        ));
    }

    #[test]
    fn uri_format_is_loose() {
        assert!(uri_ok("http://127.0.0.1:8080/cb"));
        assert!(uri_ok("urn:x"));
        assert!(!uri_ok("no scheme"));
        assert!(!uri_ok("/relative/path"));
        assert!(!uri_ok("http://a b"));
    }

    #[test]
    fn small_spec_keywords() {
        let spec = SpecValidator::from_yaml(
            r##"
openapi: 3.0.0
info: {title: t, version: "1"}
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/thing'}
      responses:
        204: {description: ok}
components:
  schemas:
    thing:
      type: object
      additionalProperties: false
      required: [n]
      properties:
        n: {type: integer, minimum: 0, exclusiveMinimum: true, maximum: 10}
        tags: {type: array, items: {type: string}, uniqueItems: true, maxItems: 2}
        kind:
          oneOf:
            - {type: string, enum: [a, b]}
            - {type: string, pattern: '^b'}
"##,
        )
        .unwrap();
        let check = |body: Value| {
            spec.validate_request("post", "/things", &[], Some(&body))
                .err()
                .unwrap_or_default()
        };
        assert!(check(json!({"n": 3, "tags": ["x", "y"], "kind": "a"})).is_empty());
        let errors = check(json!({"n": 0, "tags": ["x", "x", "z"], "kind": "b", "extra": 1}));
        let joined = errors.join("\n");
        assert!(joined.contains("n: 0 is not above 0"), "{joined}");
        assert!(
            joined.contains("tags: 3 items, more than maxItems 2"),
            "{joined}"
        );
        assert!(joined.contains("tags: items are not unique"), "{joined}");
        assert!(joined.contains("kind: matches 2 of the oneOf"), "{joined}");
        assert!(
            joined.contains("extra: property is not allowed"),
            "{joined}"
        );
        assert_eq!(
            check(json!({"n": 1.5})),
            vec!["n: expected type integer, found number".to_owned()]
        );
        assert_eq!(
            spec.validate_request("POST", "/things", &[], None),
            Err(vec!["body: request body is required".to_owned()])
        );
        assert!(spec.validate_request("GET", "/things", &[], None).is_err());
        assert!(spec.validate_response("POST", "/things", 204, None).is_ok());
        assert!(spec
            .validate_response("POST", "/things", 500, None)
            .is_err());
    }

    #[test]
    fn bad_specs_are_refused() {
        let unresolved = "openapi: 3.0.0\npaths:\n  /x:\n    get:\n      responses:\n        200: {$ref: '#/nope'}\n";
        assert!(matches!(
            SpecValidator::from_yaml(unresolved),
            Err(SpecError::UnresolvedRef { .. })
        ));
        let bad_pattern = "openapi: 3.0.0\npaths: {}\ncomponents:\n  schemas:\n    a: {type: string, pattern: '(['}\n";
        assert!(matches!(
            SpecValidator::from_yaml(bad_pattern),
            Err(SpecError::BadPattern { .. })
        ));
        assert!(matches!(
            SpecValidator::from_yaml("swagger: '2.0'\npaths: {}\n"),
            Err(SpecError::NotOpenApi(_))
        ));
        assert!(matches!(
            SpecValidator::from_yaml("a: [unclosed"),
            Err(SpecError::Yaml(_))
        ));
    }
}
