//! A TCP server of the test's own (a fixture such as a lenient upstream or a lossy proxy) on
//! its own thread and runtime, so that it keeps serving while the test blocks; it stops when
//! dropped.

use std::{future::Future, net::SocketAddr};

use tokio::net::{TcpListener, TcpStream};

pub struct Background {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Listens on a free loopback port and runs `handler(connection, own address)` on a task
    /// per connection.
    pub fn serve<F, Fut>(handler: F) -> Self
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("addr");
                addr_tx.send(addr).expect("send addr");
                let accept = async {
                    loop {
                        if let Ok((tcp, _)) = listener.accept().await {
                            tokio::spawn(handler(tcp, addr));
                        }
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("the fixture's address");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
