//! A TCP proxy the tests can cut: a database outage seen exactly as the loader would see it
//! (connections reset, new ones refused), without stopping the shared server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    port: u16,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let upstream = upstream.to_owned();
        let (d, c) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_rx = c.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self { port, down, cut }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every open connection and refuses new ones.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|v| *v += 1);
    }

    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
