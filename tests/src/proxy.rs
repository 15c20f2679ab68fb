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

/// Where [`CommitCuttingRelay`] breaks the SQL catalog's commit transaction (`BEGIN;
/// UPDATE iceberg_tables … WHERE metadata_location = <old>; COMMIT`), once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitCut {
    /// The UPDATE's answer (`UPDATE 1`) is lost: the transaction is never committed.
    LoseUpdateAnswer,
    /// The COMMIT reaches PostgreSQL and is applied; its answer is lost.
    LoseCommitAnswer,
    /// The COMMIT never reaches PostgreSQL (the connection breaks first): rolled back.
    DropCommit,
    /// The COMMIT reaches PostgreSQL and is applied; its answer never comes, and the
    /// connection stays open: a peer gone silent, which only a deadline ends.
    SilentCommit,
}

/// A TCP relay between a catalog client and PostgreSQL that breaks one commit transaction as
/// armed ([`CommitCut`]), closing both connections at that point.
pub struct CommitCuttingRelay {
    port: u16,
    armed: Arc<std::sync::Mutex<Option<CommitCut>>>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
}

const UPDATE_ONE: &[u8] = b"UPDATE 1\0";
const COMMIT_TAG: &[u8] = b"COMMIT\0";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl CommitCuttingRelay {
    pub async fn start(upstream: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let armed: Arc<std::sync::Mutex<Option<CommitCut>>> = Arc::default();
        let cuts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (a, c) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (armed, cuts) = (a.clone(), c.clone());
                // Whether this connection's transaction has updated the catalog row.
                let updated = Arc::new(AtomicBool::new(false));
                let (done_tx, mut done_rx) = watch::channel(false);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Is `cut` armed (and this connection past the UPDATE when it needs to be)?
                let take = move |armed: &std::sync::Mutex<Option<CommitCut>>, cut: CommitCut| {
                    let mut a = armed.lock().unwrap();
                    if *a == Some(cut) {
                        *a = None;
                        true
                    } else {
                        false
                    }
                };
                let (armed2, cuts2, updated2, done2) = (
                    armed.clone(),
                    cuts.clone(),
                    updated.clone(),
                    done_tx.clone(),
                );
                // Client → server.
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut stop = done2.subscribe();
                    loop {
                        let n = tokio::select! {
                            r = cr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                            _ = stop.changed() => break,
                        };
                        if updated2.load(Ordering::SeqCst)
                            && contains(&buf[..n], b"COMMIT")
                            && take(&armed2, CommitCut::DropCommit)
                        {
                            cuts2.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = done2.send(true);
                });
                // Server → client.
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = tokio::select! {
                            r = sr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                            _ = done_rx.changed() => break,
                        };
                        let chunk = &buf[..n];
                        if contains(chunk, UPDATE_ONE) {
                            updated.store(true, Ordering::SeqCst);
                            if take(&armed, CommitCut::LoseUpdateAnswer) {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        }
                        if updated.load(Ordering::SeqCst)
                            && contains(chunk, COMMIT_TAG)
                            && take(&armed, CommitCut::LoseCommitAnswer)
                        {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if updated.load(Ordering::SeqCst)
                            && contains(chunk, COMMIT_TAG)
                            && take(&armed, CommitCut::SilentCommit)
                        {
                            // Hold the answer, and the connection, until the client leaves.
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = done_rx.changed().await;
                            break;
                        }
                        if cw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = done_tx.send(true);
                });
            }
        });
        Self { port, armed, cuts }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Breaks the next commit transaction as `cut` says.
    pub fn arm(&self, cut: CommitCut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    /// How many transactions were broken so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}
