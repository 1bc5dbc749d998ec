//! The `services` toolset: find services with their health, and one service's overview.

use chrono::{DateTime, Utc};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::run::Parameters;
use super::{
    AlertBrief, AlertItem, DeploymentBrief, DeploymentItem, Health, IncidentBrief, IncidentItem,
    Json, Readable, Tier, ToolCall, ToolFailure, hint_line, list_hint, resolve_service, rounded,
    short_time,
};
use crate::api::{self, ListQuery};
use crate::bounded::{self, API_MAX_PAGE};
use crate::error::Error;
use crate::server::ExternalServer;

/// The most catalog pages one `find_services` call reads (200 services each).
const MAX_CATALOG_PAGES: u32 = 10;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FindServicesArgs {
    /// Part of the name, case-insensitive.
    pub query: Option<String>,
    pub team: Option<String>,
    pub tier: Option<Tier>,
    pub tag: Option<String>,
    pub health: Option<Health>,
    /// Default 20.
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
    /// next_cursor of the previous call.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// Service name, e.g. checkout-api (or its id).
    pub service: String,
}

/// A service and its health now.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServiceSummary {
    pub name: String,
    pub team: String,
    pub tier: String,
    /// healthy, degraded or critical.
    pub health: String,
    pub firing_alerts: i64,
    pub open_incidents: i64,
    pub error_percent: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub requests_per_second: Option<f64>,
    pub web_url: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServiceList {
    /// Unhealthy first.
    pub services: Vec<ServiceSummary>,
    /// Services matching the filters, by health.
    pub matched: HealthCounts,
    pub truncated: bool,
    pub next_cursor: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct HealthCounts {
    pub critical: u32,
    pub degraded: u32,
    pub healthy: u32,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServiceOverview {
    #[serde(flatten)]
    pub service: ServiceSummary,
    pub id: String,
    pub description: String,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    /// Runbook, dashboard, repository.
    pub links: Vec<NamedLink>,
    pub health_as_of: Option<DateTime<Utc>>,
    /// Latest value of each metric.
    pub metrics: Vec<LatestMetric>,
    pub firing_alerts_list: Vec<AlertBrief>,
    /// Open and acknowledged.
    pub open_incidents_list: Vec<IncidentBrief>,
    pub recent_deployments: Vec<DeploymentBrief>,
    /// True when a list above was cut (see list_alerts, list_incidents).
    pub truncated: bool,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NamedLink {
    pub title: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LatestMetric {
    pub name: String,
    /// ms, ratio (0-1) or rps.
    pub unit: String,
    pub latest: Option<f64>,
    pub at: Option<DateTime<Utc>>,
}

#[tool_router(router = services_router, vis = "pub(crate)")]
impl ExternalServer {
    #[tool(
        title = "Find services",
        description = "Find services in the catalog with their health now (critical/degraded/healthy), firing alerts, open incidents, error %, p95 latency and traffic. Unhealthy first. Use for 'what is broken?' or to get a service's exact name.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn find_services(
        &self,
        arguments: Parameters<FindServicesArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ServiceList>, ToolFailure> {
        self.run(arguments, context, "find services", find).await
    }

    #[tool(
        title = "Service overview",
        description = "Everything about one service now: health, latest metrics, firing alerts, open incidents, the last 5 deployments, owner and runbook links.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn service_overview(
        &self,
        arguments: Parameters<ServiceArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ServiceOverview>, ToolFailure> {
        self.run(
            arguments,
            context,
            "get the service overview",
            async |call: &ToolCall, args: ServiceArgs| overview(call, &args.service).await,
        )
        .await
    }
}

/// Reads the whole (filtered) catalog, ranks it by health and returns one slice.
#[instrument(skip_all, fields(tool = "find_services"))]
pub async fn find(call: &ToolCall, args: FindServicesArgs) -> Result<ServiceList, Error> {
    let (services, complete) = scan_catalog(call, &args).await?;
    let mut matched = HealthCounts::default();
    let mut summaries: Vec<ServiceSummary> = services
        .into_iter()
        .map(|service| summary(service, call))
        .filter(|summary| match args.health {
            None => true,
            Some(Health::Critical) => summary.health == "critical",
            Some(Health::Degraded) => summary.health == "degraded",
            Some(Health::Healthy) => summary.health == "healthy",
        })
        .collect();
    for service in &summaries {
        match service.health.as_str() {
            "critical" => matched.critical += 1,
            "degraded" => matched.degraded += 1,
            _ => matched.healthy += 1,
        }
    }
    summaries.sort_by(|left, right| {
        health_rank(&left.health)
            .cmp(&health_rank(&right.health))
            .then(
                (right.open_incidents + right.firing_alerts)
                    .cmp(&(left.open_incidents + left.firing_alerts)),
            )
            .then(left.name.cmp(&right.name))
    });
    let nothing = summaries.is_empty();
    let slice = bounded::ranked_slice(
        "find_services",
        summaries,
        args.cursor.as_deref(),
        args.limit,
    )?;
    let hint = if !complete {
        Some(format!(
            "Only the first {} services were read; narrow with query, team, tier or tag.",
            MAX_CATALOG_PAGES * API_MAX_PAGE
        ))
    } else if nothing {
        Some(
            "No service matches: drop a filter, or check spelling with a shorter query.".to_owned(),
        )
    } else {
        None
    };
    let hint = list_hint(slice.next_cursor.as_deref(), hint);
    Ok(ServiceList {
        services: slice.items,
        matched,
        truncated: slice.truncated || !complete,
        next_cursor: slice.next_cursor,
        hint,
    })
}

/// The catalog pages matching the API-side filters; false when the page cap stopped the scan.
async fn scan_catalog(
    call: &ToolCall,
    args: &FindServicesArgs,
) -> Result<(Vec<api::Service>, bool), Error> {
    let filters = ListQuery::new()
        .with(
            "q",
            args.query
                .as_deref()
                .map(str::trim)
                .filter(|q| !q.is_empty()),
        )
        .with("team", args.team.as_deref())
        .with("tier", args.tier.map(tier_name))
        .with("tag", args.tag.as_deref());
    let mut services = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 1..=MAX_CATALOG_PAGES {
        let page = call
            .api
            .services(&filters.clone().page(API_MAX_PAGE, cursor.as_deref()))
            .await?;
        services.extend(page.items);
        let total = page.next_cursor.is_none().then_some(page_number);
        call.progress
            .report(
                page_number,
                total,
                format!("read {} services", services.len()),
            )
            .await;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((services, true)),
        }
    }
    Ok((services, false))
}

/// One service's overview: five API calls at once after the name is resolved.
#[instrument(skip_all, fields(tool = "service_overview"))]
pub async fn overview(call: &ToolCall, reference: &str) -> Result<ServiceOverview, Error> {
    const LISTED: u32 = 10;
    let service = resolve_service(&call.api, reference).await?;
    let id = service.id;
    let of_service = ListQuery::new().with("service_id", Some(id));
    let firing = of_service
        .clone()
        .with("state", Some("firing"))
        .page(LISTED, None);
    let opened = of_service
        .clone()
        .with("status", Some("open"))
        .page(LISTED, None);
    let acknowledged = of_service
        .clone()
        .with("status", Some("acknowledged"))
        .page(LISTED, None);
    let latest = of_service.page(5, None);
    let (metrics, alerts, open, acknowledged, deployments) = tokio::try_join!(
        call.api.metric_series(id),
        call.api.alerts(&firing),
        call.api.incidents(&opened),
        call.api.incidents(&acknowledged),
        call.api.deployments(&latest),
    )?;
    let truncated = alerts.next_cursor.is_some()
        || open.next_cursor.is_some()
        || acknowledged.next_cursor.is_some();
    let mut incidents: Vec<IncidentBrief> = open
        .items
        .into_iter()
        .chain(acknowledged.items)
        .map(|incident| IncidentBrief::from_item(IncidentItem::from_api(incident, &call.links)))
        .collect();
    incidents.sort_by_key(|incident| std::cmp::Reverse(incident.opened_at));
    Ok(ServiceOverview {
        id: id.to_string(),
        description: service.description.clone(),
        owner: service
            .owner
            .as_ref()
            .map(|owner| format!("{} <{}>", owner.name, owner.email)),
        tags: service.tags.clone(),
        links: service
            .links
            .iter()
            .map(|link| NamedLink {
                title: link.title.clone(),
                url: link.url.clone(),
            })
            .collect(),
        health_as_of: service.health.as_of,
        metrics: metrics
            .into_iter()
            .map(|series| LatestMetric {
                name: series.name,
                unit: series.unit,
                latest: series.latest_value.map(|value| rounded(value, 4)),
                at: series.latest_at,
            })
            .collect(),
        firing_alerts_list: alerts
            .items
            .into_iter()
            .map(|alert| AlertBrief::from_item(AlertItem::from_api(alert, &call.links)))
            .collect(),
        open_incidents_list: incidents,
        recent_deployments: deployments
            .items
            .into_iter()
            .map(|deployment| {
                DeploymentBrief::from_item(DeploymentItem::from_api(deployment, &call.links))
            })
            .collect(),
        truncated,
        hint: truncated.then(|| {
            format!(
                "Some lists were cut at {LISTED}; list_alerts and list_incidents with service={} show all.",
                service.name
            )
        }),
        service: summary(service, call),
    })
}

pub fn summary(service: api::Service, call: &ToolCall) -> ServiceSummary {
    ServiceSummary {
        web_url: call.links.service(&service.name),
        name: service.name,
        team: service.team,
        tier: service.tier,
        health: service.health.status,
        firing_alerts: service.health.firing_alerts,
        open_incidents: service.health.open_incidents,
        error_percent: service
            .health
            .error_rate
            .map(|ratio| rounded(ratio * 100.0, 2)),
        latency_p95_ms: service.health.latency_p95_ms.map(|ms| rounded(ms, 1)),
        requests_per_second: service.health.request_rate.map(|rps| rounded(rps, 1)),
    }
}

fn health_rank(health: &str) -> u8 {
    match health {
        "critical" => 0,
        "degraded" => 1,
        _ => 2,
    }
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Tier1 => "tier_1",
        Tier::Tier2 => "tier_2",
        Tier::Tier3 => "tier_3",
    }
}

impl ServiceSummary {
    pub fn line(&self) -> String {
        let figure = |value: Option<f64>, unit: &str| {
            value.map_or("n/a".to_owned(), |value| format!("{value}{unit}"))
        };
        format!(
            "- {} [{}] team {}, {}: firing alerts {}, open incidents {}, errors {}, p95 {}, traffic {} {}",
            self.name,
            self.health,
            self.team,
            self.tier,
            self.firing_alerts,
            self.open_incidents,
            figure(self.error_percent, "%"),
            figure(self.latency_p95_ms, " ms"),
            figure(self.requests_per_second, " rps"),
            self.web_url
        )
    }
}

impl Readable for ServiceList {
    fn readable(&self) -> String {
        let counts = &self.matched;
        let mut text = format!(
            "Matching services: {} ({} critical, {} degraded, {} healthy). Showing {}:",
            counts.critical + counts.degraded + counts.healthy,
            counts.critical,
            counts.degraded,
            counts.healthy,
            self.services.len()
        );
        for service in &self.services {
            text.push('\n');
            text.push_str(&service.line());
        }
        text.push_str(&hint_line(self.hint.as_deref()));
        text
    }
}

impl Readable for ServiceOverview {
    fn readable(&self) -> String {
        let mut text = format!("{}\n{}", self.service.line(), self.description);
        if let Some(owner) = &self.owner {
            text.push_str(&format!("\nOwner: {owner}"));
        }
        for link in &self.links {
            text.push_str(&format!("\n{}: {}", link.title, link.url));
        }
        text.push_str("\nLatest metrics:");
        for metric in &self.metrics {
            let value = metric
                .latest
                .map_or("n/a".to_owned(), |value| value.to_string());
            text.push_str(&format!("\n- {} = {value} {}", metric.name, metric.unit));
        }
        let section = |text: &mut String, title: &str, lines: Vec<String>| {
            text.push_str(&format!("\n{title} ({}):", lines.len()));
            if lines.is_empty() {
                text.push_str(" none");
            }
            for line in lines {
                text.push('\n');
                text.push_str(&line);
            }
        };
        section(
            &mut text,
            "Firing alerts",
            self.firing_alerts_list
                .iter()
                .map(AlertBrief::line)
                .collect(),
        );
        section(
            &mut text,
            "Open incidents",
            self.open_incidents_list
                .iter()
                .map(IncidentBrief::line)
                .collect(),
        );
        section(
            &mut text,
            "Recent deployments",
            self.recent_deployments
                .iter()
                .map(DeploymentBrief::line)
                .collect(),
        );
        if let Some(as_of) = self.health_as_of {
            text.push_str(&format!("\nHealth as of {}.", short_time(as_of)));
        }
        text.push_str(&hint_line(self.hint.as_deref()));
        text
    }
}
