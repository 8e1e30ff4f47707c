//! The OpenAPI 3.1 document (utoipa): every operation, schema and security scheme. The router
//! is built from it, so what is documented is what is served.

use serde::Serialize;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi, ToSchema};

use nodepass_core::config::ApiDialect;

use crate::{
    docs, events, info, instances, keys, metrics, openapi_np, session, tcping, traffic, transfer,
    view,
};

/// A successful response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    /// The result.
    pub data: T,
    /// An optional note for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The error of a failed response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// `VALIDATION_ERROR` (400), `UNAUTHORIZED` (401), `FORBIDDEN` (403), `NOT_FOUND` (404),
    /// `METHOD_NOT_ALLOWED` (405), `REQUEST_TIMEOUT` (408), `CONFLICT` (409),
    /// `PAYLOAD_TOO_LARGE` (413), `UNSUPPORTED_MEDIA_TYPE` (415), `RATE_LIMITED` (429),
    /// `INTERNAL_ERROR` (500), `SERVICE_UNAVAILABLE` (503).
    #[schema(example = "VALIDATION_ERROR")]
    pub code: String,
    /// What is wrong, naming the field.
    #[schema(example = "url: missing field `url`")]
    pub message: String,
}

/// A failed response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    /// The error.
    pub error: ErrorDetail,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "NodePass master API",
        description = "Manage NodePass server and client instances. This is the envelope \
dialect (`api=envelope`): every JSON response is an envelope: `{\"success\": true, \"data\": ...}` or \
`{\"success\": false, \"error\": {\"code\", \"message\"}}`. \
Send the API key in `X-API-Key` (or `Authorization: Bearer`).",
        license(name = "BSD-3-Clause"),
    ),
    paths(
        instances::list,
        instances::create,
        instances::get,
        instances::put,
        instances::patch,
        instances::delete,
        events::stream,
        info::info,
        info::update,
        tcping::tcping,
        metrics::metrics,
        keys::rotate,
        transfer::export,
        transfer::import,
        docs::openapi,
        docs::docs,
        docs::docs_file,
        docs::health,
        session::sign_in,
        session::get,
        session::sign_out,
        traffic::traffic,
        crate::fleet::nodes,
    ),
    components(schemas(
        view::InstanceView,
        view::EventView,
        view::EventType,
        view::LogView,
        ErrorEnvelope,
        session::SignIn,
        session::SessionInfo,
        traffic::TrafficSeries,
        crate::fleet::NodeView,
    )),
    modifiers(&Security),
    tags(
        (name = "instances", description = "Managed server and client tunnels"),
        (name = "events", description = "Live changes as server-sent events"),
        (name = "master", description = "The master itself"),
        (name = "session", description = "Browser sign-in for the dashboard (a session cookie)"),
        (name = "docs", description = "This description and its UI (no API key needed)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The master's API key (printed once at first start, or NODEPASS_API_KEY)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same API key as `Authorization: Bearer KEY`"))
                    .build(),
            ),
        );
    }
}

/// The document of the dialect served, for a master serving under `prefix` (its only server
/// URL).
pub(crate) fn document(dialect: ApiDialect, prefix: &str) -> serde_json::Value {
    if dialect != ApiDialect::Envelope {
        return openapi_np::document(prefix);
    }
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.servers = Some(vec![Server::new(if prefix.is_empty() {
        "/"
    } else {
        prefix
    })]);
    envelope_fixed(doc)
}

