//! HTTPS beside plain HTTP on the server's one port: a connection whose first byte opens a
//! TLS handshake is served over TLS, any other in the clear. Clients only send a
//! kubeconfig's credentials to a TLS server (client-go reads them "only if we are secure"),
//! so the kubeconfigs that authenticate users ([`crate::TestApiServer::kubeconfig_for`])
//! name `https://` and trust [`CA`]; the admin's keeps plain `http://`.
//!
//! The certificate (for `127.0.0.1`, `::1` and `localhost`, valid until 2126) and its CA
//! are test fixtures in `e2e/tls/`; the CA's key was not kept.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// The CA that signed the server's certificate (PEM), for kubeconfigs to trust.
pub const CA: &str = include_str!("../tls/ca.pem");
const CERTIFICATE: &str = include_str!("../tls/server.pem");
const KEY: &str = include_str!("../tls/server-key.pem");

/// The first byte of a TLS handshake record.
const HANDSHAKE: u8 = 0x16;

/// How long a connection may take to show what it speaks and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection, in the clear or over TLS.
pub type Connection = Either<TcpStream, TlsStream<TcpStream>>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The listener has no address.
    #[error("reading the listener's address: {0}")]
    Io(#[from] std::io::Error),
    /// The certificate or key fixtures do not parse.
    #[error("reading the test certificate: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Accepts the connections of a port, each in the clear or over TLS as its first byte
/// says. Connections are told apart and their handshakes made in their own tasks, so a
/// slow client holds up nobody else.
pub struct Listener {
    connections: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

impl Listener {
    /// Serves `tcp` until `shutdown` is cancelled.
    pub fn new(tcp: TcpListener, shutdown: CancellationToken) -> Result<Self, TlsError> {
        let local = tcp.local_addr()?;
        let acceptor = acceptor()?;
        let (sender, connections) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let connection =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, open(stream, &acceptor)).await;
                    if let Ok(Some(connection)) = connection {
                        // The server stopped when nobody receives.
                        let _ = sender.send((connection, peer)).await;
                    }
                });
            }
        });
        Ok(Listener { connections, local })
    }
}

/// The connection as its first byte says: over TLS after a handshake, or in the clear
/// (also when the client closed without a byte). None when the handshake fails.
async fn open(stream: TcpStream, acceptor: &TlsAcceptor) -> Option<Connection> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == HANDSHAKE => match acceptor.accept(stream).await {
            Ok(tls) => Some(Either::Right(tls)),
            Err(error) => {
                tracing::debug!(%error, "TLS handshake");
                None
            }
        },
        _ => Some(Either::Left(stream)),
    }
}

/// The acceptor presenting the test certificate, for HTTP/1.1.
fn acceptor() -> Result<TlsAcceptor, TlsError> {
    let chain = vec![
        CertificateDer::from_pem_slice(CERTIFICATE.as_bytes())?,
        CertificateDer::from_pem_slice(CA.as_bytes())?,
    ];
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accepting task ended: the server is stopping, and accepts no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
