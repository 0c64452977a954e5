//! `baton rtt A [B]`: the round-trip time between two members estimated
//! from their Vivaldi coordinates, as `consul rtt` does. The members (this
//! node included) and their coordinates come from one `GET /v1/members`.

use serde::Serialize;

use super::render::sanitize;
use crate::views::Member;

/// The shortest peer-id prefix or suffix taken as one.
const MIN_ID_PART: usize = 4;

/// What `baton rtt --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estimate {
    /// Member A: peer id and name.
    pub a: Named,
    /// Member B.
    pub b: Named,
    /// Estimated RTT, in milliseconds.
    pub rtt_ms: f64,
}

/// A member's peer id and name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Named {
    /// Peer id, base58.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// Finds the member `query` names: a name, a peer id, or the first or last
/// characters (at least four) of a peer id; the error says why none or
/// several match.
pub fn resolve<'a>(members: &'a [Member], query: &str) -> Result<&'a Member, String> {
    let shown = sanitize(query);
    if query.is_empty() {
        return Err("an empty member name: give a name or a peer id".to_owned());
    }
    let one = |found: Vec<&'a Member>, how: &str| -> Option<Result<&'a Member, String>> {
        match found.as_slice() {
            [] => None,
            [m] => Some(Ok(*m)),
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|m| format!("{} ({})", sanitize(&m.name), sanitize(&m.id)))
                    .collect();
                Some(Err(format!(
                    "{shown:?} is ambiguous: it is the {how} of {}; give a full peer id",
                    list.join(", ")
                )))
            }
        }
    };
    if let Some(found) = one(
        members.iter().filter(|m| m.id == query).collect(),
        "peer id",
    ) {
        return found;
    }
    if let Some(found) = one(members.iter().filter(|m| m.name == query).collect(), "name") {
        return found;
    }
    if query.chars().count() >= MIN_ID_PART
        && let Some(found) = one(
            members
                .iter()
                .filter(|m| m.id.starts_with(query) || m.id.ends_with(query))
                .collect(),
            "start or end of the peer ids",
        )
    {
        return found;
    }
    Err(format!(
        "no member is named {shown:?} or has a peer id that starts or ends with it \
         (at least {MIN_ID_PART} characters); `baton members` lists them"
    ))
}

/// The estimate between the members `a` and `b` (`None`: this node).
pub fn estimate(members: &[Member], a: &str, b: Option<&str>) -> Result<Estimate, String> {
    let a = resolve(members, a)?;
    let b = match b {
        Some(b) => resolve(members, b)?,
        None => members.iter().find(|m| m.local).ok_or_else(|| {
            "the node did not list itself among the members (an older batond?): \
             give B as well"
                .to_owned()
        })?,
    };
    let coordinate = |m: &Member| {
        let name = sanitize(&m.name);
        let coord = m.coordinate.as_ref().ok_or_else(|| {
            format!(
                "no coordinate of {name} yet: this node learns it from {name}'s answers \
                 to its probes, within a few seconds of meeting it"
            )
        })?;
        coord
            .to_coordinate()
            .ok_or_else(|| format!("the coordinate of {name} is not finite"))
    };
    let (ca, cb) = (coordinate(a)?, coordinate(b)?);
    if !ca.is_compatible_with(&cb) {
        return Err(format!(
            "the coordinates of {} ({} dimensions) and {} ({}) differ in dimensions: \
             the nodes are configured differently",
            sanitize(&a.name),
            ca.vec.len(),
            sanitize(&b.name),
            cb.vec.len()
        ));
    }
    let rtt_ms = if a.id == b.id {
        0.0
    } else {
        ca.distance_to(&cb).as_secs_f64() * 1e3
    };
    let named = |m: &Member| Named {
        id: m.id.clone(),
        name: m.name.clone(),
    };
    Ok(Estimate {
        a: named(a),
        b: named(b),
        rtt_ms,
    })
}

