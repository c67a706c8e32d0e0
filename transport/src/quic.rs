// Long file: the endpoint, its limits and its connection handling.
//! QUIC endpoints whose TLS certificates are bound to the node key.
//!
//! Certificates follow the libp2p TLS specification (`libp2p-tls`): a self-signed certificate
//! carrying the node's public key and its signature over the certificate key, so the handshake
//! proves the PeerId on both sides. A dial names the PeerId it expects; the handshake fails when
//! the peer proves another one. ALPN names the fragment protocol and its version.

use crate::identity::{NodeAddr, NodeKey};
use crate::message::PROTOCOL;
use libp2p_identity::PeerId;
use quinn::congestion::{Controller, ControllerFactory};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why an endpoint could not be built or a peer not reached.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("building the TLS configuration: {0}")]
    Tls(String),
    #[error("binding UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dialing {addr}: {reason}")]
    Dial { addr: String, reason: String },
    #[error("peer at {addr} did not present a valid node certificate: {reason}")]
    PeerCertificate { addr: SocketAddr, reason: String },
}

/// Flow-control windows, stream limits and timeouts of every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection silent this long is closed.
    pub idle_timeout_ms: u32,
    /// Keep-alive interval (well under the idle timeout).
    pub keep_alive_ms: u64,
    /// Requests a peer may have open at once on one connection.
    pub streams_max: u32,
    /// Bytes a peer may send on one stream before the receiver reads them.
    pub stream_window_bytes: u32,
    /// Bytes a peer may send on the whole connection before the receiver reads them.
    pub connection_window_bytes: u32,
    /// Bytes this side keeps unacknowledged in flight.
    pub send_window_bytes: u64,
    /// Largest UDP payload path MTU discovery probes for. Datacenter links often carry jumbo
    /// frames (9000 bytes) and loopback far more; quinn's default, 1452, stays within plain
    /// Ethernet. A path that drops larger packets is found by the probes (and black-hole
    /// detection), so a high bound costs a few probes, never the connection.
    pub mtu_upper_bound_bytes: u16,
    /// A handshake not finished in this time is dropped.
    pub handshake_timeout_ms: u64,
    /// Handshakes a server runs at once; more incoming connections are refused meanwhile.
    pub handshakes_max: usize,
    /// Handshakes one IP address (an IPv6 /64) may start per second, after a burst of
    /// `handshake_burst_per_ip`, half of each for Initials that have not proved their address
    /// and half for those that have (after a Retry). Past its half an unproven Initial gets a
    /// stateless Retry (its address may be spoofed: the real owner answers, and is counted in
    /// the other half), and a proven one is dropped unanswered (no state kept, nothing sent),
    /// so a host dialing in a loop with fresh keys cannot spend the server's CPU on
    /// handshakes. Connections already open are not touched.
    pub handshakes_per_ip_per_s: u64,
    pub handshake_burst_per_ip: u64,
    /// Connections one peer may hold open to a server; one more is closed after its
    /// handshake (each holds up to `send_window_bytes` of this side's memory).
    pub connections_per_peer_max: usize,
    /// Connections a server holds open in all; one more is closed after its handshake.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            idle_timeout_ms: 30_000,
            keep_alive_ms: 5_000,
            streams_max: 64,
            stream_window_bytes: 16 << 20,
            connection_window_bytes: 128 << 20,
            send_window_bytes: 128 << 20,
            mtu_upper_bound_bytes: 8952,
            handshake_timeout_ms: 10_000,
            handshakes_max: 1024,
            handshakes_per_ip_per_s: 32,
            handshake_burst_per_ip: 256,
            connections_per_peer_max: 8,
            connections_max: 4096,
        }
    }
}

impl Limits {
    fn transport_config(&self, closing: Closing) -> Arc<quinn::TransportConfig> {
        let mut config = quinn::TransportConfig::default();
        config.congestion_controller_factory(Arc::new(CloseAwareFactory {
            inner: Arc::new(quinn::congestion::CubicConfig::default()),
            closing,
        }));
        config
            .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
                self.idle_timeout_ms,
            ))))
            .keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms)))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.streams_max))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
            .stream_receive_window(quinn::VarInt::from_u32(self.stream_window_bytes))
            .receive_window(quinn::VarInt::from_u32(self.connection_window_bytes))
            .send_window(self.send_window_bytes);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound_bytes);
        config.mtu_discovery_config(Some(mtu));
        Arc::new(config)
    }
}

