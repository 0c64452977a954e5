//! This node and the overlay as it sees it: `GET /v1/status`, `/v1/members`
//! and `/v1/peers`, straight from [`Shared`].

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use super::AppState;
use super::error::ApiError;
use crate::state::{MemberFilter, Shared};
use crate::views::{Member, MemberCounts, Peer, Status};

pub(super) async fn status(State(st): State<AppState>) -> Json<Status> {
    let shared = &st.shared;
    let local = &shared.local;
    let [alive, suspect, dead, left] = shared.members_by_state().map(|(_, n)| n as u64);
    let listen_addrs = match shared.listen_addrs.read() {
        Ok(addrs) => addrs.clone(),
        // A writer panicked mid-update; the list is still worth showing.
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Json(Status {
        id: local.id.clone(),
        name: local.name.clone(),
        overlay: local.overlay.clone(),
        profile: local.profile.clone(),
        version: local.version.clone(),
        capacity: local.capacity,
        uptime_s: uptime(shared).as_secs(),
        incarnation: shared.metrics.incarnation(),
        local_health: shared.metrics.local_health(),
        listen_addrs,
        members: MemberCounts {
            alive,
            suspect,
            dead,
            left,
        },
        peers: shared.peers.len() as u64,
        coordinate: match shared.coordinate.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        },
    })
}

/// Time since the node started; zero if the clock went back.
pub(super) fn uptime(shared: &Shared) -> Duration {
    SystemTime::now()
        .duration_since(shared.local.started)
        .unwrap_or_default()
}

/// `GET /v1/members[?tag=KEY=VALUE][&state=STATE]`: the members and this
/// node (`"local": true`), those with every tag asked and in one of the
/// states asked.
pub(super) async fn members(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<Member>>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = MemberFilter::from_query(&pairs).map_err(ApiError::bad_request)?;
    Ok(Json(st.shared.members_with_me(&filter)))
}

pub(super) async fn peers(State(st): State<AppState>) -> Json<Vec<Peer>> {
    Json(st.shared.peers_sorted())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::api::testing::{Server, get, shared};

    #[tokio::test]
    async fn status_reports_identity_counts_and_health() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/v1/status").await;
        assert_eq!(reply.status, 200);
        assert!(reply.content_type.starts_with("application/json"));
        let mut status = reply.json();
        let uptime = status["uptime_s"].take();
        assert!(
            (90..3600).contains(&uptime.as_u64().unwrap()),
            "uptime {uptime}"
        );
        assert_eq!(
            status,
            json!({
                "id": "12D3KooWLocal",
                "name": "alpha",
                "overlay": "test",
                "profile": "lan",
                "version": "0.1.0",
                "capacity": 8,
                "uptime_s": null,
                "incarnation": 9,
                "local_health": 2,
                "listen_addrs": ["/ip4/127.0.0.1/tcp/4000"],
                "members": {"alive": 1, "suspect": 1, "dead": 0, "left": 0},
                "peers": 1,
                "coordinate": {"vec_ms": [0.25, 0.0], "height_ms": 0.5, "adjustment_ms": 0.0, "error": 0.25},
            })
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn members_are_sorted_and_carry_the_contract_fields() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let members = get(server.addr, "/v1/members").await.json();
        let list = members.as_array().unwrap();
        let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
        // This node is listed too, marked as such.
        assert_eq!(names, ["alpha", "bravo", "charlie"]);
        assert_eq!(list[0]["id"], "12D3KooWLocal");
        assert_eq!(list[0]["local"], true);
        assert_eq!(list[0]["state"], "alive");
        assert_eq!(list[0]["capacity"], 8);
        // DESIGN.md: scripts rely on these fields.
        assert_eq!(list[1]["id"], "12D3KooWBravo");
        assert_eq!(list[1]["state"], "alive");
        assert_eq!(list[1]["local"], false);
        assert_eq!(list[2]["state"], "suspect");
        assert_eq!(list[2]["incarnation"], 2);
        assert_eq!(list[1]["rtt_ms"], 0.4);
        assert_eq!(list[2]["tags"], json!({"region": "us"}));
        assert_eq!(
            members,
            serde_json::to_value(shared.members_with_me(&Default::default())).unwrap()
        );
        server.stop().await;
    }

    fn names_of(members: &serde_json::Value) -> Vec<String> {
        members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn members_are_filtered_by_tags_and_states() {
        let server = Server::start(shared(), None).await;
        for (query, want) in [
            ("?tag=region=eu", &["alpha", "bravo"][..]),
            ("?tag=region%3Dus", &["charlie"]),
            ("?state=alive", &["alpha", "bravo"]),
            ("?tag=region=eu&state=alive", &["alpha", "bravo"]),
            ("?tag=region=us&state=alive", &[]),
            ("?state=alive&state=suspect", &["alpha", "bravo", "charlie"]),
            ("?tag=region=eu&tag=rack=r1", &[]),
            ("?tag=zone=eu", &[]),
            ("", &["alpha", "bravo", "charlie"]),
        ] {
            let reply = get(server.addr, &format!("/v1/members{query}")).await;
            assert_eq!(reply.status, 200, "{query}");
            assert_eq!(names_of(&reply.json()), want, "{query}");
        }
        for (query, why) in [
            ("?tag=region", "no '='"),
            ("?tag=region=e%20u", "only letters"),
            ("?tag=region=eu&tag=region=us", "two values"),
            (
                "?state=zombie",
                "expected one of alive, suspect, dead, left",
            ),
            ("?colour=red", "unknown query parameter \"colour\""),
        ] {
            let reply = get(server.addr, &format!("/v1/members{query}")).await;
            assert_eq!(reply.status, 400, "{query}");
            let message = reply.error();
            assert!(message.contains(why), "{query}: {message}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn peers_are_listed() {
        let server = Server::start(shared(), None).await;
        let peers = get(server.addr, "/v1/peers").await.json();
        assert_eq!(
            peers,
            json!([{
                "id": "12D3KooWBravo",
                "addrs": ["/ip4/127.0.0.1/tcp/4001"],
                "connections": 1,
                "admission": "admitted",
                "reason": null,
            }])
        );
        server.stop().await;
    }
}
