//! Relay mode: an L4 relay from the tcp plane's port to the co-located node's own TCP server
//! (`NETSTRAP_TCP_UPSTREAM`), optionally announcing each client with a PROXY protocol v2 header.
//!
//! Each connection is its own task: an upstream that is down, slow to accept or not reading
//! affects only the connections it serves. Bytes are copied both ways with half-close — when
//! one side shuts its write half, the other side's write half is shut and the other direction
//! keeps flowing, so a request/EOF/reply exchange works through the relay. The copy is our own
//! (not `tokio::io::copy_bidirectional`, which has the same half-close behaviour) because it
//! also needs an idle timeout across both directions and byte counts as they pass.
//!
//! On Linux the bytes move with splice(2) through a pipe per direction (socket → pipe →
//! socket): the kernel hands the pages on without copying them into this process and back,
//! which roughly doubles what one core relays (see docs/benchmarks.md). Elsewhere, or when a
//! pipe cannot be had (out of descriptors), a buffered copy does the same job.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ppp::v2::{Addresses, Builder, Command, Protocol, Version};
#[cfg(not(target_os = "linux"))]
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
#[cfg(not(target_os = "linux"))]
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::native::within;
use super::{DEFAULT_MAX_CONNECTIONS, accept_loop};
use crate::metrics::{Metrics, PlaneLabel};
use crate::planes::Shutdown;
use crate::table::Plane;

const BUFFER: usize = 32 * 1024;

/// Settings of relay mode.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The node's own TCP server.
    pub upstream: SocketAddr,
    /// Start every upstream connection with a PROXY protocol v2 header naming the client.
    pub proxy_protocol: bool,
    /// Time allowed to connect to the upstream (zero: the system's limit).
    pub connect_timeout: Duration,
    /// A connection with no bytes either way for this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// Concurrent connections; more are closed at once.
    pub max_connections: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            upstream: SocketAddr::from(([127, 0, 0, 1], 32048)),
            proxy_protocol: false,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Relay every connection on `listener` to `opts.upstream` until `shutdown`; returns once every
/// relayed connection has finished (see the module docs on shutdown).
pub async fn serve_relay(
    listener: TcpListener,
    opts: RelayOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %opts.upstream,
        proxy_protocol = opts.proxy_protocol,
        "tcp plane: relaying to the node's TCP server"
    );
    let opts = Arc::new(opts);
    let max = opts.max_connections;
    accept_loop(listener, "tcp", max, &shutdown, move |client, peer, permit| {
        let opts = opts.clone();
        let metrics = metrics.clone();
        async move {
            let _permit = permit;
            relay(client, peer, &opts, &metrics).await
        }
    })
    .await;
}

/// One line per 10 s while the node refuses (it restarts, or is not up yet), with a count.
static UPSTREAM_DOWN: crate::logging::Throttle =
    crate::logging::Throttle::new(std::time::Duration::from_secs(10));

async fn relay(client: TcpStream, peer: SocketAddr, opts: &RelayOptions, metrics: &Metrics) {
    let _open = metrics.connection(Plane::Tcp);
    let upstream = opts.upstream;
    let mut server = match within(opts.connect_timeout, TcpStream::connect(upstream)).await {
        Some(Ok(server)) => server,
        Some(Err(e)) => {
            if let Some(more) = UPSTREAM_DOWN.allow() {
                warn!(%peer, suppressed = more, "tcp relay: cannot reach the node's TCP server at {upstream}: {e}; closing the client connection");
            }
            return;
        }
        None => {
            if let Some(more) = UPSTREAM_DOWN.allow() {
                warn!(
                    %peer,
                    suppressed = more,
                    "tcp relay: the node's TCP server at {upstream} did not accept within {:?}; closing the client connection",
                    opts.connect_timeout
                );
            }
            return;
        }
    };
    // Peer messages are often small request/response exchanges: do not add Nagle delays.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if opts.proxy_protocol {
        let header = client.local_addr().and_then(|local| proxy_header(peer, local));
        let sent = match header {
            Ok(header) => match within(opts.idle_timeout, server.write_all(&header)).await {
                Some(r) => r,
                None => Err(io::Error::new(io::ErrorKind::TimedOut, "upstream does not read")),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            return warn!(%peer, "tcp relay: cannot send the PROXY header to {upstream}: {e}; closing the client connection");
        }
    }
    match splice(client, server, opts.idle_timeout, metrics).await {
        Ok(()) => debug!(%peer, "tcp relay connection finished"),
        Err(e) => debug!(%peer, %upstream, "tcp relay connection ended: {e}"),
    }
}

