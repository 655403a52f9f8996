#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! `docs/openapi.json` (served verbatim at `/v1/openapi.json`) describes exactly the routes the
//! agent serves, with auth, error responses and references that hold together. No network, no
//! agent: the document is checked against the router's own route lists.

use relais::api::{PROTECTED_ROUTES, PUBLIC_ROUTES};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const DOCUMENT: &str = include_str!("../docs/openapi.json");

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The operations that can refuse a request with 409 (a loyalty burn over the balance or the
/// offline cap; a pickup that is ambiguous, cancelled or already collected; a single-use coupon
/// redeemed here before; an order step recorded already), and no other.
const CAN_CONFLICT: [(&str, &str); 10] = [
    ("post", "/v1/returns"),
    ("post", "/v1/loyalty/burn"),
    ("get", "/v1/pickups/{code}"),
    ("post", "/v1/pickups/{code}/collect"),
    ("post", "/v1/coupons/redeem"),
    // `[pickups] protect_reserved`: a ticket selling reserved units.
    ("post", "/v1/sales"),
    ("post", "/v1/pickups/{code}/prepare"),
    ("post", "/v1/shipments/{order_id}/picked"),
    ("post", "/v1/shipments/{order_id}/packed"),
    ("post", "/v1/shipments/{order_id}/shipped"),
];

/// The error schemas every error response is built on.
const ERROR_SCHEMAS: [&str; 4] = [
    "#/components/schemas/Error",
    "#/components/schemas/NotFoundError",
    "#/components/schemas/RefusalError",
    "#/components/schemas/UnprocessableError",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("docs/openapi.json is not valid JSON")
}

struct Operation<'a> {
    path: &'a str,
    method: &'a str,
    body: &'a Value,
}

