//! `testnet up` keeps a testnet running after the command returns: it starts
//! a detached `testnet serve` process that owns the namespaces, the TAPs,
//! the switch and the nodes, and answers commands (`kill`, `pause`, `cut`,
//! `down`, ...) on a Unix socket in the state directory, one JSON line each
//! way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::netns;
use crate::sys;
use crate::testbed::{Testbed, TestbedConfig, TestbedError};

/// Where the running testnet keeps its socket, pid, logs and node data:
/// `$BATON_TESTNET_DIR`, else /run/baton-testnet.
pub fn state_dir() -> PathBuf {
    std::env::var_os("BATON_TESTNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/baton-testnet"))
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// A command to the running testnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The node table.
    Status,
    /// SIGKILL the nodes.
    Kill {
        /// Node names or numbers.
        nodes: Vec<String>,
    },
    /// SIGSTOP the nodes.
    Pause {
        /// Node names or numbers.
        nodes: Vec<String>,
    },
    /// SIGCONT the nodes.
    Resume {
        /// Node names or numbers.
        nodes: Vec<String>,
    },
    /// Restart the nodes (same identity).
    Restart {
        /// Node names or numbers.
        nodes: Vec<String>,
    },
    /// Cut the nodes away from the rest.
    Cut {
        /// Node names or numbers.
        nodes: Vec<String>,
        /// Only traffic out of the group is dropped.
        one_way: bool,
        /// Only traffic into the group is dropped (it cannot hear).
        #[serde(default)]
        inbound: bool,
    },
    /// Restore the nodes' links (all links when empty).
    Heal {
        /// Node names or numbers.
        nodes: Vec<String>,
    },
    /// Set the random loss of every link.
    Loss {
        /// 0 to 1.
        loss: f64,
    },
    /// Remove the testnet.
    Down,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// Whether it was done.
    pub ok: bool,
    /// What happened, or why not.
    pub message: String,
}

