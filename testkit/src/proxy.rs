//! A TCP proxy between a client and a real server that can lose the server's answers, for
//! tests of what a client does when a request may have arrived but no answer came back.
//!
//! Modes: forward both ways; black-hole (the client's bytes still reach the server, the
//! server's answers are dropped), now or from the first client bytes holding a marker (the
//! request to lose the answer of); and [`Proxy::reset`], which closes every connection open
//! now (later ones forward normally).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};

use crate::background::Background;

/// A marker to black-hole answers from, and how many more client writes holding it to wait.
type Trigger = Arc<std::sync::Mutex<Option<(Vec<u8>, usize)>>>;

/// The running proxy; it stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    trigger: Trigger,
    /// Bumped by `reset`: connections of an older generation close.
    generation: watch::Sender<u64>,
    counter: Arc<AtomicU64>,
    _server: Background,
}

impl Proxy {
    /// Proxies a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let blackhole = Arc::new(AtomicBool::new(false));
        let trigger: Trigger = Arc::new(std::sync::Mutex::new(None));
        let (generation, gen_rx) = watch::channel(0u64);
        let server = Background::serve({
            let (blackhole, trigger) = (blackhole.clone(), trigger.clone());
            move |client, _| {
                let (blackhole, trigger, gen_rx) =
                    (blackhole.clone(), trigger.clone(), gen_rx.clone());
                async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, blackhole, trigger, gen_rx).await;
                    }
                }
            }
        });
        Self {
            addr: server.addr,
            blackhole,
            trigger,
            generation,
            counter: Arc::new(AtomicU64::new(0)),
            _server: server,
        }
    }

    /// Drop (or stop dropping) the server's answers.
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Black-holes the server's answers from the first client bytes that contain `marker` on
    /// (those bytes are still forwarded).
    pub fn blackhole_from(&self, marker: &[u8]) {
        self.blackhole_from_nth(marker, 1);
    }

    /// Like [`Proxy::blackhole_from`], from the `n`-th client write holding `marker`.
    pub fn blackhole_from_nth(&self, marker: &[u8], n: usize) {
        *self.trigger.lock().expect("trigger") = Some((marker.to_vec(), n.max(1)));
    }

    /// Closes every connection open now; new ones forward (black-holing is turned off).
    pub fn reset(&self) {
        self.blackhole.store(false, Ordering::SeqCst);
        *self.trigger.lock().expect("trigger") = None;
        let next = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.generation.send_replace(next);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    blackhole: Arc<AtomicBool>,
    trigger: Trigger,
    mut generation: watch::Receiver<u64>,
) {
    let born = *generation.borrow_and_update();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    {
                        let mut t = trigger.lock().expect("trigger");
                        if let Some((marker, left)) = t.as_mut() {
                            if buf[..n]
                                .windows(marker.len())
                                .any(|w| w == marker.as_slice())
                            {
                                *left -= 1;
                                if *left == 0 {
                                    blackhole.store(true, Ordering::SeqCst);
                                    *t = None;
                                }
                            }
                        }
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if blackhole.load(Ordering::SeqCst) {
                        continue;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let reset = async {
        while generation.changed().await.is_ok() {
            if *generation.borrow() != born {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        () = reset => {}
    }
}
