//! The HTTP stack's limits, over real sockets: what a client cannot make a surface hold.

use cess_http::metrics::{Registry, ScrapeFn, Unit};
use cess_http::{HttpLimits, HttpStats, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: HttpLimits = HttpLimits {
    header_bytes_max: 8 << 10,
    body_bytes_max: 1 << 10,
    connections_max: 4,
    header_timeout_ms: 300,
    connection_timeout_ms: 1_000,
};

async fn start(limits: HttpLimits) -> (SocketAddr, Arc<HttpStats>) {
    let listener = cess_http::bind("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(HttpStats::default());
    let handler: cess_http::Handler = Arc::new(|request: &Request| match request.path.as_str() {
        "/hello" => Response::text(200, "hello\n"),
        "/echo" => Response::text(200, request.body.clone()),
        _ => Response::not_found("/hello"),
    });
    tokio::spawn(cess_http::serve(listener, limits, handler, stats.clone()));
    (addr, stats)
}

/// Everything the server sends until it closes, with the time it took to close.
async fn read_to_close(socket: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, socket.read_to_end(&mut out)).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_gets_and_refuses_unknown_paths() {
    let (addr, stats) = start(LIMITS).await;
    let body = cess_http::get(addr, "/hello", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(body, "hello\n");
    let err = cess_http::get(addr, "/nothing", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, cess_http::HttpError::Status { status: 404, .. }),
        "{err}"
    );
    assert_eq!(stats.ok.load(Relaxed), 1);
    assert_eq!(stats.client_errors.load(Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_refused_with_431() {
    let (addr, _) = start(LIMITS).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let filler = "a".repeat(32 << 10);
    let head = format!("GET /hello HTTP/1.1\r\nhost: x\r\nx-filler: {filler}\r\n\r\n");
    // The server may close before it has read all of it.
    let _ = socket.write_all(head.as_bytes()).await;
    let (answer, _) = read_to_close(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_with_413() {
    let (addr, _) = start(LIMITS).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_to_close(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // Chunked, so no length to refuse on: cut at the limit while reading.
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let chunk = "x".repeat(4096);
    let request = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1000\r\n{chunk}\r\n0\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let (answer, _) = read_to_close(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_and_does_not_hold_off_others() {
    let (addr, stats) = start(LIMITS).await;
    // Half a request head, then nothing (slowloris).
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Served meanwhile.
    let body = cess_http::get(addr, "/hello", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(body, "hello\n");
    let (answer, took) = read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_millis(LIMITS.connection_timeout_ms + 500),
        "the slow client held its connection {took:?}"
    );
    assert!(!answer.contains("hello"), "{answer:?}");
    assert!(stats.connections_timed_out.load(Relaxed) >= 1);

    // A client that sends its head and then never reads a large answer does not keep its slot
    // past the connection timeout either (here: the head trickled under the header timeout,
    // byte by byte, until the connection's own bound cuts it).
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for byte in b"GET /hello HTTP/1.1\r\nhost: x\r\nx-slow: ".iter().cycle() {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cut, "a client trickling its head was never cut");
    assert!(started.elapsed() < Duration::from_millis(LIMITS.connection_timeout_ms + 1_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once() {
    let (addr, stats) = start(LIMITS).await;
    let mut idle = Vec::new();
    for _ in 0..LIMITS.connections_max {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let (answer, took) = read_to_close(&mut extra, Duration::from_secs(2)).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(stats.connections_refused.load(Relaxed), 1);
    // Once the idle ones are cut (header timeout), the surface serves again.
    tokio::time::sleep(Duration::from_millis(LIMITS.header_timeout_ms + 300)).await;
    let body = cess_http::get(addr, "/hello", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(body, "hello\n");
    drop(idle);
}

#[tokio::test]
async fn binding_beyond_loopback_needs_the_public_flag() {
    let err = cess_http::bind("0.0.0.0:0".parse().unwrap(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, cess_http::HttpError::NotLoopback { .. }));
    assert!(err.to_string().contains("http_public = true"), "{err}");
    cess_http::bind("0.0.0.0:0".parse().unwrap(), true)
        .await
        .unwrap();
}

#[test]
fn metrics_parse_with_a_prometheus_parser() {
    let mut registry = Registry::default();
    let latency = cess_http::metrics::latency_histogram();
    latency.observe(0.003);
    latency.observe(2.0);
    registry.register_with_unit(
        "cess_test_latency",
        "A latency",
        Unit::Seconds,
        latency.clone(),
    );
    let stats = Arc::new(HttpStats::default());
    stats.ok.fetch_add(3, Relaxed);
    registry.register_collector(ScrapeFn::boxed(move |scrape| {
        scrape.gauge("cess_test_space", "Space", Some(Unit::Bytes), 1 << 40);
        scrape.info("cess_test_backend", "Backend in use", &[("backend", "cpu")]);
        stats.scrape(scrape);
    }));
    let text = cess_http::metrics::encode(&registry);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str| {
        parsed
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
            .value
            .clone()
    };
    assert!(
        matches!(value("cess_test_space_bytes"), prometheus_parse::Value::Gauge(v) if v == (1u64 << 40) as f64)
    );
    let requests = parsed
        .samples
        .iter()
        .find(|s| s.metric == "cess_http_requests_total" && s.labels.get("class") == Some("2xx"))
        .unwrap_or_else(|| panic!("2xx requests missing from\n{text}"));
    // OpenMetrics names a counter's family without `_total`; this parser (of the older text
    // format) then cannot tie the sample to its TYPE line and calls it untyped.
    assert!(
        matches!(
            requests.value,
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) if v == 3.0
        ),
        "{:?}\n{text}",
        requests.value
    );
    match value("cess_test_latency_seconds") {
        prometheus_parse::Value::Histogram(buckets) => {
            let under_4ms = buckets.iter().find(|b| b.less_than >= 0.004).unwrap();
            assert_eq!(under_4ms.count, 1.0, "{text}");
            assert_eq!(buckets.last().unwrap().count, 2.0, "{text}");
        }
        other => panic!("not a histogram: {other:?}\n{text}"),
    }
    assert!(
        text.contains("cess_test_backend{backend=\"cpu\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        !text.contains(".."),
        "a help text ends with a period: {text}"
    );
}
