//! A request body the client got wrong is the client's error: 400, counted as a refused
//! request, and no upstream error (which anyone could otherwise raise alerts with).

use crate::common;

use common::raw::raw_http;
use common::*;

/// Malformed chunked bodies, each sent whole behind its head in one write.
fn cases() -> Vec<(&'static str, String)> {
    vec![
        (
            "overflowing size",
            "ffffffffffffffff1\r\nx\r\n0\r\n\r\n".into(),
        ),
        ("negative size", "-5\r\nhello\r\n0\r\n\r\n".into()),
        ("hex prefix", "0x5\r\nhello\r\n0\r\n\r\n".into()),
        ("bare LF", "5\nhello\n0\n\n".into()),
        (
            "100 KB chunk extension",
            format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(100 * 1024)),
        ),
    ]
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_malformed_chunked_body_on_a_public_path_is_a_400_not_an_upstream_error() {
    let h = start_with(|c| c.auth.public_paths = vec!["/pub".into()]).await;
    let admin = h.admin.unwrap();
    for (what, body) in cases() {
        let (status, answer) = raw_http(
            h.addr,
            &format!(
                "POST /pub/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            ),
        )
        .await;
        assert_eq!(status, 400, "{what}: {answer}");
    }
    let n = cases().len();
    wait_logs(
        &[
            "[http] request refused",
            "reason=bad_request",
            "path=/pub/x",
        ],
        n,
    )
    .await;
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert_eq!(
        metric(&metrics, "gatewarden_upstream_connect_errors_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "gatewarden_requests_refused_total{reason=\"bad_request\"}"
        ),
        n as f64,
        "{metrics}"
    );
    assert!(!logs().contains("reason=upstream_bad_answer"));
}