/// Starts the daemon and waits until its testnet is up; answers the node
/// table. `args` are the `testnet serve` arguments.
pub fn up(args: &[String]) -> Result<String, String> {
    let dir = state_dir();
    if let Ok(reply) = request(&Request::Status) {
        return Err(format!(
            "a testnet is already up (remove it with `testnet down`):\n{}",
            reply.message
        ));
    }
    let removed = netns::remove_stale();
    if !removed.is_empty() {
        eprintln!(
            "removed namespaces left by a dead testnet: {}",
            removed.join(" ")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log_path = dir.join("serve.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    sys::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start testnet serve: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(reply) = request(&Request::Status) {
            return Ok(reply.message);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("testnet serve exited ({status}):\n{}", log.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "the testnet did not come up in 120 s; see {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one request to the running testnet.
pub fn request(req: &Request) -> Result<Reply, String> {
    let path = socket_path(&state_dir());
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        format!(
            "no testnet is up ({}: {e}); start one with `testnet up`",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("the testnet did not answer: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the testnet: {e}"))
}

/// Removes the running testnet (or what a dead one left); answers what was
/// done.
pub fn down() -> String {
    let dir = state_dir();
    let mut done = Vec::new();
    let daemon: Option<u32> = std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    if let Ok(reply) = request(&Request::Down) {
        done.push(reply.message);
        // The daemon removes everything, then exits.
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.is_some_and(sys::process_exists) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let removed = netns::remove_stale();
    if !removed.is_empty() {
        done.push(format!(
            "removed leftover namespaces: {}",
            removed.join(" ")
        ));
    }
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        done.push(format!("removed {}", dir.display()));
    }
    if done.is_empty() {
        "no testnet was up".into()
    } else {
        done.join("\n")
    }
}

/// The daemon: builds the testnet, answers requests until `down` or a
/// signal, removes everything.
pub fn serve(mut config: TestbedConfig) -> Result<(), TestbedError> {
    sys::catch_interrupts();
    let dir = state_dir();
    config.work_dir = dir.join("nodes");
    std::fs::write(dir.join("pid"), std::process::id().to_string())?;
    let mut testbed = Testbed::up(config)?;
    let listener = UnixListener::bind(socket_path(&dir))?;
    listener.set_nonblocking(true)?;
    eprintln!("testnet up:\n{}", testbed.describe());
    loop {
        if sys::interrupted() {
            break;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if handle(&mut testbed, stream) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(testbed);
    let _ = std::fs::remove_file(socket_path(&dir));
    let _ = std::fs::remove_dir_all(dir.join("nodes"));
    Ok(())
}

/// Answers one connection; true when the testnet is to go down.
fn handle(testbed: &mut Testbed, stream: UnixStream) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return false;
    }
    let (reply, stop) = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Down) => (
            Reply {
                ok: true,
                message: format!(
                    "removing {} nodes, their namespaces and the emulator",
                    testbed.nodes.len()
                ),
            },
            true,
        ),
        Ok(req) => (execute(testbed, &req), false),
        Err(e) => (
            Reply {
                ok: false,
                message: format!("bad request: {e}"),
            },
            false,
        ),
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_default();
    out.push('\n');
    let _ = (&stream).write_all(out.as_bytes());
    stop
}

/// Carries out a request on a testnet.
pub fn execute(testbed: &mut Testbed, req: &Request) -> Reply {
    let result = (|| -> Result<String, TestbedError> {
        let find = |testbed: &Testbed, names: &[String]| -> Result<Vec<usize>, TestbedError> {
            names.iter().map(|n| testbed.find(n)).collect()
        };
        Ok(match req {
            Request::Status | Request::Down => testbed.describe(),
            Request::Kill { nodes } => {
                for i in find(testbed, nodes)? {
                    testbed.kill(i);
                }
                format!("killed {}", nodes.join(" "))
            }
            Request::Pause { nodes } => {
                for i in find(testbed, nodes)? {
                    testbed.pause(i)?;
                }
                format!("paused {}", nodes.join(" "))
            }
            Request::Resume { nodes } => {
                for i in find(testbed, nodes)? {
                    testbed.resume(i)?;
                }
                format!("resumed {}", nodes.join(" "))
            }
            Request::Restart { nodes } => {
                for i in find(testbed, nodes)? {
                    testbed.restart(i)?;
                }
                format!("restarted {}", nodes.join(" "))
            }
            Request::Cut {
                nodes,
                one_way,
                inbound,
            } => {
                let group = find(testbed, nodes)?;
                if *inbound {
                    testbed.cut_inbound(&group);
                } else {
                    testbed.cut(&group, *one_way);
                }
                format!(
                    "cut {} from the rest{}",
                    nodes.join(" "),
                    if *inbound {
                        " (incoming only: they hear nothing)"
                    } else if *one_way {
                        " (outgoing only)"
                    } else {
                        ""
                    }
                )
            }
            Request::Heal { nodes } if nodes.is_empty() => {
                testbed.heal_all();
                "healed every link".into()
            }
            Request::Heal { nodes } => {
                let group = find(testbed, nodes)?;
                testbed.heal(&group);
                format!("healed {}", nodes.join(" "))
            }
            Request::Loss { loss } => {
                if !(0.0..=1.0).contains(loss) {
                    return Err(TestbedError::Invalid(format!(
                        "loss {loss}: a probability from 0 to 1"
                    )));
                }
                testbed.switch().set_loss(*loss);
                format!("loss on every link is now {loss}")
            }
        })
    })();
    match result {
        Ok(message) => Reply { ok: true, message },
        Err(e) => Reply {
            ok: false,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line_each() {
        let req = Request::Cut {
            nodes: vec!["n2".into(), "3".into()],
            one_way: true,
            inbound: false,
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(
            line,
            r#"{"op":"cut","nodes":["n2","3"],"one_way":true,"inbound":false}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        // A request without `inbound` (an older client) cuts outgoing only.
        let old = r#"{"op":"cut","nodes":["n2"],"one_way":true}"#;
        assert!(matches!(
            serde_json::from_str::<Request>(old).unwrap(),
            Request::Cut { inbound: false, .. }
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }
}