/// A PROXY protocol v2 header: PROXY command, TCP, `source` (the client) to `destination` (the
/// address it connected to). Both addresses are put in one family: IPv4-mapped IPv6 addresses
/// (from a dual-stack listener) become IPv4, and a mixed pair becomes IPv6.
pub fn proxy_header(source: SocketAddr, destination: SocketAddr) -> io::Result<Vec<u8>> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    let (source, destination) = (canonical(source), canonical(destination));
    let pair = if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (v6(source), v6(destination))
    };
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, Addresses::from(pair)).build()
}

/// Copy both ways with half-close until both directions ended, one failed, or nothing moved
/// for `idle`.
async fn splice(client: TcpStream, server: TcpStream, idle: Duration, metrics: &Metrics) -> io::Result<()> {
    let label = PlaneLabel::of(Plane::Tcp);
    let received = metrics.bytes_received.get_or_create(&label).clone();
    let sent = metrics.bytes_sent.get_or_create(&label).clone();
    let activity = Activity::new();
    #[cfg(target_os = "linux")]
    {
        let both = async {
            tokio::try_join!(
                zero_copy::pump(&client, &server, &activity, &received),
                zero_copy::pump(&server, &client, &activity, &sent),
            )
        };
        tokio::select! {
            r = both => r.map(|_| ()),
            () = activity.idle_for(idle) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no bytes either way for {idle:?}")))
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        copy_both(client, server, idle, &activity, &received, &sent).await
    }
}

/// Copy both ways through buffers in this process (where splice(2) is not available).
#[cfg(not(target_os = "linux"))]
async fn copy_both(
    client: TcpStream,
    server: TcpStream,
    idle: Duration,
    activity: &Activity,
    received: &Counter,
    sent: &Counter,
) -> io::Result<()> {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let both = async {
        tokio::try_join!(
            pump(&mut client_r, &mut server_w, activity, received),
            pump(&mut server_r, &mut client_w, activity, sent),
        )
    };
    tokio::select! {
        r = both => r.map(|_| ()),
        () = activity.idle_for(idle) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("no bytes either way for {idle:?}")))
        }
    }
}

/// One direction: copy until EOF, then pass the EOF on by shutting `to`'s write half.
#[cfg(not(target_os = "linux"))]
async fn pump<R, W>(from: &mut R, to: &mut W, activity: &Activity, counter: &Counter) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // The other side may already be gone; the other direction reports that itself.
            let _ = to.shutdown().await;
            return Ok(());
        }
        activity.touch();
        to.write_all(&buf[..n]).await?;
        activity.touch();
        counter.inc_by(n as u64);
    }
}

