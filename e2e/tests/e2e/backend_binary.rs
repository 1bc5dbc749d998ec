//! The `demo-backend` binary as an operator runs it: migrate, seed, create a token, serve, and the
//! token works against the served API.

use std::convert::Infallible;
use std::time::Duration;

use demo_backend::domain::passwords;
use test_harness::process::{binary, free_port, run, spawn, wait_until_ready};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn an_operator_can_seed_create_a_token_and_query_the_served_api() {
    let database = test_harness::database("e2e-empty", async |_| Ok::<(), Infallible>(())).await;
    let backend = binary("demo-backend");
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("RUST_LOG", "warn"),
    ];

    run(&backend, &["migrate"], &env).await.unwrap();
    let seeded = run(&backend, &["seed", "--days", "1"], &env).await.unwrap();
    // One line per seeded user: organisation, email, role, token, password.
    let acme_user = seeded
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&"acme") && columns.len() == 5)
        .unwrap_or_else(|| panic!("the seed prints each user's token: {seeded}"));
    assert!(acme_user[3].starts_with("dmo_"), "{seeded}");

    let token = run(
        &backend,
        &[
            "token",
            "create",
            "--org",
            "acme",
            "--user",
            acme_user[1],
            "--scopes",
            "read",
        ],
        &env,
    )
    .await
    .unwrap();
    let token = token.trim();
    assert!(
        token.starts_with("dmo_") && !token.contains(char::is_whitespace),
        "only the token on stdout: {token:?}"
    );

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = spawn(&backend, &["serve", "--listen", &listen], &env);
    wait_until_ready(&format!("http://{listen}/readyz"), Duration::from_secs(30))
        .await
        .unwrap();

    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{listen}/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["organization"]["slug"], "acme", "{me}");
    assert_eq!(me["token"]["scopes"], serde_json::json!(["read"]), "{me}");

    // The seeded password signs in; `user set-password` replaces it from stdin, never argv.
    let pool = &database.pool;
    let seeded_password = acme_user[4];
    assert!(
        passwords::verify(pool, "acme", acme_user[1], seeded_password)
            .await
            .unwrap()
            .is_some(),
        "the printed password is the user's"
    );
    let new_password = "a new password from stdin";
    let mut child = tokio::process::Command::new(&backend)
        .args([
            "user",
            "set-password",
            "--org",
            "acme",
            "--user",
            acme_user[1],
        ])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{new_password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert!(
        passwords::verify(pool, "acme", acme_user[1], new_password)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        passwords::verify(pool, "acme", acme_user[1], seeded_password)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_bad_database_url_is_a_clear_error() {
    let backend = binary("demo-backend");
    let unreachable = format!("postgres://nobody:secret@127.0.0.1:{}/none", free_port());
    let cases = [
        ("not a url", "DATABASE_URL is not a valid PostgreSQL URL"),
        (
            unreachable.as_str(),
            "cannot connect to the database at 127.0.0.1",
        ),
    ];
    for (url, expected) in cases {
        let error = run(&backend, &["migrate"], &[("DATABASE_URL", url)])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{url}: {error}");
        assert!(!error.contains("secret"), "the password leaked: {error}");
        assert!(!error.contains("panicked"), "{error}");
    }
}
