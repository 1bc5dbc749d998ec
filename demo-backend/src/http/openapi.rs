//! The OpenAPI document, generated from the handlers' annotations: a route and its documentation
//! are registered together, so an undocumented route cannot exist.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::routes::{alerts, deployments, health, incidents, me, metrics, services};

pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Demo Monitoring API",
        version = "1.0.0",
        description = "Services, metrics, alerts, incidents and deployments of one organisation. \
                       Authenticate with `Authorization: Bearer <token>`; scopes: read, write, admin. \
                       Errors are application/problem+json. Lists are paged with `limit` and `cursor`."
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
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route of the application with its documentation.
pub fn routes() -> OpenApiRouter<AppState> {
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