/// When bytes last moved in either direction (shared by both pumps of one connection).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `limit` (never, for zero).
    async fn idle_for(&self, limit: Duration) {
        if limit.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let deadline = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// splice(2) from one socket into a pipe and from the pipe into the other socket.
#[cfg(target_os = "linux")]
mod zero_copy {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus_client::metrics::counter::Counter;
    use rustix::net::Shutdown;
    use rustix::pipe::{PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;
    use tracing::debug;

    use super::{Activity, BUFFER};

    /// What one splice call moves at most: the default pipe capacity (16 pages).
    const CHUNK: usize = 64 * 1024;
    /// A bulk stream's pipe: 16 times fewer splice calls (and wake-ups) per byte.
    const BULK_CHUNK: usize = 1024 * 1024;
    /// Pipes grown to [`BULK_CHUNK`] at once, at most. Pipe pages count against the user's
    /// `fs.pipe-user-pages-soft` (64 MiB by default, shared by every process of the uid — in
    /// containers without a user namespace, every root container on the host): past it the
    /// kernel gives new pipes 2 pages. 16 × 1 MiB is a quarter of it; other streams keep 64 KiB.
    const BULK_PIPES: usize = 16;
    static BULK: AtomicUsize = AtomicUsize::new(0);

    /// A non-blocking pipe: the kernel-side buffer of one direction.
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// What one splice into it moves at most.
        chunk: usize,
        /// Holds one of the [`BULK_PIPES`].
        bulk: bool,
    }

    impl Pipe {
        fn new() -> io::Result<Pipe> {
            let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
            Ok(Pipe { read, write, chunk: CHUNK, bulk: false })
        }

        /// Grow to [`BULK_CHUNK`] when one of the [`BULK_PIPES`] is free and the kernel agrees
        /// (it refuses past `fs.pipe-max-size` or the user's pipe pages); else stay as is.
        fn grow(&mut self) {
            if self.bulk || BULK.fetch_add(1, Ordering::Relaxed) >= BULK_PIPES {
                if !self.bulk {
                    BULK.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
            match rustix::pipe::fcntl_setpipe_size(&self.write, BULK_CHUNK) {
                Ok(size) => {
                    self.chunk = size.min(BULK_CHUNK);
                    self.bulk = true;
                }
                Err(_) => {
                    BULK.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            if self.bulk {
                BULK.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn splice(from: impl std::os::fd::AsFd, to: impl std::os::fd::AsFd, len: usize) -> io::Result<usize> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        Ok(rustix::pipe::splice(from, None, to, None, len, flags)?)
    }

    fn shutdown_write(to: &TcpStream) {
        // It may already be gone; the other direction reports that itself.
        let _ = rustix::net::shutdown(to, Shutdown::Write);
    }

    /// One direction: move bytes until EOF, then pass the EOF on by shutting `to`'s write half.
    ///
    /// The pipe is made when the first bytes arrive, so an idle connection holds no pipe (two
    /// descriptors per direction). Without one (out of descriptors) the bytes are copied
    /// through a buffer instead.
    pub async fn pump(
        from: &TcpStream,
        to: &TcpStream,
        activity: &Activity,
        counter: &Counter,
    ) -> io::Result<()> {
        from.readable().await?;
        match Pipe::new() {
            Ok(pipe) => spliced(from, to, pipe, activity, counter).await,
            Err(e) => {
                debug!("tcp relay: no pipe for splice ({e}); copying through a buffer");
                copied(from, to, activity, counter).await
            }
        }
    }

    /// The pipe is always drained before the next read from `from`, so a splice into it can
    /// only block (EAGAIN) because `from` has nothing to read — which is what tokio's
    /// readiness needs to hear.
    async fn spliced(
        from: &TcpStream,
        to: &TcpStream,
        mut pipe: Pipe,
        activity: &Activity,
        counter: &Counter,
    ) -> io::Result<()> {
        loop {
            let n = from.async_io(Interest::READABLE, || splice(from, &pipe.write, pipe.chunk)).await?;
            if n == 0 {
                shutdown_write(to);
                return Ok(());
            }
            if n == CHUNK {
                // A full pipe: the socket had more waiting, a bulk stream.
                pipe.grow();
            }
            activity.touch();
            let mut left = n;
            while left > 0 {
                let moved = to.async_io(Interest::WRITABLE, || splice(&pipe.read, to, left)).await?;
                if moved == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "the socket took no bytes"));
                }
                left -= moved;
            }
            activity.touch();
            counter.inc_by(n as u64);
        }
    }

    async fn copied(
        from: &TcpStream,
        to: &TcpStream,
        activity: &Activity,
        counter: &Counter,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = from.async_io(Interest::READABLE, || from.try_read(&mut buf)).await?;
            if n == 0 {
                shutdown_write(to);
                return Ok(());
            }
            activity.touch();
            let mut at = 0;
            while at < n {
                let moved = to.async_io(Interest::WRITABLE, || to.try_write(&buf[at..n])).await?;
                if moved == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "the socket took no bytes"));
                }
                at += moved;
            }
            activity.touch();
            counter.inc_by(n as u64);
        }
    }
}
