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
    freeze: watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (freeze, _) = watch::channel(0u64);
        let upstream = upstream.to_owned();
        let (d, c, f) = (down.clone(), cut.clone(), freeze.clone());
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
                let mut freeze_rx = f.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let frozen = tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => false,
                        _ = tokio::io::copy(&mut sr, &mut cw) => false,
                        _ = cut_rx.changed() => false,
                        _ = freeze_rx.changed() => true,
                    };
                    if frozen {
                        // Both sides stay open and nothing moves: a black hole, not a reset.
                        let _ = cut_rx.changed().await;
                        drop((cr, cw, sr, sw));
                    }
                });
            }
        });
        Self {
            port,
            down,
            cut,
            freeze,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every open connection and refuses new ones.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|v| *v += 1);
    }

    /// Every open connection stops moving bytes either way, and stays open (no FIN, no
    /// reset): a peer that went silent mid-conversation. New connections pass as before.
    pub fn freeze(&self) {
        self.freeze.send_modify(|v| *v += 1);
    }

    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