/// The line `baton rtt` prints.
pub fn text(e: &Estimate) -> String {
    let name = |n: &Named| {
        if n.name.is_empty() {
            sanitize(&n.id)
        } else {
            sanitize(&n.name)
        }
    };
    format!(
        "Estimated {} <-> {} rtt: {:.3} ms (using Vivaldi coordinates)\n",
        name(&e.a),
        name(&e.b),
        e.rtt_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::Coordinate;

    fn member(id: &str, name: &str, vec: Option<Vec<f64>>) -> Member {
        Member {
            id: id.to_owned(),
            name: name.to_owned(),
            state: "alive".to_owned(),
            coordinate: vec.map(|vec| Coordinate {
                vec_ms: vec.iter().map(|v| v * 1e3).collect(),
                error: 0.2,
                adjustment_ms: 0.0,
                height_ms: 0.5,
            }),
            ..Member::default()
        }
    }

    /// alpha (this node) at the origin, bravo 30 ms away on x, charlie 40
    /// ms away on y, delta without a coordinate, and two nodes named echo.
    fn members() -> Vec<Member> {
        vec![
            Member {
                local: true,
                ..member("12D3KooWAlpha000aaaaaaaa", "alpha", Some(vec![0.0, 0.0]))
            },
            member("12D3KooWBravo000bbbbbbbb", "bravo", Some(vec![0.030, 0.0])),
            member(
                "12D3KooWCharlie0cccccccc",
                "charlie",
                Some(vec![0.0, 0.040]),
            ),
            member("12D3KooWDelta000dddddddd", "delta", None),
            member("12D3KooWEcho0001eeeeeee1", "echo", Some(vec![0.0, 0.0])),
            member("12D3KooWEcho0002eeeeeee2", "echo", Some(vec![0.0, 0.0])),
        ]
    }

    #[test]
    fn the_estimate_is_the_distance_of_the_coordinates_plus_the_heights() {
        let m = members();
        // bravo to this node: 30 ms plus two heights of 0.5 ms.
        let e = estimate(&m, "bravo", None).unwrap();
        assert_eq!((e.a.name.as_str(), e.b.name.as_str()), ("bravo", "alpha"));
        assert!((e.rtt_ms - 31.0).abs() < 1e-9, "{e:?}");
        assert_eq!(
            text(&e),
            "Estimated bravo <-> alpha rtt: 31.000 ms (using Vivaldi coordinates)\n"
        );
        // bravo to charlie: the hypotenuse, 50 ms, plus the heights.
        let e = estimate(&m, "bravo", Some("charlie")).unwrap();
        assert!((e.rtt_ms - 51.0).abs() < 1e-9, "{e:?}");
        assert_eq!(estimate(&m, "alpha", Some("alpha")).unwrap().rtt_ms, 0.0);
    }

    #[test]
    fn members_are_found_by_name_id_or_id_prefix_or_suffix() {
        let m = members();
        for query in [
            "charlie",
            "12D3KooWCharlie0cccccccc",
            "12D3KooWCh",
            "cccccccc",
            "cccc",
        ] {
            assert_eq!(resolve(&m, query).unwrap().name, "charlie", "{query}");
        }
    }

    #[test]
    fn unknown_ambiguous_and_unplaced_members_are_clear_errors() {
        let m = members();
        let err = resolve(&m, "zulu").unwrap_err();
        assert!(err.contains("no member is named \"zulu\""), "{err}");
        let err = resolve(&m, "echo").unwrap_err();
        assert!(
            err.contains("ambiguous") && err.contains("12D3KooWEcho0001eeeeeee1"),
            "{err}"
        );
        // A common prefix of every peer id.
        let err = resolve(&m, "12D3KooW").unwrap_err();
        assert!(err.contains("ambiguous"), "{err}");
        // Too short to be taken as part of a peer id.
        let err = resolve(&m, "ccc").unwrap_err();
        assert!(err.contains("no member"), "{err}");
        let err = estimate(&m, "delta", None).unwrap_err();
        assert!(err.contains("no coordinate of delta yet"), "{err}");
        let mut no_local = m.clone();
        no_local[0].local = false;
        let err = estimate(&no_local, "bravo", None).unwrap_err();
        assert!(err.contains("give B"), "{err}");
        let mut flat = m.clone();
        flat[1].coordinate.as_mut().unwrap().vec_ms = vec![0.0; 3];
        let err = estimate(&flat, "bravo", None).unwrap_err();
        assert!(err.contains("dimensions"), "{err}");
        let mut broken = m;
        broken[1].coordinate.as_mut().unwrap().height_ms = f64::NAN;
        let err = estimate(&broken, "bravo", None).unwrap_err();
        assert!(err.contains("not finite"), "{err}");
    }
}
