//! The `baton` command line: talks to a node's HTTP API (see [`crate::api`])
//! over plain HTTP, shows what it reads as tables for people or passes the
//! API's JSON through unchanged for scripts (`--json`), and opens, closes and
//! reports on sessions. [`run`] is the whole program; [`client`] and [`sse`]
//! are there for other programs too.

use std::ffi::OsString;
use std::io::{self, Write};

use clap::Parser as _;
use jiff::tz::TimeZone;
use serde::de::DeserializeOwned;

mod args;
pub mod client;
mod error;
mod generate;
pub mod render;
pub mod rtt;
pub mod sse;
#[cfg(test)]
mod testing;
mod watch;

pub use client::{ApiClient, DEFAULT_API};
pub use error::CliError;

use args::{Cli, Command};
use client::{Verb, encode, session_path};
use render::Names;

use crate::views::{Forwarded, Health, Member, OpenRequest, Peer, Report, Session, Status};

/// Runs `baton` with these arguments (the first is the program name) and
/// returns the process exit code: 0 on success, 1 on error, 2 on bad usage.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_to(args, &mut io::stdout())
}

/// [`run`], writing the output to `out` (errors still go to stderr, and
/// `watch` to stdout).
fn run_to<I, T>(args: I, out: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args).and_then(|cli| cli.command.check().map(|()| cli)) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are "errors" that go to stdout with code 0.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let api = cli
        .api
        .or_else(|| env_var("BATON_API"))
        .unwrap_or_else(|| DEFAULT_API.to_owned());
    let token = token_from(cli.token, env_var);
    // Commands about the programs themselves need no node.
    let result = match cli.command {
        Command::Completions(c) => generate::completions(c.shell, c.program, out),
        Command::Man(m) => match &m.out_dir {
            Some(dir) => generate::man_pages(m.program, dir, out),
            None => generate::man(m.program, out),
        },
        command => execute(command, &api, token, cli.json, out),
    };
    match result {
        Ok(()) => 0,
        // The reader went away (`baton watch | head`): nothing left to do.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            1
        }
    }
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn execute(
    command: Command,
    api: &str,
    token: Option<String>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = ApiClient::new(api, token)?;
    let get = Verb::Get;
    let text = match command {
        Command::Status => show(&client, get, "/v1/status", json, |s: Status| {
            render::status_text(&s)
        })?,
        Command::Health => show(&client, get, "/v1/health", json, |h: Health| {
            format!("{}\n", h.status)
        })?,
        Command::Members(m) => show(&client, get, &m.path(), json, |members: Vec<Member>| {
            render::members_table(&members, m.wide)
        })?,
        Command::Rtt(r) => {
            let members: Vec<Member> = client.get("/v1/members")?;
            let estimate = rtt::estimate(&members, &r.a, r.b.as_deref()).map_err(CliError::Rtt)?;
            if json {
                passthrough(&encode("/v1/members", &estimate)?)
            } else {
                rtt::text(&estimate)
            }
        }
        Command::Peers(w) => show(&client, get, "/v1/peers", json, |p: Vec<Peer>| {
            render::peers_table(&p, w.wide)
        })?,
        Command::Sessions(w) => show(&client, get, "/v1/sessions", json, |s: Vec<Session>| {
            render::sessions_table(&s, &node_names(&client), w.wide)
        })?,
        Command::Session(s) => show(&client, get, &session_path(&s.id, ""), json, |s| {
            render::session_text(&s, &node_names(&client), &TimeZone::system())
        })?,
        Command::Open(open) => {
            let request = OpenRequest {
                service: open.service,
                client: open.client,
                params: open.params.into_iter().collect(),
            };
            let path = "/v1/sessions";
            let body = encode(path, &request)?;
            show(&client, Verb::Post(body), path, json, |s| {
                render::opened_text(&s, &node_names(&client))
            })?
        }
        Command::Close(s) => {
            let path = session_path(&s.id, "");
            let answer = client.send(Verb::Delete, &path)?;
            // 200 with the closed session: the node asked is the primary.
            // 202 with the primary it was sent on to: it is not.
            let value: serde_json::Value = client.decode(&path, &answer)?;
            if value.get("forwarded_to").is_some() {
                let to: Forwarded = client.decode(&path, &answer)?;
                if json {
                    let sent = serde_json::json!({
                        "session": s.id,
                        "forwarded_to": to.forwarded_to,
                        "forwarded_to_name": to.forwarded_to_name,
                    });
                    format!("{sent}\n")
                } else {
                    render::close_forwarded_text(&s.id, &to)
                }
            } else if json {
                passthrough(&answer)
            } else {
                render::closed_text(&client.decode(&path, &answer)?)
            }
        }
        Command::Report(r) => {
            let report = Report {
                loss: r.loss,
                jitter_ms: r.jitter_ms,
                rtt_ms: r.rtt_ms,
                packets: r.packets,
            };
            let path = session_path(&r.id, "/report");
            let body = encode(&path, &report)?;
            let answer = client.send(Verb::Post(body.clone()), &path)?;
            // 204 without a body: the primary took it. 202 with the primary
            // it was sent on to: the node asked is not the primary.
            let forwarded: Option<Forwarded> = if answer.trim().is_empty() {
                None
            } else {
                Some(client.decode(&path, &answer)?)
            };
            if json {
                let taken = serde_json::json!({
                    "session": r.id,
                    "report": report,
                    "forwarded_to": forwarded.as_ref().map(|f| &f.forwarded_to),
                    "forwarded_to_name": forwarded.as_ref().map(|f| &f.forwarded_to_name),
                });
                format!("{taken}\n")
            } else {
                render::reported_text(&r.id, &report, forwarded.as_ref())
            }
        }
        Command::Watch(w) => return watch::watch(client, json, w.wide),
        Command::Completions(_) | Command::Man(_) => {
            unreachable!("run_to answers these without a node")
        }
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Sends the request and returns the answer as received with `--json` (it
/// must be JSON), else decoded and rendered.
fn show<T: DeserializeOwned>(
    client: &ApiClient,
    verb: Verb,
    path: &str,
    json: bool,
    render: impl FnOnce(T) -> String,
) -> Result<String, CliError> {
    let body = client.send(verb, path)?;
    if json {
        client.decode::<serde_json::Value>(path, &body)?;
        Ok(passthrough(&body))
    } else {
        Ok(render(client.decode(path, &body)?))
    }
}

/// The API's JSON as `--json` prints it: one document per line.
fn passthrough(body: &str) -> String {
    format!("{}\n", body.trim())
}

/// Node names by peer id, this node's included, to show names rather than
/// ids. Best effort: without them, tables show short ids.
fn node_names(client: &ApiClient) -> Names {
    let mut names = Names::new();
    if let Ok(members) = client.get::<Vec<Member>>("/v1/members") {
        names.extend(members.into_iter().map(|m| (m.id, m.name)));
    }
    if let Ok(status) = client.get::<Status>("/v1/status") {
        names.insert(status.id, status.name);
    }
    names.retain(|_, name| !name.is_empty());
    names
}

/// The API token: `--token`, else `BATON_API_TOKEN` (the name `batond`
/// reads too, so one exported variable serves both), else the older
/// `BATON_TOKEN`.
fn token_from(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    flag.or_else(|| env("BATON_API_TOKEN"))
        .or_else(|| env("BATON_TOKEN"))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tokio::time::timeout;

    use super::*;
    use crate::api::fake;
    use crate::cli::testing::{LIMIT, baton, closed_port, serve, shared, shared_local};
    use crate::state::Shared;
    use std::sync::Arc;

    #[test]
    fn the_token_comes_from_the_flag_then_the_daemons_variable_then_the_old_one() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let both = &[("BATON_API_TOKEN", "new"), ("BATON_TOKEN", "old")];
        assert_eq!(
            token_from(Some("flag".into()), env(both)).as_deref(),
            Some("flag")
        );
        assert_eq!(token_from(None, env(both)).as_deref(), Some("new"));
        assert_eq!(
            token_from(None, env(&[("BATON_TOKEN", "old")])).as_deref(),
            Some("old")
        );
        assert_eq!(token_from(None, env(&[])), None);
    }

    #[test]
    fn bad_session_flags_are_usage_errors() {
        let api = closed_port();
        for args in [
            &["open", "--service", "rtp-audio"][..],
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "c",
                "--param",
                "codec",
            ],
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "c",
                "--param",
                "a=1",
                "--param",
                "a=2",
            ],
            &["session"],
            &["close"],
            &[
                "report",
                "s1",
                "--loss",
                "2",
                "--jitter-ms",
                "1",
                "--rtt-ms",
                "1",
            ],
            &[
                "report",
                "s1",
                "--loss",
                "0",
                "--jitter-ms",
                "-1",
                "--rtt-ms",
                "1",
            ],
            &[
                "report",
                "s1",
                "--loss",
                "0",
                "--jitter-ms",
                "1",
                "--rtt-ms",
                "1",
                "--packets",
                "-1",
            ],
        ] {
            let argv = ["baton", "--api", &api]
                .into_iter()
                .chain(args.iter().copied());
            assert_eq!(run_to(argv, &mut Vec::new()), 2, "{args:?}");
        }
    }

    #[tokio::test]
    async fn members_are_filtered_by_the_node_and_rtt_reads_their_coordinates() {
        let (shared, _reports) = shared();
        let coord = |x: f64| crate::views::Coordinate {
            vec_ms: vec![x * 1e3, 0.0],
            error: 0.2,
            adjustment_ms: 0.0,
            height_ms: 0.0,
        };
        if let Some(mut bravo) = shared.members.get_mut("12D3KooWBravo0000bbbbbbbb") {
            bravo.tags = [("region".to_owned(), "eu".to_owned())].into();
            bravo.coordinate = Some(coord(0.025));
        }
        if let Some(mut charlie) = shared.members.get_mut("12D3KooWCharlie000cccccccc") {
            charlie.tags = [("region".to_owned(), "eu".to_owned())].into();
            charlie.coordinate = Some(coord(0.100));
        }
        if let Ok(mut me) = shared.me.write() {
            me.tags = [("region".to_owned(), "us".to_owned())].into();
            me.coordinate = Some(coord(0.0));
        }
        let (addr, stop, task) = serve(shared.clone(), None).await;
        let api = addr.to_string();
        let names = |out: &str| -> Vec<String> {
            out.lines()
                .skip(1)
                .map(|l| l.split("  ").next().unwrap_or_default().to_owned())
                .collect()
        };
        let (code, out) = baton(&api, &["members"]).await;
        assert_eq!(code, 0);
        assert_eq!(names(&out), ["alpha (local)", "bravo", "charlie"], "{out}");
        let (code, out) = baton(&api, &["members", "--tag", "region=eu"]).await;
        assert_eq!(code, 0);
        assert_eq!(names(&out), ["bravo", "charlie"], "{out}");
        let (code, out) = baton(&api, &["members", "--tag", "region=eu", "--state", "alive"]).await;
        assert_eq!(code, 0);
        assert_eq!(names(&out), ["bravo"], "{out}");
        let (code, out) = baton(&api, &["members", "--state", "alive", "--json"]).await;
        assert_eq!(code, 0);
        let listed: Vec<Member> = serde_json::from_str(&out).unwrap();
        assert_eq!(listed.iter().filter(|m| m.local).count(), 1);
        assert_eq!(listed.len(), 2);

        let (code, out) = baton(&api, &["rtt", "bravo"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "Estimated bravo <-> alpha rtt: 25.000 ms (using Vivaldi coordinates)\n"
        );
        let (code, out) = baton(&api, &["rtt", "cccccccc", "bravo", "--json"]).await;
        assert_eq!(code, 0);
        let estimate: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(estimate["a"]["name"], "charlie");
        assert!(
            (estimate["rtt_ms"].as_f64().unwrap() - 75.0).abs() < 1e-6,
            "{out}"
        );
        let (code, out) = baton(&api, &["rtt", "zulu"]).await;
        assert_eq!((code, out.as_str()), (1, ""));
        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn sessions_are_opened_listed_reported_and_closed_through_the_api() {
        let (shared, reports) = shared();
        // A session whose primary is another node.
        let mut theirs = fake::view("s-bravo", "12D3KooWBravo0000bbbbbbbb", "bravo", &[]);
        theirs.epoch = 4;
        shared.sessions.insert(theirs.id.clone(), theirs);
        let (addr, stop, task) = serve(shared.clone(), None).await;
        let api = addr.to_string();

        let (code, out) = baton(
            &api,
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "127.0.0.1:5004",
                "--param",
                "codec=pcmu",
            ],
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "\
session  s1
primary  alpha (12D3KooWLocal0000aaaaaaaa)
backups  bravo
"
        );
        assert_eq!(
            shared
                .sessions
                .get("s1")
                .unwrap()
                .params
                .get("codec")
                .map(String::as_str),
            Some("pcmu")
        );
        let (code, out) = baton(
            &api,
            &[
                "open",
                "--json",
                "--service",
                "rtp-audio",
                "--client",
                "127.0.0.1:5006",
            ],
        )
        .await;
        assert_eq!(code, 0);
        let opened: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(opened["id"], "s2");
        assert!(out.ends_with("}\n") && out.lines().count() == 1, "{out:?}");

        let (code, out) = baton(&api, &["sessions"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "\
ID       SERVICE    PRIMARY  EPOCH  BACKUPS  CLIENT          STATE   HERE
s-bravo  rtp-audio  bravo        4  -        127.0.0.1:5004  active
s1       rtp-audio  alpha        1  bravo    127.0.0.1:5004  active  *
s2       rtp-audio  alpha        1  bravo    127.0.0.1:5006  active  *
"
        );
        let (code, out) = baton(&api, &["sessions", "--json"]).await;
        assert_eq!(code, 0);
        let listed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            listed,
            serde_json::to_value(shared.sessions_sorted()).unwrap()
        );

        let (code, out) = baton(&api, &["session", "s1"]).await;
        assert_eq!(code, 0);
        assert!(out.starts_with("session       s1\n"), "{out}");
        assert!(
            out.contains("backups       1. bravo (12D3KooWBravo0000bbbbbbbb)\n"),
            "{out}"
        );
        assert!(out.contains("params        codec=pcmu\n"), "{out}");
        assert_eq!(baton(&api, &["session", "nope"]).await.0, 1);

        let (code, out) = baton(
            &api,
            &[
                "report",
                "s1",
                "--loss",
                "5%",
                "--jitter-ms",
                "20",
                "--rtt-ms",
                "40",
                "--packets",
                "500",
            ],
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "reported on session s1: loss 5.0%, jitter 20 ms, RTT 40 ms, 500 packets\n"
        );
        let (code, out) = baton(
            &api,
            &[
                "report",
                "s1",
                "--json",
                "--loss",
                "0",
                "--jitter-ms",
                "1",
                "--rtt-ms",
                "2",
            ],
        )
        .await;
        assert_eq!(code, 0);
        let taken: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            taken,
            serde_json::json!({
                "session": "s1",
                "report": {"loss": 0.0, "jitter_ms": 1.0, "rtt_ms": 2.0, "packets": 0},
                "forwarded_to": null,
                "forwarded_to_name": null,
            })
        );
        assert_eq!(
            *reports.lock().unwrap(),
            [
                (
                    "s1".to_owned(),
                    Report {
                        loss: 0.05,
                        jitter_ms: 20.0,
                        rtt_ms: 40.0,
                        packets: 500
                    }
                ),
                (
                    "s1".to_owned(),
                    Report {
                        loss: 0.0,
                        jitter_ms: 1.0,
                        rtt_ms: 2.0,
                        packets: 0
                    }
                ),
            ]
        );

        let (code, out) = baton(&api, &["close", "s1"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "closed session s1 (rtp-audio for 127.0.0.1:5004, epoch 1)\n"
        );
        assert_eq!(shared.sessions.get("s1").unwrap().state, "closed");
        // Not the primary: the node sends the close on to it, and the CLI
        // says so rather than "closed".
        let (code, out) = baton(&api, &["close", "s-bravo"]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "this node is not the primary of session s-bravo: the close was sent on to bravo \
             (12D3KooWBravo0000bbbbbbbb); `baton session s-bravo` shows when it is closed\n"
        );
        let (code, out) = baton(&api, &["--json", "close", "s-bravo"]).await;
        assert_eq!(code, 0);
        let sent: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({
                "session": "s-bravo",
                "forwarded_to": "12D3KooWBravo0000bbbbbbbb",
                "forwarded_to_name": "bravo",
            })
        );
        assert_eq!(shared.sessions.get("s-bravo").unwrap().state, "active");

        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_report_to_a_node_that_is_not_the_primary_says_where_it_went() {
        let (shared, reports) = shared();
        shared.sessions.insert(
            "s1".to_owned(),
            fake::view("s1", "12D3KooWBravo", "bravo", &[]),
        );
        let (addr, stop, task) = serve(shared, None).await;
        let args = [
            "--json",
            "report",
            "s1",
            "--loss",
            "5%",
            "--jitter-ms",
            "20",
            "--rtt-ms",
            "40",
        ];
        let (code, out) = baton(&addr.to_string(), &args).await;
        assert_eq!(code, 0);
        let taken: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(taken["forwarded_to"], "12D3KooWBravo");
        assert_eq!(taken["forwarded_to_name"], "bravo");
        let sent: Report = serde_json::from_value(taken["report"].clone()).unwrap();
        assert_eq!(
            sent,
            Report {
                loss: 0.05,
                jitter_ms: 20.0,
                rtt_ms: 40.0,
                packets: 0
            }
        );
        // Without --json, the same is said in words.
        let (code, out) = baton(&addr.to_string(), &args[1..]).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "reported on session s1: loss 5.0%, jitter 20 ms, RTT 40 ms, 0 packets\n\
             this node is not the session's primary: the report was sent on to bravo \
             (12D3KooWBravo)\n"
        );
        assert_eq!(
            *reports.lock().unwrap(),
            [("s1".to_owned(), sent), ("s1".to_owned(), sent)]
        );
        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn health_exits_0_when_the_driver_answers_and_1_when_not() {
        let (shared, _) = shared();
        let (addr, stop, task) = serve(shared, Some("s3cret")).await;
        // No token needed, although the API asks one for everything else.
        let (code, out) = baton(&addr.to_string(), &["health"]).await;
        assert_eq!((code, out.as_str()), (0, "ok\n"));
        let (code, _) = baton(&addr.to_string(), &["status"]).await;
        assert_eq!(code, 1);
        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();

        let gone = Arc::new(Shared::new(shared_local(), tokio::sync::mpsc::channel(1).0));
        let (addr, stop, task) = serve(gone, None).await;
        let (code, out) = baton(&addr.to_string(), &["health"]).await;
        assert_eq!((code, out.as_str()), (1, ""));
        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
        let (code, _) = baton(&closed_port(), &["health"]).await;
        assert_eq!(code, 1, "no node at all");
    }

    #[tokio::test]
    async fn a_bare_port_as_api_reaches_that_port_on_loopback() {
        let (shared, _) = shared();
        let (addr, stop, task) = serve(shared, None).await;
        let (code, out) = baton(&addr.port().to_string(), &["--json", "status"]).await;
        assert_eq!(code, 0, "{out}");
        let status: Status = serde_json::from_str(&out).unwrap();
        assert_eq!(status.name, "alpha");
        let _ = stop.send(());
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }
}