/// The envelope document with what its annotations cannot say: tag keys are not empty, a
/// PUT body is either `{action}` or `{url}`, a PATCH body changes something.
fn envelope_fixed(doc: Document) -> serde_json::Value {
    let mut json = serde_json::to_value(doc).expect("the document serializes");
    // The event stream is not one JSON document: no schema for its content (as NodePass).
    let events = &mut json["paths"]["/v1/events"]["get"]["responses"]["200"];
    if events.is_object() {
        events["content"] = serde_json::json!({ "text/event-stream": {} });
    }
    json["components"]["schemas"]["ImportBody"] = crate::transfer::import_body_schema();
    let schemas = &mut json["components"]["schemas"];
    if schemas["MetaBody"].is_object() {
        schemas["MetaBody"]["properties"]["tags"]["propertyNames"] =
            serde_json::json!({ "minLength": 1, "maxLength": 256 });
    }
    // An instance URL starts with its scheme and has no fragment; a PATCH changes something.
    if schemas["CreateBody"].is_object() {
        schemas["CreateBody"]["properties"]["url"]["pattern"] =
            serde_json::json!(crate::instances::URL_PATTERN);
    }
    // A PATCH changes something: an alias (`null` clears it), or a non-null restart, meta or
    // action.
    if schemas["PatchBody"].is_object() {
        schemas["PatchBody"]["anyOf"] = serde_json::json!([
            { "required": ["alias"] },
            { "required": ["restart"], "properties": { "restart": { "type": "boolean" } } },
            { "required": ["meta"], "properties": { "meta": { "type": "object" } } },
            { "required": ["action"], "properties": { "action": { "type": "string" } } },
        ]);
    }
    let action = schemas["PutBody"]["properties"]["action"].clone();
    let mut url = schemas["PutBody"]["properties"]["url"].clone();
    url["pattern"] = serde_json::json!(crate::instances::URL_PATTERN);
    schemas["PutBody"] = serde_json::json!({ "oneOf": [
        { "type": "object", "required": ["action"], "additionalProperties": false,
          "properties": { "action": strip_null(action) } },
        { "type": "object", "required": ["url"], "additionalProperties": false,
          "properties": { "url": strip_null(url) } },
    ] });
    json
}

/// `Option<T>` fields are `T | null` in the annotations; in a oneOf branch the field is required
/// and not null.
fn strip_null(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(types) = schema.get_mut("type").and_then(|t| t.as_array_mut()) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            schema["type"] = types[0].clone();
        }
    }
    if let Some(one_of) = schema.get("oneOf").and_then(|o| o.as_array()).cloned() {
        let kept: Vec<_> = one_of.into_iter().filter(|s| s["type"] != "null").collect();
        if kept.len() == 1 {
            return kept[0].clone();
        }
        schema["oneOf"] = serde_json::Value::Array(kept);
    }
    schema
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const API_MD: &str = include_str!("../../docs/api.md");

    fn operations(json: &serde_json::Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item
                .as_object()
                .unwrap()
                .keys()
                .filter(|m| *m != "parameters")
            {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        out
    }

    #[test]
    fn docs_api_md_has_one_section_per_operation() {
        let headings: BTreeSet<String> = API_MD
            .lines()
            .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
            .map(String::from)
            .collect();
        assert_eq!(
            headings,
            operations(&document(ApiDialect::Envelope, "/api"))
        );
        assert_eq!(
            operations(&document(ApiDialect::NodePass, "/api")),
            operations(&document(ApiDialect::Envelope, "/api"))
        );
    }

    #[test]
    fn docs_api_md_describes_every_instance_field_and_error_code() {
        let json = document(ApiDialect::Envelope, "/api");
        let fields = json["components"]["schemas"]["InstanceView"]["properties"]
            .as_object()
            .unwrap();
        assert!(fields.len() >= 20);
        for field in fields.keys() {
            assert!(
                API_MD.contains(&format!("`{field}`")),
                "{field} is not in docs/api.md"
            );
        }
        for code in crate::ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(API_MD.contains(&row), "{row} is not in docs/api.md");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_key_schemes() {
        let json = document(ApiDialect::Envelope, "/np");
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["servers"][0]["url"], "/np");
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["in"], "header");
        assert_eq!(schemes["api_key"]["name"], "X-API-Key");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
    }
}
