//! The OpenAPI document, generated from the handlers' annotations: a route and its documentation
//! are registered together, so an undocumented route cannot exist.
//!
//! Error responses are completed here, once, by [`ProblemResponses`], from what each operation
//! declares, so that the document lists every answer the API can give:
//! - every 4xx and 5xx response is `application/problem+json` with the `Problem` schema;
//! - an operation that needs a token (any that does not say `security(())`) can answer 401 and
//!   403 (with `WWW-Authenticate`), 429 (with `Retry-After`), 500 and 503;
//! - parameters or a request body: 400 (unparsable path, query string, header or JSON);
//!   a path parameter: 404; query or header parameters: 422 (a value out of range);
//!   a JSON request body: 413, 415 and 422.
//!
//! A new route therefore declares only its success responses and the errors particular to it,
//! by status and description, e.g. `(status = 409, description = "the incident is resolved")`;
//! the content type, schema and standard errors are added here. Register the handler in
//! `routes` and in the route snapshot test (`DOCUMENTED_ROUTES`).

use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::problem::Problem;
use crate::http::routes::{alerts, deployments, health, incidents, me, metrics, services};

pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

/// The media type of every error response.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Demo Monitoring API",
        version = "1.0.0",
        description = "Services, metrics, alerts, incidents and deployments of one organisation. \
                       Authenticate with `Authorization: Bearer <token>`; scopes: read, write, admin. \
                       Errors are application/problem+json. Lists are paged with `limit` and `cursor`. \
                       Request bodies are JSON objects; unknown fields are refused."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "health", description = "Process and database probes (no token needed)"),
        (name = "identity", description = "Who the token belongs to"),
        (name = "services", description = "The service catalog and current health"),
        (name = "metrics", description = "Time series per service"),
        (name = "alerts", description = "Alerts raised by monitors"),
        (name = "incidents", description = "Incidents, their lifecycle and timeline"),
        (name = "deployments", description = "Releases of services"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`dmo_...`) from `demo-backend token create`; \
                         scopes read, write, admin",
                    ))
                    .build(),
            ),
        );
    }
}

/// Completes every operation's error responses; see the module documentation.
pub struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert(Problem::name().into_owned(), Problem::schema());
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                drop_null_from_request_body(operation);
                complete_error_responses(operation);
            }
        }
    }
}

/// The error answers an operation can give because of what it declares.
fn standard_errors(operation: &Operation) -> Vec<(u16, &'static str)> {
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_parameter_in = |location: ParameterIn| {
        parameters
            .iter()
            .any(|parameter| parameter.parameter_in == location)
    };
    let has_json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    // No `security` of its own means the document's: a bearer token.
    let needs_token = operation.security.as_ref().is_none_or(|requirements| {
        requirements
            .iter()
            .all(|requirement| *requirement != SecurityRequirement::default())
    });

    let mut errors = Vec::new();
    if !parameters.is_empty() || has_json_body {
        errors.push((
            400,
            "The path, query string, a header or the JSON body could not be parsed, or a query parameter is unknown",
        ));
    }
    if needs_token {
        errors.push((
            401,
            "No token, or a token that is unknown, revoked or expired",
        ));
        errors.push((403, "The token lacks the scope this operation needs"));
    }
    if has_parameter_in(ParameterIn::Path) {
        errors.push((
            404,
            "Nothing of that id in the caller's organisation (another organisation's too)",
        ));
    }
    if has_json_body {
        errors.push((413, "The body is larger than 64 KiB"));
        errors.push((
            415,
            "The body is not sent as `Content-Type: application/json`",
        ));
    }
    if has_json_body
        || has_parameter_in(ParameterIn::Query)
        || has_parameter_in(ParameterIn::Header)
    {
        errors.push((
            422,
            "A well-formed request with an unacceptable value; `field` names it (`body` for the whole body)",
        ));
    }
    if needs_token {
        errors.push((
            429,
            "The token's rate limit is exceeded; retry after `Retry-After` seconds",
        ));
        errors.push((500, "An unexpected error; the cause is logged, not sent"));
        errors.push((503, "The database is not reachable; retry later"));
    }
    errors
}

/// A request body, even an optional one, is a JSON object and never `null` (see
/// [`crate::http::extract`]): utoipa documents an optional body's schema as "null or the object",
/// so the null alternative is dropped; whether a body may be left out is `required`.
fn drop_null_from_request_body(operation: &mut Operation) {
    let Some(body) = operation.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let mut not_null = one_of.items.iter().filter(|item| !is_null_schema(item));
        if let (Some(only), None) = (not_null.next(), not_null.next()) {
            content.schema = Some(only.clone());
        }
    }
}

fn is_null_schema(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(object))
        if object.schema_type == SchemaType::Type(Type::Null))
}

fn complete_error_responses(operation: &mut Operation) {
    for (status, description) in standard_errors(operation) {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    }
    for (status, response) in &mut operation.responses.responses {
        let is_error = status.starts_with('4') || status.starts_with('5');
        let RefOr::T(response) = response else {
            continue;
        };
        if !is_error {
            continue;
        }
        response.content.clear();
        response.content.insert(
            PROBLEM_CONTENT_TYPE.to_owned(),
            Content::new(Some(Ref::from_schema_name(Problem::name()))),
        );
        match status.as_str() {
            "401" | "403" => {
                response.headers.insert(
                    "WWW-Authenticate".to_owned(),
                    header(
                        ObjectBuilder::new().schema_type(Type::String),
                        "The Bearer challenge (RFC 6750)",
                    ),
                );
            }
            "429" => {
                response.headers.insert(
                    "Retry-After".to_owned(),
                    header(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(1)),
                        "Seconds to wait before the next request",
                    ),
                );
            }
            _ => {}
        }
    }
}

fn header(schema: ObjectBuilder, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(schema)
        .description(Some(description))
        .build()
}

/// The application's routes and its OpenAPI document, with the error responses completed.
pub fn router_and_document() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = routes().split_for_parts();
    ProblemResponses.modify(&mut document);
    (router, document)
}

/// Every route of the application with its documentation.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(me::me))
        .routes(routes!(services::list_services))
        .routes(routes!(services::get_service))
        .routes(routes!(services::list_monitors))
        .routes(routes!(metrics::list_series))
        .routes(routes!(metrics::query_range))
        .routes(routes!(metrics::list_samples))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(
            incidents::list_incidents,
            incidents::create_incident
        ))
        .routes(routes!(incidents::get_incident))
        .routes(routes!(incidents::get_incident_by_number))
        .routes(routes!(incidents::acknowledge_incident))
        .routes(routes!(incidents::resolve_incident))
        .routes(routes!(incidents::add_note))
        .routes(routes!(incidents::link_alert))
        .routes(routes!(deployments::list_deployments))
}
