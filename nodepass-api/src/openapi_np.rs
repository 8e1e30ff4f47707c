//! The OpenAPI 3.1 document of the NodePass dialect (`api=nodepass`): the paths and schemas of
//! the Go NodePass v1.14 master's `openapi.json`, made exact (every status with its body, the
//! API key's pseudo-instance, our additions), plus our own endpoints. Written as JSON here
//! because its bodies are not the envelope types the handlers' annotations describe.

use serde_json::{Value, json};

/// A `$ref` to a schema of this document.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON response with this schema.
fn body(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// An error response (`{"error": "..."}`).
fn error(description: &str) -> Value {
    body(description, schema("Error"))
}

/// A JSON request body.
fn request(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

/// The operation object with the key requirement and the errors every protected call may have.
fn protected(id: &str, tag: &str, summary: &str, mut responses: Value) -> Value {
    let r = responses.as_object_mut().expect("responses are an object");
    r.insert("401".into(), error("Missing or wrong API key"));
    r.insert(
        "403".into(),
        r.get("403")
            .cloned()
            .unwrap_or_else(|| error("The request's origin is not allowed")),
    );
    json!({
        "operationId": id,
        "tags": [tag],
        "summary": summary,
        "security": [{ "ApiKeyAuth": [] }, { "bearer": [] }],
        "responses": responses,
    })
}

fn with_body(mut op: Value, schema: Value) -> Value {
    op["requestBody"] = request(schema);
    let r = op["responses"].as_object_mut().expect("responses");
    r.insert(
        "400".into(),
        error("Invalid body or field (the message names it)"),
    );
    r.insert("413".into(), error("Body over 64 KiB"));
    r.insert("415".into(), error("Not application/json"));
    op
}

fn id_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true,
             "description": "Instance id (8 hex characters), or `********` for the API key",
             "schema": { "type": "string", "minLength": 1 } }])
}