/// Connections a server refused, by reason (for its metrics).
#[derive(Debug, Default)]
pub struct ConnectionRefusals {
    /// The peer had `connections_per_peer_max` open.
    pub per_peer: std::sync::atomic::AtomicU64,
    /// The server had `connections_max` open.
    pub total: std::sync::atomic::AtomicU64,
    /// `handshakes_max` handshakes were in progress.
    pub handshakes: std::sync::atomic::AtomicU64,
    /// Handshakes not finished within `handshake_timeout_ms`, or failed.
    pub handshake_failures: std::sync::atomic::AtomicU64,
    /// Incoming connections sent a stateless Retry (address validation) because a quarter
    /// of the handshake slots were taken.
    pub retries: std::sync::atomic::AtomicU64,
    /// Handshakes refused: their address had started `handshakes_per_ip_per_s` already.
    pub per_ip_rate: std::sync::atomic::AtomicU64,
}

/// The address a handshake budget is kept for: an IPv4 address, or an IPv6 /64 (one host's
/// share of a network; a host can use every address in its /64).
fn rate_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !(u64::MAX as u128),
        )),
        v4 => v4,
    }
}

/// A server's handshakes in progress and those finished, waiting for `accept`.
#[derive(Debug)]
struct Handshakes {
    slots: Arc<tokio::sync::Semaphore>,
    /// Handshake budgets by source address (an IPv6 /64 counts as one): of Initials that
    /// have not proved their address, and of those that have (after a Retry); and the clock
    /// they run on.
    per_ip: std::sync::Mutex<crate::fair::Rates<std::net::IpAddr>>,
    per_ip_validated: std::sync::Mutex<crate::fair::Rates<std::net::IpAddr>>,
    started: std::time::Instant,
    /// Connections open, per peer (its length is bounded by `connections_max`).
    open: std::sync::Mutex<std::collections::HashMap<PeerId, usize>>,
    refusals: ConnectionRefusals,
    finished_tx: tokio::sync::mpsc::Sender<Result<Connection, QuicError>>,
    finished_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Result<Connection, QuicError>>>,
}

impl Handshakes {
    /// Counts `peer`'s new connection, or says why it is one too many.
    fn admit(&self, peer: PeerId, limits: &Limits) -> Result<(), String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= limits.connections_max {
            self.refusals.total.fetch_add(1, Ordering::Relaxed);
            return Err(format!("{total} connections open: the server's limit"));
        }
        let mine = open.entry(peer).or_insert(0);
        if *mine >= limits.connections_per_peer_max {
            self.refusals.per_peer.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "{} connections from this peer already",
                limits.connections_per_peer_max
            ));
        }
        *mine += 1;
        Ok(())
    }

    fn release(&self, peer: &PeerId) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(peer);
            }
        }
    }

    fn new(limits: &Limits) -> Handshakes {
        let (finished_tx, finished_rx) = tokio::sync::mpsc::channel(64);
        Handshakes {
            slots: Arc::new(tokio::sync::Semaphore::new(limits.handshakes_max.max(1))),
            // Half the rate each, so that an address gets the configured rate in all.
            per_ip: std::sync::Mutex::new(crate::fair::Rates::new(
                limits.handshakes_per_ip_per_s.div_ceil(2),
                limits.handshake_burst_per_ip.div_ceil(2),
            )),
            per_ip_validated: std::sync::Mutex::new(crate::fair::Rates::new(
                limits.handshakes_per_ip_per_s.div_ceil(2),
                limits.handshake_burst_per_ip.div_ceil(2),
            )),
            started: std::time::Instant::now(),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
            refusals: ConnectionRefusals::default(),
            finished_tx,
            finished_rx: tokio::sync::Mutex::new(finished_rx),
        }
    }
}

