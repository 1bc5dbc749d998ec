//! The MCP server handler: which tools a caller sees, and the routing of tools, resources,
//! prompts and completions to the modules that implement them.
//!
//! One [`ExternalServer`] serves one stdio session, or one HTTP request (the HTTP transport keeps
//! no sessions). Its tool router is built from the configuration (toolsets, `--read-only`),
//! narrowed further by the HTTP endpoint; the caller's token then narrows it per request: without
//! the `write` scope the write tools are absent from `tools/list` and refused by `tools/call`.
//! Over stdio the caller is the configured token; over HTTP it is the token of the request being
//! served, so two users' requests never share credentials.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::tool::{ToolCallContext, ToolRouter};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams,
    CompleteResult, ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ResultType,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::api::ApiClient;
use crate::bounded::Progress;
use crate::config::Settings;
use crate::credentials::{Caller, Identity, IdentityCache, StdioCredentials, TokenDigest};
use crate::error::Error;
use crate::links::Links;
use crate::tools::{self, ToolCall, ToolFailure};
use crate::{completion, prompts, resources};

/// How long a validated token is trusted before `GET /api/v1/me` is asked again.
pub const IDENTITY_TIME_TO_LIVE: Duration = Duration::from_secs(60);

/// How long tools/list waits to learn the caller's scopes before listing without them.
pub const LIST_TOOLS_IDENTITY_WAIT: Duration = Duration::from_secs(3);

/// What every server value of one process shares: settings, the API client and the token cache.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub api: ApiClient,
    pub identities: IdentityCache,
    pub links: Links,
}

/// Where a request's caller comes from.
#[derive(Debug, Clone)]
pub enum CallerSource {
    /// stdio: the one configured token.
    Stdio(Arc<StdioCredentials>),
    /// HTTP: the token the HTTP layer validated for this very request.
    PerRequest,
}

/// The MCP server of one stdio session or one HTTP request.
#[derive(Debug, Clone)]
pub struct ExternalServer {
    shared: Arc<Shared>,
    source: CallerSource,
    /// The tools the configuration offers; narrowed per caller by scope.
    tool_router: ToolRouter<Self>,
}

/// How hosts name this server to people.
pub const SERVER_TITLE: &str = "Demo Monitoring";
/// One line on what the server offers, shown by hosts beside the title.
pub const SERVER_DESCRIPTION: &str = "Your monitoring data in your assistant: services and their health, metrics, \
alerts, incidents and deployments, with the incident changes a responder makes.";

const INSTRUCTIONS: &str = "Monitoring data of the user's organisation: services and their health, metrics, alerts, \
incidents and deployments. Start with find_services (what is unhealthy?) or list_incidents; service_overview \
gives one service's whole picture. Services are named like checkout-api and incidents like INC-42. Every item \
has a web_url to show the user. Confirm with the user before resolving an incident.";

impl Shared {
    pub fn new(settings: Settings) -> Result<Arc<Self>, Error> {
        let api = ApiClient::new(settings.api_url.clone(), settings.api)?;
        Ok(Arc::new(Self {
            links: Links::new(settings.web_url.clone()),
            identities: IdentityCache::new(IDENTITY_TIME_TO_LIVE),
            api,
            settings,
        }))
    }
}

impl ExternalServer {
    pub fn new(shared: Arc<Shared>, source: CallerSource) -> Self {
        let tool_router = tools::router_for(&shared.settings);
        Self::with_tools(shared, source, tool_router)
    }