/// The document for a master serving under `prefix`.
pub(crate) fn document(prefix: &str) -> Value {
    let instance = schema("Instance");
    let paths = json!({
        "/v1/instances": {
            "get": with_params(protected("listInstances", "instances", "All instances, the API key's pseudo-instance first (not when filtering)", json!({
                "200": body("The instances", json!({ "type": "array", "items": instance.clone() })),
                "400": error("Unknown filter or value"),
            })), json!([
                { "name": "type", "in": "query", "required": false,
                  "schema": { "type": "string", "enum": ["server", "client"] } },
                { "name": "status", "in": "query", "required": false,
                  "schema": { "type": "string", "enum": ["stopped", "starting", "running", "error"] } },
            ])),
            "post": with_body(protected("createInstance", "instances", "Create an instance and start it at once (answers without waiting for a peer)", json!({
                "201": body("Created", instance.clone()),
                "409": error("A running instance already listens there"),
            })), schema("CreateInstanceRequest")),
        },
        "/v1/instances/{id}": {
            "get": protected("getInstance", "instances", "One instance", json!({
                "200": body("The instance", instance.clone()),
                "404": error("No such instance"),
            })),
            "patch": with_body(protected("patchInstance", "instances", "Alias, restart policy, metadata and an action; on `********`, `{\"action\":\"restart\"}` rotates the API key and returns the new one once in `url`", json!({
                "200": body("The instance after the change", instance.clone()),
                "404": error("No such instance"),
                "409": error("A listen address is used by another running instance"),
            })), schema("UpdateInstanceRequest")),
            "put": with_body(protected("putInstance", "instances", "Replace the URL (restarts with it), or run an action", json!({
                "200": body("The instance after the change", instance.clone()),
                "403": error("The API key's pseudo-instance cannot be replaced"),
                "404": error("No such instance"),
                "409": error("A listen address is used by another running instance"),
            })), schema("PutInstanceRequest")),
            "delete": protected("deleteInstance", "instances", "Stop and delete", json!({
                "204": { "description": "Deleted (no body)" },
                "403": error("The API key's pseudo-instance cannot be deleted"),
                "404": error("No such instance"),
            })),
        },
        "/v1/events": {
            "get": protected("events", "events", "Server-sent events: every event is `event: instance` with `data: {type, time, instance, logs}`", json!({
                "200": { "description": "`text/event-stream`; `type` is initial, create, update, delete, log or shutdown",
                         "content": { "text/event-stream": {} } },
                "429": error("Too many open event streams"),
            })),
        },
        "/v1/info": {
            "get": protected("info", "master", "The master", json!({
                "200": body("The master", schema("MasterInfo")),
            })),
            "post": with_body(protected("updateInfo", "master", "Set the master's alias", json!({
                "200": body("The master", schema("MasterInfo")),
            })), schema("UpdateMasterAliasRequest")),
        },
        "/v1/tcping": {
            "get": with_params(protected("tcping", "master", "Can the master open a TCP connection to target?", json!({
                    "200": body("The outcome (connected or not)", schema("TCPingResult")),
                    "400": error("Missing or invalid target"),
                    "429": error("Too many probes at once"),
                })), json!([{ "name": "target", "in": "query", "required": true,
                              "description": "`host:port` (`[v6]:port`)",
                              "schema": { "type": "string", "minLength": 1,
                                          "pattern": crate::tcping::TARGET_PATTERN } }])),
        },
        "/v1/metrics": {
            "get": protected("metrics", "master", "OpenMetrics text (an addition)", json!({
                "200": { "description": "OpenMetrics text",
                         "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } },
            })),
        },
        "/v1/key/rotate": {
            "post": protected("rotateKey", "master", "A new API key, shown once (an addition; `PATCH /v1/instances/********` does the same)", json!({
                "200": body("The new key", json!({ "type": "object", "required": ["key"],
                    "properties": { "key": { "type": "string" } } })),
                "409": error("The key is set by NODEPASS_API_KEY"),
            })),
        },
        "/v1/export": {
            "get": protected("exportInstances", "instances", "Every instance with its full URL (keys included), for backups (an addition)", json!({
                "200": body("The backup", schema("Backup")),
            })),
        },
        "/v1/import": {
            "post": with_body(protected("importInstances", "instances", "Recreate instances from a backup, or from a running Go NodePass master (`from`, `key`) (an addition)", json!({
                "200": body("What was imported and skipped", schema("ImportReport")),
                "502": error("The Go master could not be read"),
            })), schema("ImportBody")),
        },
        "/v1/openapi.json": { "get": public("openapi", "This document", json!({
            "200": { "description": "OpenAPI 3.1 document", "content": { "application/json": { "schema": { "type": "object" } } } },
        })) },
        "/v1/docs": { "get": public("docs", "The Swagger UI (redirect)", json!({
            "308": { "description": "Redirect to `/v1/docs/index.html`" },
        })) },
        "/v1/docs/{file}": { "get": with_params(public("docsFile", "A Swagger UI file", json!({
                "200": { "description": "The file" },
                "404": error("No such file"),
            })), json!([{ "name": "file", "in": "path", "required": true, "schema": { "type": "string" } }])) },
        "/v1/health": { "get": public("health", "200 while serving (an addition)", json!({
            "200": body("Serving", json!({ "type": "object", "required": ["status"], "properties": { "status": { "type": "string" } } })),
            "503": error("Shutting down"),
        })) },
    });
    // Every operation of `/v1/instances/{id}` takes the id.
    let mut paths = paths;
    if let Some(item) = paths["/v1/instances/{id}"].as_object_mut() {
        for op in item.values_mut() {
            op["parameters"] = id_param();
        }
    }
    // The dashboard's endpoints.
    for (path, item) in crate::session::np_paths()
        .into_iter()
        .chain(crate::traffic::np_paths())
        .chain(crate::fleet::np_paths())
    {
        paths[path] = item;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "NodePass master API (NodePass dialect)",
            "description": "The contract of the NodePass v1.14 master: bare JSON, errors as `{\"error\": \"message\"}`. Send the API key in `X-API-Key` (or `Authorization: Bearer`). Tunnel keys are always masked as `****`; a URL sent back with the masked key keeps the stored key.",
            "license": { "name": "BSD-3-Clause" },
            "version": env!("CARGO_PKG_VERSION"),
        },
        "servers": [{ "url": if prefix.is_empty() { "/" } else { prefix } }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKeyAuth": { "type": "apiKey", "in": "header", "name": "X-API-Key",
                                "description": "The master's API key" },
                "bearer": { "type": "http", "scheme": "bearer",
                            "description": "The same API key as `Authorization: Bearer KEY`" },
            },
            "schemas": all_schemas(),
        },
        "tags": [
            { "name": "instances", "description": "Managed server and client tunnels" },
            { "name": "events", "description": "Live changes as server-sent events" },
            { "name": "master", "description": "The master itself" },
            { "name": "session", "description": "Browser sign-in for the dashboard (a session cookie)" },
            { "name": "docs", "description": "This description and its UI (no API key needed)" },
        ],
    })
}