/// Whether a connection, or its whole endpoint, is closing.
#[derive(Debug, Clone, Default)]
struct Closing {
    connection: Arc<AtomicBool>,
    endpoint: Arc<AtomicBool>,
}

impl Closing {
    /// A fresh connection's flags on `endpoint`'s.
    fn for_connection(endpoint: &Arc<AtomicBool>) -> Closing {
        Closing {
            connection: Arc::default(),
            endpoint: endpoint.clone(),
        }
    }

    fn is_set(&self) -> bool {
        self.connection.load(Ordering::Acquire) || self.endpoint.load(Ordering::Acquire)
    }
}

/// Quinn's default congestion controller (Cubic), whose window opens once its connection or
/// endpoint is closing.
///
/// quinn-proto 0.11.19 (the latest release) gates a closing connection's packets by the
/// congestion window as if they carried the stream data still queued, and a closed connection
/// processes no more acknowledgements, so a CONNECTION_CLOSE queued while the window is full
/// is never sent (quinn-rs/quinn#2785, fixed upstream by #2787): the peer learns nothing until
/// its idle timeout, and a read in progress stalls. A closed connection sends nothing but its
/// close, so opening its window floods no one.
struct CloseAware {
    inner: Box<dyn Controller>,
    closing: Closing,
}

impl Controller for CloseAware {
    fn on_sent(&mut self, now: std::time::Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: std::time::Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        if self.closing.is_set() {
            u64::MAX
        } else {
            self.inner.window()
        }
    }

    fn metrics(&self) -> quinn::congestion::ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(CloseAware {
            inner: self.inner.clone_box(),
            closing: self.closing.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Builds one connection's [`CloseAware`] controller.
struct CloseAwareFactory {
    inner: Arc<quinn::congestion::CubicConfig>,
    closing: Closing,
}

impl ControllerFactory for CloseAwareFactory {
    fn build(self: Arc<Self>, now: std::time::Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(CloseAware {
            inner: self.inner.clone().build(now, current_mtu),
            closing: self.closing.clone(),
        })
    }
}

fn tls_error(e: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(e.to_string())
}

fn client_config(
    key: &NodeKey,
    expected: PeerId,
    limits: &Limits,
    protocol: &str,
    closing: Closing,
) -> Result<quinn::ClientConfig, QuicError> {
    let (certificate, private_key) =
        libp2p_tls::certificate::generate(key.keypair()).map_err(tls_error)?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = CIPHER_SUITES.to_vec();
    // Not `with_client_auth_cert`: it checks the certificate with webpki, which refuses the
    // libp2p extension (critical by the specification).
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(tls_error)?;
    let own = Arc::new(rustls::sign::CertifiedKey::new(
        vec![certificate],
        signing_key,
    ));
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeCertVerifier { expected }))
        .with_client_cert_resolver(Arc::new(OwnCertificate(own)));
    tls.alpn_protocols = vec![protocol.as_bytes().to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(limits.transport_config(closing));
    Ok(config)
}

/// The TLS 1.3 suites a client offers, in its order of preference. A rustls server (ours is
/// built by `libp2p_tls`) takes the first suite of the client's list it supports, so this
/// order decides what protects every packet. `libp2p_tls` lists ChaCha20-Poly1305 first; with
/// AES-NI and carry-less multiply (every server CPU we target) AES-128-GCM costs a fraction
/// of it, and bulk fragment traffic is encrypted twice per byte stored (send and receive).
static CIPHER_SUITES: &[rustls::SupportedCipherSuite] = &[
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// A libp2p certificate, its self-signature and node-key signature checked.
fn parse_certificate<'a>(
    der: &'a rustls::pki_types::CertificateDer<'a>,
) -> Result<libp2p_tls::certificate::P2pCertificate<'a>, rustls::Error> {
    libp2p_tls::certificate::parse(der)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
}

/// Presents this node's certificate whatever the server asks for.
#[derive(Debug)]
struct OwnCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client's check of a node's certificate under the libp2p TLS rules: exactly one
/// certificate, self-signed, carrying a valid signature by the node key over the certificate
/// key (`libp2p_tls::certificate::parse` checks both), whose PeerId is the one dialed; and the
/// handshake signed by that certificate's key.
#[derive(Debug)]
struct NodeCertVerifier {
    expected: PeerId,
}

impl rustls::client::danger::ServerCertVerifier for NodeCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a node presents exactly one certificate".into(),
            ));
        }
        let certificate = parse_certificate(end_entity)?;
        if certificate.peer_id() != self.expected {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let certificate = parse_certificate(cert)?;
        certificate
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            })?;
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        // What libp2p certificate keys use (ours: ECDSA P-256).
        vec![
            rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
            rustls::SignatureScheme::ECDSA_NISTP384_SHA384,
            rustls::SignatureScheme::ED25519,
        ]
    }
}

