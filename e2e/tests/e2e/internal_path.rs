//! The internal user path, end to end, and parity between the two faces: the product's assistant
//! calls the real `internal-mcp` binary over HTTP with an internal credential minted by
//! `internal-mcp token`; it reads the same PostgreSQL the real `demo-backend` binary serves, and
//! the same question asked through `external-mcp` gets the same answer.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use demo_backend::seed::{SeedOptions, Story, stories};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use test_harness::backend::{Backend, SEED_UNTIL, email, token};
use test_harness::process::{binary, free_port, run, spawn, wait_until_ready};
use tokio::process::{Child, Command};

type Client = RunningService<RoleClient, ()>;

const READER_PASSWORD: &str = "e2e-reader";
/// A test key; real deployments read theirs from a file only the services can read.
pub(crate) const SIGNING_KEY: &str = "e2e-signing-key-of-at-least-thirty-two-bytes";

/// `internal-mcp serve` on the backend's database, as the product deploys it beside the backend.
pub(crate) struct InternalMcp {
    pub(crate) url: String,
    database_url: String,
    _process: Child,
}

impl InternalMcp {
    pub(crate) async fn start(backend: &Backend) -> Self {
        let database = &backend.database;
        // Roles are cluster-wide: the migration made the reader role; give it a login here.
        test_harness::give_role_a_login("internal_mcp_reader", READER_PASSWORD)
            .await
            .unwrap();
        let options = &database.connect_options;
        let reader_url = format!(
            "postgres://internal_mcp_reader:{READER_PASSWORD}@{}:{}/{}",
            options.get_host(),
            options.get_port(),
            database.name
        );
        let listen = format!("127.0.0.1:{}", free_port());
        let process = spawn(
            &binary("internal-mcp"),
            &["serve", "--listen", &listen],
            &[
                ("DATABASE_URL", database.url.as_str()),
                ("INTERNAL_MCP_READER_URL", reader_url.as_str()),
                ("INTERNAL_MCP_SIGNING_KEY", SIGNING_KEY),
                // The test server holds every test's database, all open to the cluster-wide
                // reader role; production refuses to start in that case.
                ("INTERNAL_MCP_ALLOW_READER_IN_OTHER_DATABASES", "true"),
                ("RUST_LOG", "warn"),
            ],
        );
        wait_until_ready(&format!("http://{listen}/healthz"), Duration::from_secs(60))
            .await
            .unwrap();
        Self {
            url: format!("http://{listen}/mcp"),
            database_url: database.url.clone(),
            _process: process,
        }
    }

    /// A client acting for `user` of `organization`, with a credential from `internal-mcp token`.
    async fn client_for(&self, organization: &str, user: &str) -> Client {
        let credential = run(
            &binary("internal-mcp"),
            &["token", "--org", organization, "--user", user],
            &[
                ("DATABASE_URL", self.database_url.as_str()),
                ("INTERNAL_MCP_SIGNING_KEY", SIGNING_KEY),
            ],
        )
        .await
        .unwrap();
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .auth_header(credential.trim());
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .unwrap()
    }
}

/// `external-mcp` as a user's host runs it, with the user's own API token.
async fn external_host(backend: &Backend, token: &str) -> Client {
    let transport =
        TokioChildProcess::new(Command::new(binary("external-mcp")).configure(|command| {
            command
                .env("DEMO_API_URL", &backend.url)
                .env("DEMO_API_TOKEN", token)
                .env("RUST_LOG", "warn");
        }))
        .unwrap();
    ().serve(transport).await.unwrap()
}

async fn call(client: &Client, tool: &str, arguments: Value) -> Value {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool}: protocol error {error}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} failed: {:?}",
        result.content
    );
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool} returned no structuredContent"))
}

/// The first column of every row of a `run_select` result.
fn first_column(result: &Value) -> BTreeSet<String> {
    result["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"))
        .iter()
        .map(|row| {
            row[0]
                .as_str()
                .unwrap_or_else(|| panic!("{row}"))
                .to_owned()
        })
        .collect()
}

pub(crate) fn acme_story() -> Story {
    let until: DateTime<Utc> = SEED_UNTIL.parse().unwrap();
    stories(&SeedOptions {
        days: 1,
        ..SeedOptions::new(until)
    })
    .into_iter()
    .find(|story| story.organization_slug == "acme")
    .expect("acme has a story")
}

#[tokio::test]
async fn the_assistant_finds_the_bad_deploy_behind_the_story_incident_with_raw_sql_and_analytics() {
    let backend = Backend::start().await;
    let internal = InternalMcp::start(&backend).await;
    let assistant = internal
        .client_for("acme", &email("acme", "responder"))
        .await;
    let story = acme_story();

    let found = call(
        &assistant,
        "run_select",
        json!({"sql": format!("SELECT 'INC-' || number FROM incidents WHERE title = '{}'", story.incident_title.replace('\'', "''"))}),
    )
    .await;
    let reference = first_column(&found)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{found}"));

    let correlation = call(
        &assistant,
        "correlate_incident",
        json!({"incident": reference}),
    )
    .await;
    let suspect = &correlation["suspects"][0];
    assert_eq!(suspect["version"], story.bad_version, "{correlation}");
    assert_eq!(suspect["service"], story.service, "{correlation}");

    // The raw face is tenant-bound by the database: globex's rows are invisible to acme's assistant.
    let organizations = call(
        &assistant,
        "run_select",
        json!({"sql": "SELECT slug FROM organizations"}),
    )
    .await;
    assert_eq!(
        first_column(&organizations),
        BTreeSet::from(["acme".to_owned()]),
        "{organizations}"
    );
    assistant.cancel().await.unwrap();
}

#[tokio::test]
async fn both_faces_agree_on_the_open_incidents_and_the_bad_deploy() {
    let backend = Backend::start().await;
    let internal = InternalMcp::start(&backend).await;
    let assistant = internal.client_for("acme", &email("acme", "viewer")).await;
    let host = external_host(&backend, &token("acme", "viewer")).await;
    let story = acme_story();

    let external_open = call(&host, "list_incidents", json!({"status": "open"})).await;
    let external_references: BTreeSet<String> = external_open["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|incident| incident["reference"].as_str().unwrap().to_owned())
        .collect();
    let internal_open = call(
        &assistant,
        "run_select",
        json!({"sql": "SELECT 'INC-' || number FROM incidents WHERE status = 'open'"}),
    )
    .await;
    assert!(!external_references.is_empty());
    assert_eq!(first_column(&internal_open), external_references);

    let deployments = call(
        &host,
        "list_deployments",
        json!({"service": story.service, "status": "rolled_back"}),
    )
    .await;
    let external_bad: Vec<&Value> = deployments["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|deployment| deployment["version"] == story.bad_version)
        .collect();
    assert_eq!(external_bad.len(), 1, "{deployments}");
    let internal_bad = call(
        &assistant,
        "run_select",
        json!({"sql": format!(
            "SELECT d.id::text FROM deployments d JOIN services s ON s.id = d.service_id \
              WHERE s.name = '{}' AND d.version = '{}'", story.service, story.bad_version)}),
    )
    .await;
    assert_eq!(
        first_column(&internal_bad),
        BTreeSet::from([external_bad[0]["id"].as_str().unwrap().to_owned()])
    );
    assistant.cancel().await.unwrap();
    host.cancel().await.unwrap();
}
