//! TLS for the cache's own subscriber connection ([`Socket`](super::socket::Socket)), with the
//! store's fred rustls settings (`tls` feature): the handshake and the set-up commands go
//! through tokio; every later read is the same non-blocking read of the socket as without TLS,
//! its records decrypted here, so a hit still takes in at once what has reached the socket.

#[cfg(feature = "tls")]
pub(super) use with_tls::Tls;
#[cfg(not(feature = "tls"))]
pub(super) use without_tls::Tls;

#[cfg(feature = "tls")]
mod with_tls {
    use std::io::{Read, Write};

    use fred::{
        error::{Error as FredError, ErrorKind},
        prelude::Config,
        rustls::{ClientConnection, pki_types::ServerName},
        types::config::{Server, TlsConnector},
    };
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    /// A TLS session over the subscriber's socket.
    #[derive(Debug)]
    pub(in super::super) struct Tls(ClientConnection);

    impl Tls {
        /// The TLS session with `server` over `stream`, its handshake done, if the store's
        /// `config` uses TLS; `None` for plain text.
        pub(in super::super) async fn connect(
            config: &Config,
            server: &Server,
            stream: &mut TcpStream,
        ) -> Result<Option<Tls>, FredError> {
            let Some(tls) = &config.tls else {
                return Ok(None);
            };
            #[allow(unreachable_patterns)]
            // fred's native-tls connector, if another crate enables it
            let rustls = match &tls.connector {
                TlsConnector::Rustls(connector) => connector.config().clone(),
                _ => return Err(tls_error("the local cache needs a rustls connector")),
            };
            let name = server.tls_server_name.as_ref().unwrap_or(&server.host);
            let name = ServerName::try_from(name.to_string()).map_err(tls_error)?;
            let mut tls = Tls(ClientConnection::new(rustls, name).map_err(tls_error)?);
            let mut chunk = vec![0; super::super::socket::CHUNK];
            while tls.0.is_handshaking() {
                tls.flush(stream).await?;
                if tls.0.is_handshaking() && tls.0.wants_read() {
                    let n = stream.read(&mut chunk).await.map_err(io)?;
                    tls.take_in(&chunk[..n], &mut Vec::new())?;
                }
            }
            tls.flush(stream).await?;
            Ok(Some(tls))
        }

        /// Encrypts `plain` and writes it to `stream`.
        pub(in super::super) async fn send(
            &mut self,
            stream: &mut TcpStream,
            plain: &[u8],
        ) -> Result<(), FredError> {
            self.0.writer().write_all(plain).map_err(io)?;
            self.flush(stream).await
        }

        /// Takes in `raw`, as read from the socket (nothing: it was closed), and appends what
        /// it decrypts to `plain`; an error once the session is over (closed, an alert, bad
        /// data).
        pub(in super::super) fn take_in(
            &mut self,
            mut raw: &[u8],
            plain: &mut Vec<u8>,
        ) -> Result<(), FredError> {
            if raw.is_empty() {
                return Err(tls_error("connection closed"));
            }
            while !raw.is_empty() {
                self.0.read_tls(&mut raw).map_err(io)?;
                let state = self.0.process_new_packets().map_err(tls_error)?;
                let start = plain.len();
                plain.resize(start + state.plaintext_bytes_to_read(), 0);
                self.0
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(io)?;
                if state.peer_has_closed() {
                    return Err(tls_error("closed by the server"));
                }
            }
            Ok(())
        }

        /// Writes out whatever the session has to send.
        async fn flush(&mut self, stream: &mut TcpStream) -> Result<(), FredError> {
            while self.0.wants_write() {
                let mut out = Vec::new();
                self.0.write_tls(&mut out).map_err(io)?;
                stream.write_all(&out).await.map_err(io)?;
            }
            Ok(())
        }
    }

    fn io(e: std::io::Error) -> FredError {
        FredError::new(ErrorKind::IO, e.to_string())
    }

    fn tls_error(e: impl std::fmt::Display) -> FredError {
        FredError::new(ErrorKind::Tls, format!("local cache subscriber: {e}"))
    }
}

#[cfg(not(feature = "tls"))]
mod without_tls {
    use fred::{error::Error as FredError, prelude::Config, types::config::Server};
    use tokio::net::TcpStream;

    /// No TLS without the `tls` feature: never made.
    #[derive(Debug)]
    pub(in super::super) enum Tls {}

    impl Tls {
        /// Always plain text: fred has no TLS settings without the `tls` feature.
        pub(in super::super) async fn connect(
            _: &Config,
            _: &Server,
            _: &mut TcpStream,
        ) -> Result<Option<Tls>, FredError> {
            Ok(None)
        }

        pub(in super::super) async fn send(
            &mut self,
            _: &mut TcpStream,
            _: &[u8],
        ) -> Result<(), FredError> {
            match *self {}
        }

        pub(in super::super) fn take_in(
            &mut self,
            _: &[u8],
            _: &mut Vec<u8>,
        ) -> Result<(), FredError> {
            match *self {}
        }
    }
}
