//! The numeric targets of Baton's design, written once: `testnet run`
//! checks each report against them and `testnet evaluate` tabulates every
//! report against the same numbers in docs/evaluation.md.

use crate::scenarios::fmt_num;

/// A limit that differs between a LAN and the emulated wide area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByNet {
    /// On a LAN.
    pub lan: f64,
    /// On the emulated WAN.
    pub wan: f64,
}

impl ByNet {
    /// The limit on the WAN if `wan`, else on the LAN.
    pub fn on(self, wan: bool) -> f64 {
        if wan { self.wan } else { self.lan }
    }
}

/// From `kill -9` of a node until every survivor marks it dead, p99 (ms).
pub const DETECTION_P99_MS: ByNet = ByNet {
    lan: 1000.0,
    wan: 1500.0,
};
/// Client-visible gap of an RTP session when its primary is killed, p99
/// (ms).
pub const GAP_P99_MS: ByNet = ByNet {
    lan: 1500.0,
    wan: 2000.0,
};
/// The same with a `transcode` session (ffmpeg behind the RTP gate) whose
/// first backup keeps a warm standby (its instance runs, its gate closed);
/// a cold one has [`GAP_P99_MS`] (ms).
pub const TRANSCODE_WARM_GAP_P99_MS: ByNet = ByNet {
    lan: 1000.0,
    wan: 1500.0,
};
/// A node cut one way (it cannot hear, or cannot send) is fenced and
/// stops serving within this of the cut, and no client hears two senders
/// for longer (ms; docs/protocol.md 7.12, "Bound").
pub const FENCE_MS: ByNet = ByNet {
    lan: 3000.0,
    wan: 6000.0,
};
/// Healthy nodes declared dead, under loss or beside a CPU-starved node.
pub const FALSE_DEATHS: f64 = 0.0;
/// Monitoring traffic per node on the wire, idle (B/s).
pub const TRAFFIC_BYTES_PER_NODE_PER_S: f64 = 1500.0;
/// CPU of a node while a stranger sprays it with 4 000 datagrams a second
/// (% of a core): dropping them must stay cheap.
pub const SPRAY_CPU_PCT: f64 = 5.0;
/// In the side-by-side run with Serf (10 nodes, LAN): Baton declares a
/// kill within this (ms, p50)...
pub const COMPARE_DETECTION_MS: f64 = 600.0;
/// ...and its bytes x detection time is at most this fraction of Serf's
/// ("clearly beats": half).
pub const COMPARE_PRODUCT_RATIO: f64 = 0.5;
/// Traffic per node at the largest overlay over the smallest: flat.
pub const TRAFFIC_RATIO: f64 = 1.2;
/// An update reaches 99.9% of 1000 simulated nodes, p99 (ms).
pub const DISSEMINATION_P99_MS: f64 = 1200.0;
/// Sessions lost 10 s after any single fault or partition heal.
pub const SESSIONS_LOST: f64 = 0.0;
/// Sessions lost in a region outage (`testnet run outage`) among those with
/// a backup outside the failed region, at the end of the outage and 10 s
/// after the region is back; the client gap is held to the WAN
/// [`GAP_P99_MS`].
pub const OUTAGE_SESSIONS_LOST: f64 = 0.0;
/// Sessions doubly owned 10 s after any single fault or partition heal.
pub const SESSIONS_DOUBLY_OWNED: f64 = 0.0;
/// A crashed primary's session claimed at every live node, 1000 simulated
/// nodes with 2000 sessions, p99 (ms).
pub const SIM_TAKEOVER_P99_MS: f64 = 1500.0;
/// Wall time of 60 virtual seconds of 1000 simulated nodes with 2000
/// sessions, on the project's machine (s).
pub const SIM_1000_WALL_S: f64 = 90.0;
/// A session whose client's path from its primary degraded (10% loss,
/// +150 ms) is heard from its new primary within the nodes' `poor_for` plus
/// this (ms): the time to see the loss in RTCP reports and to move.
pub const DEGRADE_TRANSFER_SLACK_MS: f64 = 3000.0;
/// Packets lost by a make-before-break move itself (loss on the degraded
/// path before it is counted apart).
pub const MOVE_LOST_PACKETS: f64 = 0.0;
/// Vivaldi median relative RTT error on the emulated WAN (%).
pub const VIVALDI_MEDIAN_ERROR_PCT: f64 = 10.0;
/// RSS of an idle node (MB).
pub const IDLE_RSS_MB: f64 = 30.0;
/// CPU of an idle node (% of a core).
pub const IDLE_CPU_PCT: f64 = 1.0;

/// Milliseconds as the targets write them: seconds, one decimal (`1.0 s`).
pub fn seconds(ms: f64) -> String {
    format!("{:.1} s", ms / 1000.0)
}

/// Bytes per second as the targets write them (`2 KB/s`).
pub fn kb_per_s(bytes_per_s: f64) -> String {
    format!("{} KB/s", fmt_num(bytes_per_s / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_written_as_the_design_writes_them() {
        assert_eq!(seconds(DETECTION_P99_MS.on(false)), "1.0 s");
        assert_eq!(seconds(DETECTION_P99_MS.on(true)), "1.5 s");
        assert_eq!(seconds(DISSEMINATION_P99_MS), "1.2 s");
        assert_eq!(kb_per_s(TRAFFIC_BYTES_PER_NODE_PER_S), "1.5 KB/s");
    }
}