fn server_config(
    key: &NodeKey,
    limits: &Limits,
    protocol: &str,
) -> Result<quinn::ServerConfig, QuicError> {
    let mut tls = libp2p_tls::make_server_config(key.keypair()).map_err(tls_error)?;
    tls.alpn_protocols = vec![protocol.as_bytes().to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    // Each accepted connection gets its own transport configuration (`Endpoint::accept`);
    // this one only answers what is refused before that.
    config.transport_config(limits.transport_config(Closing::default()));
    Ok(config)
}

/// A UDP socket speaking QUIC as this node: accepts connections and dials peers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    key: Arc<NodeKey>,
    limits: Limits,
    /// ALPN: the protocol and version this endpoint speaks (the fragment protocol unless
    /// built with [`Endpoint::server_for`] / [`Endpoint::client_for`]).
    protocol: &'static str,
    /// A server's configuration, copied for each connection it accepts.
    server_config: Option<quinn::ServerConfig>,
    /// A server's handshakes in progress, each on its own task.
    handshakes: Option<Arc<Handshakes>>,
    /// Set when the endpoint closes: every connection's close then goes out at once.
    closing: Arc<AtomicBool>,
}

impl Endpoint {
    /// Binds `addr` and accepts connections (a node). Must run inside a tokio runtime.
    pub fn server(
        key: Arc<NodeKey>,
        addr: SocketAddr,
        limits: Limits,
    ) -> Result<Endpoint, QuicError> {
        Endpoint::server_for(PROTOCOL, key, addr, limits)
    }

    /// A server endpoint for another protocol on the same identity and TLS rules (the
    /// validators' consensus protocol); peers must offer the same ALPN.
    pub fn server_for(
        protocol: &'static str,
        key: Arc<NodeKey>,
        addr: SocketAddr,
        limits: Limits,
    ) -> Result<Endpoint, QuicError> {
        let config = server_config(&key, &limits, protocol)?;
        let endpoint = quinn::Endpoint::server(config.clone(), addr)
            .map_err(|source| QuicError::Bind { addr, source })?;
        Ok(Endpoint {
            endpoint,
            key,
            protocol,
            handshakes: Some(Arc::new(Handshakes::new(&limits))),
            limits,
            server_config: Some(config),
            closing: Arc::default(),
        })
    }

    /// Binds an ephemeral loopback-or-any port that only dials (a client).
    pub fn client(
        key: Arc<NodeKey>,
        bind: SocketAddr,
        limits: Limits,
    ) -> Result<Endpoint, QuicError> {
        Endpoint::client_for(PROTOCOL, key, bind, limits)
    }

