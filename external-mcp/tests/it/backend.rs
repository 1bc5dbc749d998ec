//! The real demo-backend (from the test harness), and stand-ins for a backend that is down or
//! never answers.

use test_harness::process::free_port;

pub use test_harness::backend::{Backend, SEED_UNTIL, email, token};

/// A port with nothing listening: "the backend is down".
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A server that accepts connections and never answers; reports each connection's end.
pub async fn black_hole() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (closed, closings) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (url, closings)
}