    /// A server offering `tool_router` (the configuration's tools, or fewer: see `http`).
    pub fn with_tools(
        shared: Arc<Shared>,
        source: CallerSource,
        tool_router: ToolRouter<Self>,
    ) -> Self {
        Self {
            shared,
            source,
            tool_router,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The caller of the request of `context`: its token, validated, and who it belongs to.
    pub async fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, Error> {
        match &self.source {
            CallerSource::Stdio(credentials) => {
                let token = credentials.current()?;
                let identity = self
                    .shared
                    .identities
                    .validate(&self.shared.api, &token, &context.ct)
                    .await?;
                Ok(Caller { token, identity })
            }
            CallerSource::PerRequest => context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Caller>())
                .cloned()
                .ok_or(Error::MissingBearer),
        }
    }

    /// Everything a tool body (or a resource or prompt) needs for the request of `context`.
    pub async fn begin(&self, context: &RequestContext<RoleServer>) -> Result<ToolCall, Error> {
        let caller = self.caller(context).await?;
        Ok(self.tool_call(caller, context))
    }

    /// What a tool body works with, for `caller` in the request of `context`.
    pub fn tool_call(&self, caller: Caller, context: &RequestContext<RoleServer>) -> ToolCall {
        ToolCall {
            api: self.shared.api.for_caller(caller.token, context.ct.clone()),
            identity: caller.identity,
            links: self.shared.links.clone(),
            progress: Progress::of(context),
        }
    }

    /// A failed tool call's result. A token the API rejected (`token`, or over stdio the
    /// configured one) is forgotten, so a fixed or rotated token is tried afresh on the next call.
    pub fn failure(&self, action: &str, token: Option<&TokenDigest>, error: &Error) -> ToolFailure {
        if matches!(error, Error::TokenRejected { .. }) {
            let digest = match (token, &self.source) {
                (Some(digest), _) => Some(*digest),
                (None, CallerSource::Stdio(credentials)) => {
                    credentials.current().ok().map(|token| token.digest())
                }
                (None, CallerSource::PerRequest) => None,
            };
            if let Some(digest) = digest {
                self.shared.identities.forget(&digest);
            }
        }
        ToolFailure::new(action, error)
    }

    /// The tools `identity` may use (all configured ones when the caller is unknown, e.g. a
    /// rejected token, so that the calls can explain what is wrong).
    pub fn visible_tools(&self, identity: Option<&Identity>) -> Vec<Tool> {
        let can_write = identity.is_none_or(Identity::can_write);
        self.tool_router
            .list_all()
            .into_iter()
            .filter(|tool| can_write || !tools::is_write_tool(&tool.name))
            .collect()
    }
}

impl ServerHandler for ExternalServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_completions()
                .enable_prompts()
                .enable_resources()
                .enable_tools()
                .build(),
        )
        .with_server_info(
            Implementation::new("external-mcp", env!("CARGO_PKG_VERSION"))
                .with_title(SERVER_TITLE)
                .with_description(SERVER_DESCRIPTION)
                .with_website_url(self.shared.settings.web_url.as_str()),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // A slow API must not hold up the host's tool list: past a few seconds, list what the
        // configuration offers and let the calls explain any token problem.
        let identity = tokio::time::timeout(LIST_TOOLS_IDENTITY_WAIT, self.caller(&context))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|caller| caller.identity);
        let mut result = ListToolsResult::with_all_items(self.visible_tools(identity.as_ref()));
        result.result_type = Some(ResultType::COMPLETE);
        // The list depends on the caller's token: never cached for anyone else.
        result.cache_scope = Some(CacheScope::Private);
        result.ttl_ms = Some(0);
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if tools::is_write_tool(&request.name)
            && self.tool_router.has_route(&request.name)
            && let Ok(caller) = self.caller(&context).await
            && !caller.identity.can_write()
        {
            let message = format!(
                "Could not run {}: your token has the scopes [{}] and changing incidents needs `write`. \
                 Ask an admin for a token with the write scope.",
                request.name,
                caller.identity.scopes.join(", ")
            );
            return Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
        }
        let call = ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(resources::listed()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let call = self
            .begin(&context)
            .await
            .map_err(|error| resources::protocol_error(&error))?;
        resources::read(&call, &request.uri).await.map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(prompts::listed()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let call = self
            .begin(&context)
            .await
            .map_err(|error| resources::protocol_error(&error))?;
        prompts::get(&call, request).await.map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        // Completion is a convenience: without a usable token it offers nothing rather than failing.
        match self.begin(&context).await {
            Ok(call) => Ok(completion::complete(&call, &request).await),
            Err(_) => Ok(CompleteResult::default()),
        }
    }
}
