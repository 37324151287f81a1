//! An HTTP server on loopback that records every POST (alert webhooks and chat channels) and
//! answers 200.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::Value;

/// A POST a receiver got.
#[derive(Clone, Debug)]
pub struct Post {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// An HTTP server on loopback that records every POST and answers 200.
pub struct Receiver {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(port: u16) -> Receiver {
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let seen = posts.clone();
        let app = axum::Router::new().fallback(
            move |uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().unwrap().push(Post {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    "ok"
                }
            },
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { port, posts, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every POST, in the order they came.
    pub fn all(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    pub fn posts(&self, path: &str) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Webhook bodies (rule, tier, status) in the order they came.
pub fn webhook_alerts(r: &Receiver, path: &str) -> Vec<(String, String, String)> {
    r.posts(path)
        .iter()
        .map(|p| {
            (
                p.body["rule"].as_str().unwrap_or_default().to_owned(),
                p.body["tier"].as_str().unwrap_or_default().to_owned(),
                p.body["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