impl Operation<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method.to_uppercase(), self.path)
    }

    fn is_public(&self) -> bool {
        PUBLIC_ROUTES.contains(&self.path)
    }

    fn response(&self, status: &str) -> Option<&Value> {
        self.body["responses"].get(status)
    }
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (key, body) in item {
            assert!(
                METHODS.contains(&key.as_str()) || key == "parameters" || key == "summary",
                "{path}: unexpected key {key:?} in its path item"
            );
            if METHODS.contains(&key.as_str()) {
                out.push(Operation {
                    path,
                    method: key,
                    body,
                });
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/a/b~1c`) to what it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    while let Some(target) = value.get("$ref").and_then(Value::as_str) {
        value = target
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or_else(|| panic!("{target} does not resolve"));
    }
    value
}

/// Every `$ref` in the document, with the JSON pointer of where it stands.
fn references(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                if key == "$ref" {
                    if let Some(target) = child.as_str() {
                        out.push((at.clone(), target.to_owned()));
                    }
                } else {
                    references(child, here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                references(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The discriminator mappings name schemas too.
fn mapped_schemas(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(mapping) = map
                .get("discriminator")
                .and_then(|d| d.get("mapping"))
                .and_then(Value::as_object)
            {
                out.extend(
                    mapping
                        .values()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
            }
            map.values().for_each(|child| mapped_schemas(child, out));
        }
        Value::Array(items) => items.iter().for_each(|child| mapped_schemas(child, out)),
        _ => {}
    }
}

#[test]
fn every_route_the_agent_serves_is_documented_and_nothing_else_is() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("`paths` is an object")
        .keys()
        .map(String::as_str)
        .collect();
    // axum's `{param}` path syntax is OpenAPI's, so the route strings compare as they are.
    let served: BTreeSet<&str> = PROTECTED_ROUTES
        .iter()
        .chain(PUBLIC_ROUTES.iter())
        .copied()
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "served but not in docs/openapi.json: {undocumented:?}; documented but not served: \
         {not_served:?}"
    );
    // The router gives each route one method.
    let mut per_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for op in operations(&doc) {
        per_path.entry(op.path).or_default().push(op.method);
    }
    for (path, methods) in per_path {
        assert_eq!(methods.len(), 1, "{path} documents {methods:?}");
    }
}

#[test]
fn only_the_probes_are_documented_without_auth() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(
        doc["security"],
        serde_json::json!([{"bearer": []}]),
        "bearer auth must apply to every operation by default"
    );
    let mut open = BTreeSet::new();
    for op in operations(&doc) {
        match op.body.get("security") {
            None => {}
            Some(Value::Array(requirements)) if requirements.is_empty() => {
                open.insert(op.path);
            }
            Some(other) => panic!(
                "{}: overrides security with {other}; only the probes may, with `[]`",
                op.name()
            ),
        }
    }
    let probes: BTreeSet<&str> = PUBLIC_ROUTES.into_iter().collect();
    assert_eq!(
        open, probes,
        "the operations documented with `security: []`"
    );
}

#[test]
fn every_operation_documents_its_error_responses_and_has_an_operation_id() {
    let doc = document();
    let mut ids = BTreeSet::new();
    for op in operations(&doc) {
        let name = op.name();
        let id = op.body["operationId"]
            .as_str()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("{name} has no operationId"));
        assert!(ids.insert(id), "operationId {id:?} is used twice ({name})");

        let documents = |status: &str| op.response(status).is_some();
        // The rate limit stands in front of every route, the probes included.
        assert!(documents("429"), "{name} does not document 429");
        // The doctor's route is public (no token) but refuses anyone without the doctor key.
        assert_eq!(
            documents("401"),
            !op.is_public() || op.path == "/v1/health/doctor",
            "{name}: 401 is documented exactly on the routes behind a token or the doctor key"
        );
        if op.body.get("requestBody").is_some() {
            for status in ["400", "413"] {
                assert!(documents(status), "{name} takes a body but omits {status}");
            }
        }
        if op.method == "post" {
            assert!(documents("503"), "{name} is a write but omits 503");
        }
        // An idempotent write answers 201 when new and 200 with the first answer on a replay.
        let takes_a_key = op.body["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| resolve(&doc, p)["name"] == "Idempotency-Key");
        if takes_a_key {
            for status in ["201", "200"] {
                assert!(documents(status), "{name} takes a key but omits {status}");
            }
        }
        assert_eq!(
            documents("409"),
            CAN_CONFLICT.contains(&(op.method, op.path)),
            "{name}: 409 is documented exactly where the agent can refuse with a conflict"
        );

        for (status, response) in op.body["responses"].as_object().expect("responses") {
            let is_error = status.starts_with('4') || status.starts_with('5');
            // The readiness probe's 503 carries the readiness body, not the error envelope.
            if !is_error || (op.path == "/v1/health/ready" && status == "503") {
                continue;
            }
            let target = response["$ref"].as_str().unwrap_or_else(|| {
                panic!("{name} {status}: error responses are reusable components/responses")
            });
            assert!(
                target.starts_with("#/components/responses/"),
                "{name} {status}: {target}"
            );
            let schema = &resolve(&doc, response)["content"]["application/json"]["schema"];
            assert!(
                schema["$ref"]
                    .as_str()
                    .is_some_and(|s| ERROR_SCHEMAS.contains(&s)),
                "{name} {status}: the body is not the JSON error shape: {schema}"
            );
        }
    }
    let headers = |response: &str| {
        doc["components"]["responses"][response]["headers"]
            .as_object()
            .map(|h| h.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(headers("Unauthorized").contains(&"WWW-Authenticate".to_owned()));
    assert!(headers("RateLimited").contains(&"Retry-After".to_owned()));
}

#[test]
fn every_schema_reference_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    references(&doc, String::new(), &mut refs);
    assert!(
        refs.len() > 50,
        "suspiciously few references: {}",
        refs.len()
    );
    let mut mapped = Vec::new();
    mapped_schemas(&doc, &mut mapped);
    let all = refs.iter().cloned().chain(
        mapped
            .into_iter()
            .map(|t| ("discriminator mapping".to_owned(), t)),
    );
    let broken: Vec<String> = all
        .filter(|(_, target)| {
            target
                .strip_prefix('#')
                .and_then(|pointer| doc.pointer(pointer))
                .is_none()
        })
        .map(|(at, target)| format!("{at} -> {target}"))
        .collect();
    assert!(broken.is_empty(), "unresolved $ref: {broken:#?}");
}

#[test]
fn every_component_is_used() {
    let doc = document();
    let mut refs = Vec::new();
    references(&doc, String::new(), &mut refs);
    let mut used: BTreeSet<String> = refs.into_iter().map(|(_, target)| target).collect();
    let mut mapped = Vec::new();
    mapped_schemas(&doc, &mut mapped);
    used.extend(mapped);
    let components = doc["components"].as_object().expect("components");
    let mut unused = Vec::new();
    for kind in ["schemas", "responses", "parameters", "headers"] {
        for name in components[kind]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(n, _)| n)
        {
            let target = format!("#/components/{kind}/{name}");
            if !used.contains(&target) {
                unused.push(target);
            }
        }
    }
    assert!(
        unused.is_empty(),
        "defined but never referenced: {unused:?}"
    );
}

#[test]
fn every_request_body_has_an_example_and_every_path_parameter_is_declared() {
    let doc = document();
    for op in operations(&doc) {
        let name = op.name();
        if let Some(body) = op.body.get("requestBody") {
            let media = &resolve(&doc, body)["content"]["application/json"];
            assert!(
                media.get("example").is_some() || media.get("examples").is_some(),
                "{name}: the request body has no example"
            );
        }
        let declared: BTreeSet<&str> = op.body["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        let templated: BTreeSet<&str> = op
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, templated, "{name}: path parameters");
    }
}