fn with_params(mut op: Value, params: Value) -> Value {
    op["parameters"] = params;
    op
}

fn public(id: &str, summary: &str, responses: Value) -> Value {
    json!({ "operationId": id, "tags": ["docs"], "summary": summary, "security": [{}], "responses": responses })
}

fn all_schemas() -> Value {
    let mut all = schemas();
    let map = all.as_object_mut().expect("schemas are an object");
    for (name, schema) in crate::transfer::schemas() {
        map.insert(name.to_string(), schema);
    }
    for (name, schema) in crate::session::np_schemas()
        .into_iter()
        .chain(crate::traffic::np_schemas())
        .chain(crate::fleet::np_schemas())
    {
        map.insert(name.to_string(), schema);
    }
    all
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer", "minimum": 0 });
    let targets = json!({ "type": "array", "description": "Per-target health and counters (an addition)",
        "items": { "type": "object",
            "required": ["address", "up", "selected", "probe_latency_ms", "active", "total",
                         "failed_dials", "bytes_in", "bytes_out"],
            "properties": {
                "address": string, "up": { "type": "boolean" }, "selected": { "type": "boolean" },
                "probe_latency_ms": { "type": ["number", "null"] },
                "active": int, "total": int, "failed_dials": int, "bytes_in": int, "bytes_out": int } } });
    let meta = json!({
        "type": "object",
        "properties": {
            "peer": { "type": "object", "properties": {
                "sid": string, "type": string, "alias": string } },
            "tags": { "type": "object", "propertyNames": { "minLength": 1, "maxLength": 256 },
                      "additionalProperties": { "type": "string", "maxLength": 256 } },
        },
    });
    let meta_request = {
        let mut m = meta.clone();
        m["additionalProperties"] = json!(false);
        m["properties"]["peer"]["additionalProperties"] = json!(false);
        m["properties"]["peer"]["properties"]["sid"] =
            json!({ "type": "string", "maxLength": 256 });
        m["properties"]["peer"]["properties"]["type"] =
            json!({ "type": "string", "maxLength": 256 });
        m["properties"]["peer"]["properties"]["alias"] =
            json!({ "type": "string", "maxLength": 256 });
        m
    };
    let nullable = json!({ "type": ["string", "null"] });
    let action = json!({ "type": "string", "enum": ["start", "stop", "restart", "reset"] });
    json!({
        "Error": { "type": "object", "required": ["error"], "properties": {
            "error": { "type": "string", "description": "What is wrong, naming the field" },
            "code": { "type": "string", "description": "Our error code (an addition), e.g. VALIDATION_ERROR" } } },
        "Instance": {
            "type": "object",
            "required": ["id", "alias", "type", "status", "url", "config", "restart", "meta",
                         "mode", "ping", "pool", "tcps", "udps", "tcprx", "tcptx", "udprx", "udptx"],
            "properties": {
                "id": string, "alias": string,
                "type": { "type": "string", "enum": ["server", "client", ""],
                          "description": "`\"\"` for the API key's pseudo-instance" },
                "status": { "type": "string", "enum": ["running", "stopped", "error", ""] },
                "url": { "type": "string", "description": "Key masked as `****`" },
                "config": string, "restart": { "type": "boolean" },
                "meta": { "type": "object", "required": ["peer", "tags"], "properties": meta["properties"].clone() },
                "mode": int, "ping": int, "pool": int, "tcps": int, "udps": int,
                "tcprx": int, "tcptx": int, "udprx": int, "udptx": int,
                "state": { "type": "string", "enum": ["stopped", "starting", "running", "error", ""],
                           "description": "Our detailed status (an addition)" },
                "error": nullable, "uptime": int, "created_at": string, "updated_at": string,
                "local_addrs": { "type": "object", "properties": {
                    "tunnel": nullable, "users": nullable, "users_udp": nullable } },
                "targets": targets,
                "node": { "type": ["string", "null"],
                          "description": "The fleet node that runs it; null outside fleet mode (an addition)" },
            },
        },
        "CreateInstanceRequest": { "type": "object", "required": ["url"], "additionalProperties": false,
            "properties": {
                "url": { "type": "string", "pattern": crate::instances::URL_PATTERN,
                         "description": "server://... or client://..., key included" },
                "alias": { "type": "string", "maxLength": 256 },
                "restart": { "type": "boolean", "default": true },
                "meta": meta_request.clone(),
                "node": { "type": ["string", "null"],
                          "description": "Fleet mode: the node to run it (default this master's; an addition)" } } },
        "UpdateInstanceRequest": { "type": "object", "additionalProperties": false,
            "properties": {
                "alias": { "type": ["string", "null"], "maxLength": 256 },
                "action": action.clone(),
                "restart": { "type": "boolean" },
                "meta": meta_request } },
        "PutInstanceRequest": { "oneOf": [
            { "type": "object", "required": ["url"], "additionalProperties": false,
              "properties": { "url": { "type": "string", "pattern": crate::instances::URL_PATTERN,
                  "description": "The new URL; `****` as the key keeps the stored key" } } },
            { "type": "object", "required": ["action"], "additionalProperties": false,
              "properties": { "action": action } } ] },
        "UpdateMasterAliasRequest": { "type": "object", "required": ["alias"], "additionalProperties": false,
            "properties": { "alias": { "type": "string", "maxLength": 256 } } },
        "MasterInfo": { "type": "object",
            "required": ["mid", "alias", "os", "arch", "noc", "cpu", "mem_total", "mem_used",
                         "swap_total", "swap_used", "netrx", "nettx", "diskr", "diskw", "sysup",
                         "ver", "name", "uptime", "log", "tls", "crt", "key"],
            "properties": {
                "mid": string, "alias": string, "os": string,
                "arch": { "type": "string", "description": "Go's names: amd64, arm64, ..." },
                "noc": int, "cpu": int, "mem_total": int, "mem_used": int, "swap_total": int,
                "swap_used": int, "netrx": int, "nettx": int, "diskr": int, "diskw": int,
                "sysup": int,
                "ver": { "type": "string", "description": "The NodePass API level served, e.g. v1.14.0" },
                "name": string, "uptime": int, "log": string,
                "tls": { "type": "string", "enum": ["0", "1", "2"] }, "crt": string, "key": string,
                "version": { "type": "string", "description": "Our own version (an addition)" },
                "pid": int,
                "instances": { "type": "object" } } },
        "TCPingResult": { "type": "object", "required": ["target", "connected", "latency", "error"],
            "properties": { "target": string, "connected": { "type": "boolean" },
                "latency": { "type": "integer", "minimum": 0, "description": "Milliseconds" },
                "error": nullable } },
    })
}
