//! TCP_NODELAY for PostgreSQL connections, which sqlx 0.9.0 no longer sets (sqlx#4335; the fix,
//! #4336, is merged but not released). With Nagle's algorithm on, a statement that spans several
//! TCP segments (a group commit of events) waits for the server's delayed ACK, about 40 ms on
//! Linux: publishing over TCP ran at 1,736 events/s against 15,145 over the Unix socket. Until
//! sqlx sets it again, each new connection sets it on the process's sockets to the database's
//! port. Remove this module with the sqlx release that carries #4336.

/// How long data sent to the database may go unacknowledged, and an idle connection unanswered
/// to keepalive probes, before the kernel gives the connection up. Without it a network partition
/// holds a query (and the group-commit writer behind it) for TCP's default of about 15 minutes of
/// retransmissions; with it the query fails in seconds and its requests are answered 503.
pub const UNANSWERED: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets TCP_NODELAY on every TCP socket of this process whose peer listens on `port`, and bounds
/// how long each may wait for the database ([`UNANSWERED`]: TCP_USER_TIMEOUT and keepalive);
/// returns how many sockets that was.
#[cfg(target_os = "linux")]
pub fn on_sockets_to_port(port: u16) -> usize {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(UNANSWERED / 2)
        .with_interval(std::time::Duration::from_secs(1))
        .with_retries(5);
    let mut set = 0;
    for_each_socket_to_port(port, |socket| {
        let nodelay = socket.set_tcp_nodelay(true).is_ok();
        // Best effort: a socket that refuses these still works, only without the bound.
        let _ = socket.set_tcp_user_timeout(Some(UNANSWERED));
        let _ = socket.set_tcp_keepalive(&keepalive);
        if nodelay {
            set += 1;
        }
    });
    set
}

/// Whether each TCP socket of this process to `port` has TCP_NODELAY set, and its
/// TCP_USER_TIMEOUT.
#[cfg(target_os = "linux")]
pub fn states_of_sockets_to_port(port: u16) -> Vec<(bool, Option<std::time::Duration>)> {
    let mut states = Vec::new();
    for_each_socket_to_port(port, |socket| {
        states.push((
            socket.tcp_nodelay().unwrap_or(false),
            socket.tcp_user_timeout().ok().flatten(),
        ));
    });
    states
}

#[cfg(target_os = "linux")]
fn for_each_socket_to_port(port: u16, mut visit: impl FnMut(socket2::SockRef<'_>)) {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for a getsockopt/setsockopt on it. Should another
        // thread close it meanwhile (and the number be reused), the calls fail on a non-socket or
        // touch another socket whose peer is the same database port, which is equally wanted;
        // nothing is read from or written to it, and it is never closed here.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_port = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peer.port() == port);
        if to_port {
            visit(socket);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn on_sockets_to_port(_port: u16) -> usize {
    0
}

#[cfg(not(target_os = "linux"))]
pub fn states_of_sockets_to_port(_port: u16) -> Vec<(bool, Option<std::time::Duration>)> {
    Vec::new()
}
