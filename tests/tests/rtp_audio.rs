//! In-process: the `rtp-audio` service alone (no overlay) streams to a local
//! RTP receiver, which checks that starts, stops, takeovers and
//! make-before-break transfers make one continuous stream.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_node::service::rtp::{PACKET_LEN, PAYLOAD_TYPE_PCMU, RtpAudio};
use baton_node::service::{Service, SessionSpec, g711, wav};
use baton_protocol::stream;
use baton_testnet::rtp_receiver::RtpReceiver;
use baton_tests::TempDir;
use tokio::time::Instant;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn spec(id: &str, client: &str, params: &[(&str, &str)]) -> SessionSpec {
    SessionSpec {
        id: id.into(),
        service: "rtp-audio".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        client: client.into(),
        started_ms: now_ms(),
    }
}

/// Waits (without blocking the runtime) until `rx` holds `n` packets.
async fn wait_packets(rx: &RtpReceiver, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while (rx.len() as u64) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} packets arrived",
            rx.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks what every stream of `ids` must satisfy: timestamps advance
/// with sequence numbers, one SSRC, PCMU, marker only on packet 0.
fn assert_one_stream(rx: &RtpReceiver, ids: stream::Ids) {
    for a in rx.arrivals() {
        let k = a.seq.wrapping_sub(ids.seq0);
        assert_eq!(a.ssrc, ids.ssrc);
        assert_eq!(a.payload_type, PAYLOAD_TYPE_PCMU);
        assert_eq!(a.len, PACKET_LEN);
        // Tests run far below 65536 packets: k is the packet index.
        assert_eq!(a.ts.wrapping_sub(ids.ts0), u32::from(k) * 160);
        assert_eq!(a.marker, k == 0);
    }
}

#[tokio::test]
async fn a_receiver_sees_one_continuous_stream() {
    let rx = RtpReceiver::bind("127.0.0.1:0").unwrap();
    let s = spec("continuous", &rx.local_addr().to_string(), &[]);
    let ids = stream::Ids::derive(&s.id);
    let instance = RtpAudio::new(None).start(s).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = instance.stop().await;
    assert!(!status.running);
    wait_packets(&rx, status.packets_sent).await;
    let report = rx.report(..);
    assert!(report.packets >= 5, "{report:?}");
    assert_eq!(report.packets, status.packets_sent);
    assert_eq!(
        (report.lost, report.duplicates, report.out_of_order),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.ssrcs, [ids.ssrc]);
    assert_one_stream(&rx, ids);
}

#[tokio::test]
async fn a_takeover_on_another_node_continues_the_stream_after_a_gap() {
    let rx = RtpReceiver::bind("127.0.0.1:0").unwrap();
    let s = spec("takeover", &rx.local_addr().to_string(), &[]);
    let ids = stream::Ids::derive(&s.id);
    let service = RtpAudio::new(None);
    let a = service.start(s.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_a = a.stop().await.packets_sent;
    tokio::time::sleep(Duration::from_millis(120)).await;
    // The backup starts the same session with its own socket.
    let b = service.start(s).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent_b = b.stop().await.packets_sent;
    wait_packets(&rx, sent_a + sent_b).await;
    let report = rx.report(..);
    assert_eq!(report.ssrcs, [ids.ssrc], "one stream, not a new one");
    assert_eq!(report.sources.len(), 2);
    assert_eq!(
        (report.duplicates, report.out_of_order),
        (0, 0),
        "{report:?}"
    );
    // 120 ms of outage is at least 5 packets never sent.
    assert!(report.lost >= 5, "{report:?}");
    assert_eq!(
        report.longest_missing_run, report.lost,
        "one gap: {report:?}"
    );
    assert_one_stream(&rx, ids);
}

#[tokio::test]
async fn make_before_break_loses_nothing_and_duplicates_are_identical() {
    let rx = RtpReceiver::bind("127.0.0.1:0").unwrap();
    let s = spec("transfer", &rx.local_addr().to_string(), &[]);
    let ids = stream::Ids::derive(&s.id);
    let service = RtpAudio::new(None);
    let old = service.start(s.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = service.start(s).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_old = old.stop().await.packets_sent;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_new = new.stop().await.packets_sent;
    wait_packets(&rx, sent_old + sent_new).await;
    let report = rx.report(..);
    assert_eq!(report.lost, 0, "{report:?}");
    assert!(report.duplicates >= 1, "{report:?}");
    assert_eq!(report.mismatched_duplicates, 0, "{report:?}");
    assert_eq!(report.ssrcs, [ids.ssrc]);
    assert_eq!(report.sources.len(), 2);
    assert_one_stream(&rx, ids);
}

#[tokio::test]
async fn a_wav_stream_carries_the_file_samples() {
    let dir = TempDir::new("rtp-wav-stream");
    let samples: Vec<i16> = (0..1000)
        .map(|i| ((i * 97) % 20_000 - 10_000) as i16)
        .collect();
    std::fs::write(dir.0.join("a.wav"), wav::encode(1, 8000, &samples)).unwrap();
    let rx = RtpReceiver::bind("127.0.0.1:0").unwrap();
    let s = spec(
        "wav",
        &rx.local_addr().to_string(),
        &[("source", "wav:a.wav"), ("seq0", "0")],
    );
    let instance = RtpAudio::new(Some(dir.0.clone())).start(s).unwrap();
    wait_packets(&rx, 3).await;
    drop(instance);
    for a in rx.arrivals() {
        let k = u64::from(a.seq);
        let expected: Vec<u8> = (k * 160..k * 160 + 160)
            .map(|n| g711::encode(samples[(n % 1000) as usize]))
            .collect();
        assert_eq!(a.payload, expected, "packet {k}");
    }
}
