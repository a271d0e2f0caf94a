//! Whether a pooled connection can still take a request.
//!
//! Between requests nothing may arrive on a keep-alive connection to a back end, so anything
//! readable (the end of the stream after the back end's keep-alive timeout, a reset, a stray
//! byte, a TLS close_notify) means it is closing or broken. Sending a request with a body on
//! it would lose the request: the body cannot be sent again once read from the tunnel.

use std::io;
use std::os::fd::AsRawFd;

/// True when `socket` has nothing to read and no end of stream: it looks idle and open. One
/// system call; nothing is consumed.
pub fn idle_and_open(socket: &monoio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(peek(socket, &mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// The first byte waiting on `socket`, without consuming it (`None`: nothing yet, the end of
/// the stream, or an error). A TLS connection starts with 22 (handshake); a plain HTTP request
/// with the letter of its method.
pub fn first_byte(socket: &monoio::net::TcpStream) -> Option<u8> {
    let mut byte = [0u8; 1];
    match peek(socket, &mut byte) {
        Ok(1) => Some(byte[0]),
        _ => None,
    }
}

/// Peeks at what waits on `socket` without waiting and without consuming it: one
/// `recv(MSG_PEEK | MSG_DONTWAIT)`. The flags apply to this call only; the socket's own
/// (blocking or not, as monoio's driver set it) are left alone.
fn peek(socket: &monoio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    // SAFETY: `fd` is `socket`'s descriptor, open for as long as the borrow of `socket` that
    // this function holds; `buf` is a valid, writable buffer of `buf.len()` bytes for the
    // duration of the call, and recv writes at most that many.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match usize::try_from(n) {
        Ok(n) => Ok(n),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    /// Open and silent: reusable. The peer wrote a byte, or closed: not.
    #[test]
    fn only_a_silent_open_connection_counts_as_idle() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut rt = crate::rt::runtime().unwrap();
        rt.block_on(async move {
            let settle = || std::thread::sleep(Duration::from_millis(50));
            let client = monoio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut server, _) = listener.accept().unwrap();
            assert!(idle_and_open(&client), "open and silent");
            assert!(idle_and_open(&client), "peeking consumed nothing");
            assert_eq!(first_byte(&client), None);
            server.write_all(b"x").unwrap();
            settle();
            assert!(!idle_and_open(&client), "a byte waits");
            assert_eq!(first_byte(&client), Some(b'x'));
            assert_eq!(first_byte(&client), Some(b'x'), "and stays");

            let other = monoio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (server, _) = listener.accept().unwrap();
            assert!(idle_and_open(&other));
            drop(server);
            settle();
            assert!(!idle_and_open(&other), "the peer closed");
        });
    }
}