    /// A dial-only endpoint for another protocol.
    pub fn client_for(
        protocol: &'static str,
        key: Arc<NodeKey>,
        bind: SocketAddr,
        limits: Limits,
    ) -> Result<Endpoint, QuicError> {
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| QuicError::Bind { addr: bind, source })?;
        Ok(Endpoint {
            endpoint,
            key,
            limits,
            protocol,
            server_config: None,
            handshakes: None,
            closing: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// This endpoint's full address, `/ip4/…/udp/…/quic-v1/p2p/<peer id>`.
    pub fn node_addr(&self) -> std::io::Result<NodeAddr> {
        Ok(NodeAddr {
            socket: self.local_addr()?,
            peer: self.key.peer_id(),
        })
    }

    /// Connects to `addr`; fails unless the peer proves `addr`'s PeerId.
    pub async fn dial(&self, addr: &NodeAddr) -> Result<Connection, QuicError> {
        let dial_error = |reason: String| QuicError::Dial {
            addr: addr.to_string(),
            reason,
        };
        let closing = Closing::for_connection(&self.closing);
        let config = client_config(
            &self.key,
            addr.peer,
            &self.limits,
            self.protocol,
            closing.clone(),
        )?;
        // The server name is not checked (the certificate binds the PeerId instead), but rustls
        // wants a syntactically valid one.
        let connecting = self
            .endpoint
            .connect_with(config, addr.socket, "cess-node")
            .map_err(|e| dial_error(e.to_string()))?;
        let connection = connecting.await.map_err(|e| dial_error(e.to_string()))?;
        let connection = Connection::new(connection, closing.connection)?;
        // The verifier already refused another PeerId; this is the belt to its braces.
        if connection.peer_id != addr.peer {
            connection.close(ErrorCode::Protocol, "peer id mismatch");
            return Err(dial_error(format!(
                "peer proved {} instead",
                connection.peer_id
            )));
        }
        Ok(connection)
    }

    /// The next incoming connection whose handshake completed. `None` once the endpoint is
    /// closed. A failed handshake is returned as an error; keep accepting.
    ///
    /// Handshakes run concurrently, each on its own task with `handshake_timeout_ms`, at most
    /// `handshakes_max` at once (more are refused until one ends): a peer that starts a
    /// handshake and goes silent holds one slot for a while, never the accept loop.
    pub async fn accept(&self) -> Option<Result<Connection, QuicError>> {
        let handshakes = self
            .handshakes
            .as_ref()
            .expect("only server endpoints accept connections");
        let mut finished = handshakes.finished_rx.lock().await;
        loop {
            tokio::select! {
                biased;
                done = finished.recv() => {
                    // The endpoint holds a sender: the channel never ends first.
                    return done;
                }
                incoming = self.endpoint.accept() => {
                    let incoming = incoming?;
                    let now_ms = handshakes.started.elapsed().as_millis() as u64;
                    let key = rate_key(incoming.remote_address().ip());
                    let validated = incoming.remote_address_validated();
                    // Two budgets per address. An unvalidated Initial may carry a spoofed
                    // address, so being over its budget only earns it a stateless Retry (the
                    // real owner of the address answers it; a spoofer never sees it). A
                    // validated one proved its address: over that budget it is dropped
                    // unanswered, and a dialing loop waits for its own timeout.
                    let budget = if validated {
                        &handshakes.per_ip_validated
                    } else {
                        &handshakes.per_ip
                    };
                    let over_rate = budget
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take(key, now_ms)
                        .is_err();
                    // Under load (a quarter of the handshake slots taken) too, a client must
                    // first prove it receives at its address: a Retry costs the server no slot,
                    // and a peer that sends ClientHellos and never answers never gets one.
                    let in_progress = self
                        .limits
                        .handshakes_max
                        .max(1)
                        .saturating_sub(handshakes.slots.available_permits());
                    let under_load = in_progress >= (self.limits.handshakes_max / 4).max(1);
                    if !validated && (over_rate || under_load) && incoming.may_retry() {
                        handshakes.refusals.retries.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().refuse();
                        }
                        continue;
                    }
                    if over_rate {
                        handshakes.refusals.per_ip_rate.fetch_add(1, Ordering::Relaxed);
                        incoming.ignore();
                        continue;
                    }
                    let Ok(slot) = handshakes.slots.clone().try_acquire_owned() else {
                        handshakes.refusals.handshakes.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            "{} handshakes in progress; refusing {}",
                            self.limits.handshakes_max,
                            incoming.remote_address()
                        );
                        incoming.refuse();
                        continue;
                    };
                    let closing = Closing::for_connection(&self.closing);
                    let mut config = self
                        .server_config
                        .clone()
                        .expect("only server endpoints accept connections");
                    config.transport_config(self.limits.transport_config(closing.clone()));
                    let timeout = Duration::from_millis(self.limits.handshake_timeout_ms);
                    let tx = handshakes.finished_tx.clone();
                    let counts = handshakes.clone();
                    let limits = self.limits.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let addr = incoming.remote_address();
                        let refused = |reason: String| QuicError::PeerCertificate { addr, reason };
                        let handshake = async {
                            let connecting = incoming
                                .accept_with(Arc::new(config))
                                .map_err(|e| refused(e.to_string()))?;
                            let connection = connecting.await.map_err(|e| refused(e.to_string()))?;
                            Connection::new(connection, closing.connection)
                        };
                        let result = tokio::time::timeout(timeout, handshake)
                            .await
                            .unwrap_or_else(|_| {
                                Err(refused(format!(
                                    "handshake not finished in {} ms",
                                    timeout.as_millis()
                                )))
                            })
                            .inspect_err(|_| {
                                counts
                                    .refusals
                                    .handshake_failures
                                    .fetch_add(1, Ordering::Relaxed);
                            })
                            .and_then(|connection| {
                                let peer = connection.peer_id;
                                if let Err(why) = counts.admit(peer, &limits) {
                                    connection.close(ErrorCode::Protocol, &why);
                                    return Err(refused(why));
                                }
                                // Counted until it closes, however it closes.
                                let watched = connection.inner.clone();
                                tokio::spawn(async move {
                                    watched.closed().await;
                                    counts.release(&peer);
                                });
                                Ok(connection)
                            });
                        let _ = tx.send(result).await;
                    });
                }
            }
        }
    }

    /// The connections this server refused, by reason (none for a client endpoint).
    pub fn refusals(&self) -> Option<&ConnectionRefusals> {
        self.handshakes.as_ref().map(|h| &h.refusals)
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.endpoint
            .close(ErrorCode::Shutdown.into(), b"shutting down");
    }

    /// Waits until every connection has closed.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// Application error codes a connection or stream is closed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// Normal end.
    Done = 0,
    /// The peer broke the protocol (bad frame, bad signature, wrong author): disconnected.
    Protocol = 1,
    /// The peer was too slow.
    Timeout = 2,
    /// The node is shutting down.
    Shutdown = 3,
    /// The receiver does not want the rest of this stream's bytes.
    NotNeeded = 4,
    /// The peer may not connect here (no standing: see `FragmentStore::admit_peer`).
    Refused = 5,
}

