//! A stand-in for the driver in tests of the API and the CLI: it answers
//! session commands the way the driver's contract says, against the
//! sessions of [`Shared`], without any network or protocol state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::state::{Closed, CommandError, SessionCommand, Shared};
use crate::views::{Forwarded, Move, Report, Session};

/// Reports the fake driver accepted, by session id.
pub(crate) type Reports = Arc<Mutex<Vec<(String, Report)>>>;

/// A session as the driver shows it.
pub(crate) fn view(id: &str, primary: &str, primary_name: &str, backups: &[&str]) -> Session {
    Session {
        id: id.to_owned(),
        service: "rtp-audio".to_owned(),
        primary: primary.to_owned(),
        primary_name: primary_name.to_owned(),
        backups: backups.iter().map(|b| (*b).to_owned()).collect(),
        epoch: 1,
        version: 0,
        state: "active".to_owned(),
        client: "127.0.0.1:5004".to_owned(),
        location: "127.0.0.0/24".to_owned(),
        params: BTreeMap::new(),
        started_ms: 1_772_368_496_789,
        updated_ms: 1_772_368_496_789,
        reason: "open".to_owned(),
        history: vec![Move {
            epoch: 1,
            primary: primary.to_owned(),
            reason: "open".to_owned(),
            at_ms: 1_772_368_496_789,
        }],
        hosted_here: false,
        standby_here: false,
        paused: false,
        instance: None,
    }
}

/// Answers the commands of `commands` against `shared.sessions` until
/// the test ends:
/// - open: `rtp-audio` opens `s1`, `s2`... hosted here; any other
///   service is refused with 400;
/// - close: 404 for an unknown session, 409 naming the primary when it
///   is another node, else the closed session;
/// - report: 404 for an unknown session, else recorded in the result;
/// - ping: answered at once.
pub(crate) fn spawn(shared: Arc<Shared>, mut commands: mpsc::Receiver<SessionCommand>) -> Reports {
    let reports = Reports::default();
    let seen = reports.clone();
    tokio::spawn(async move {
        let mut opened = 0;
        while let Some(command) = commands.recv().await {
            let unknown = |id: &str| CommandError {
                status: 404,
                message: format!("no session {id:?} on this node"),
            };
            match command {
                SessionCommand::Open {
                    service,
                    client,
                    params,
                    reply,
                } => {
                    let answer = if service == "rtp-audio" {
                        opened += 1;
                        let local = &shared.local;
                        let view = Session {
                            client,
                            params,
                            hosted_here: true,
                            standby_here: false,
                            paused: false,
                            ..view(&format!("s{opened}"), &local.id, &local.name, &[])
                        };
                        // Backups: the alive members, by name.
                        let view = Session {
                            backups: shared
                                .members_sorted()
                                .into_iter()
                                .filter(|m| m.state == "alive")
                                .map(|m| m.id)
                                .collect(),
                            ..view
                        };
                        shared.sessions.insert(view.id.clone(), view.clone());
                        Ok(view)
                    } else {
                        Err(CommandError {
                            status: 400,
                            message: format!("unknown service {service:?}"),
                        })
                    };
                    let _ = reply.send(answer);
                }
                SessionCommand::Close { id, reply } => {
                    // Closed here by the primary; sent on by any other node.
                    let answer = match shared.sessions.get_mut(&id) {
                        None => Err(unknown(&id)),
                        Some(s) if s.primary != shared.local.id => {
                            Ok(Closed::Forwarded(Forwarded {
                                forwarded_to: s.primary.clone(),
                                forwarded_to_name: s.primary_name.clone(),
                            }))
                        }
                        Some(mut s) => {
                            s.state = "closed".to_owned();
                            s.hosted_here = false;
                            s.reason = "close".to_owned();
                            Ok(Closed::Here(Box::new(s.clone())))
                        }
                    };
                    let _ = reply.send(answer);
                }
                SessionCommand::Report { id, report, reply } => {
                    // Taken here by the primary; sent on by any other node.
                    let answer = match shared.sessions.get(&id).map(|s| s.clone()) {
                        Some(s) => {
                            seen.lock().unwrap().push((id, report));
                            Ok((s.primary != shared.local.id).then_some(Forwarded {
                                forwarded_to: s.primary,
                                forwarded_to_name: s.primary_name,
                            }))
                        }
                        None => Err(unknown(&id)),
                    };
                    let _ = reply.send(answer);
                }
                SessionCommand::Ping { reply } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    });
    reports
}