impl From<ErrorCode> for quinn::VarInt {
    fn from(code: ErrorCode) -> quinn::VarInt {
        quinn::VarInt::from_u32(code as u32)
    }
}

/// An established connection and the PeerId its handshake proved.
#[derive(Debug, Clone)]
pub struct Connection {
    pub inner: quinn::Connection,
    pub peer_id: PeerId,
    /// Opens the congestion window for the close (see [`CloseAware`]).
    closing: Arc<AtomicBool>,
}

impl Connection {
    fn new(inner: quinn::Connection, closing: Arc<AtomicBool>) -> Result<Connection, QuicError> {
        let addr = inner.remote_address();
        let refuse = |reason: String| QuicError::PeerCertificate { addr, reason };
        let identity = inner
            .peer_identity()
            .ok_or_else(|| refuse("no certificate".into()))?;
        let chain = identity
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .map_err(|_| refuse("unexpected identity type".into()))?;
        let [certificate] = chain.as_slice() else {
            return Err(refuse(format!("{} certificates, expected 1", chain.len())));
        };
        let parsed =
            libp2p_tls::certificate::parse(certificate).map_err(|e| refuse(e.to_string()))?;
        let peer_id = parsed.peer_id();
        // libp2p-tls checks the certificate's signature laxly: a small-order identity key
        // passes without any private key behind it.
        if !crate::identity::is_strong_peer(&peer_id) {
            closing.store(true, Ordering::Release);
            inner.close(ErrorCode::Protocol.into(), b"weak identity key");
            return Err(refuse("a small-order or non-Ed25519 identity key".into()));
        }
        Ok(Connection {
            peer_id,
            inner,
            closing,
        })
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Closes the connection; the close goes out even when the congestion window is full.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.inner.close(code.into(), reason.as_bytes());
    }
}
