//! Service instances of the sessions this node hosts: started and stopped
//! as the protocol `Node` asks ([`Action::Start`], [`Action::Stop`]),
//! through the service registry; and what the instances tell the driver
//! (a restart, a failure that hands the session on).
//!
//! [`Action::Start`]: baton_protocol::node::Action::Start
//! [`Action::Stop`]: baton_protocol::node::Action::Stop

use std::collections::HashMap;
use std::time::Instant;

use baton_protocol::session::Record;

use super::Driver;
use crate::service::{self, FirstPacket, Instance, Registry, SessionSpec, Status};
use crate::views;

/// The running instances, by session id.
#[derive(Debug)]
pub struct Services {
    registry: Registry,
    instances: HashMap<String, Box<dyn Instance>>,
    /// Instances standing by warm (running, sending nothing), with when
    /// they will first send, for the takeover that promotes them.
    warm: HashMap<String, Option<FirstPacket>>,
    /// Instances that failed here, as last seen, for the session's view
    /// after the session moved on; forgotten with the session.
    failed: HashMap<String, views::Instance>,
}

/// What a service needs to know of a session's record.
pub fn spec_of(record: &Record) -> SessionSpec {
    SessionSpec {
        id: record.id.clone(),
        service: record.service.clone(),
        params: record.params.clone(),
        client: record.client.clone(),
        started_ms: record.started_ms,
    }
}

impl Services {
    /// Instances of the services in `registry`.
    pub fn new(registry: Registry) -> Self {
        Services {
            registry,
            instances: HashMap::new(),
            warm: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Replaces the services (templates, media directory) after a reload.
    pub fn adopt(&mut self, registry: Registry) {
        self.registry.adopt(registry);
    }

    /// The registry (to validate requests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts an instance of the session (replacing one that runs), or
    /// promotes its warm instance: a takeover that only opens a gate.
    /// Answers when the instance sends its first packet, if its service can
    /// tell (a warm instance has sent nothing yet: it stood by from the
    /// start).
    pub fn start(&mut self, record: &Record) -> Result<Option<FirstPacket>, crate::service::Error> {
        if let Some(first) = self.warm.remove(&record.id)
            && let Some(instance) = self.instances.get(&record.id)
        {
            instance.stand_by(false);
            tracing::info!(session = %record.id, epoch = record.epoch, reason = %record.reason, "hosting session: warm standby promoted");
            return Ok(first);
        }
        let mut instance = self
            .registry
            .start(spec_of(record))
            .inspect_err(|e| self.failed_to_start(&record.id, e))?;
        self.failed.remove(&record.id);
        let first = instance.first_packet();
        tracing::info!(session = %record.id, epoch = record.epoch, reason = %record.reason, "hosting session");
        if let Some(old) = self.instances.insert(record.id.clone(), instance) {
            tokio::spawn(old.stop());
        }
        Ok(first)
    }

    /// Starts the session's instance in warm standby, if its service can
    /// (else the takeover will start it cold).
    pub fn warm(&mut self, record: &Record) -> Result<(), crate::service::Error> {
        let spec = spec_of(record);
        if !self.registry.can_stand_by(&spec) {
            tracing::debug!(session = %record.id, "the service cannot stand by warm: cold");
            return Ok(());
        }
        let mut instance = self
            .registry
            .start(spec)
            .inspect_err(|e| self.failed_to_start(&record.id, e))?;
        self.failed.remove(&record.id);
        instance.stand_by(true);
        let first = instance.first_packet();
        tracing::info!(session = %record.id, "standing by warm");
        if let Some(old) = self.instances.insert(record.id.clone(), instance) {
            tokio::spawn(old.stop());
        }
        self.warm.insert(record.id.clone(), first);
        Ok(())
    }

    /// Whether the session's instance stands by warm here.
    pub fn is_warm(&self, id: &str) -> bool {
        self.warm.contains_key(id)
    }

    /// Stops the session's instance, if one runs (asynchronously: an exec
    /// child gets its grace period).
    pub fn stop(&mut self, id: &str) {
        self.warm.remove(id);
        if let Some(instance) = self.instances.remove(id) {
            let status = instance.status();
            if status.failed.is_some() {
                self.failed.insert(id.to_string(), view_of(&status));
            }
            tokio::spawn(instance.stop());
        }
    }

    /// Whether the session's current instance gave up by itself (and not
    /// an instance since stopped or replaced: their word is stale).
    pub fn has_failed(&self, id: &str) -> bool {
        self.instances
            .get(id)
            .is_some_and(|i| i.status().failed.is_some())
    }

    /// The session's instance here, running or failed, as the API shows it.
    pub fn view(&self, id: &str) -> Option<views::Instance> {
        match self.instances.get(id) {
            Some(instance) => Some(view_of(&instance.status())),
            None => self.failed.get(id).cloned(),
        }
    }

    /// Forgets what failed here of a session that left the map.
    pub fn forget(&mut self, id: &str) {
        self.failed.remove(id);
    }

    fn failed_to_start(&mut self, id: &str, error: &service::Error) {
        let view = views::Instance {
            state: "failed".to_string(),
            error: Some(format!("would not start: {error}")),
            ..views::Instance::default()
        };
        self.failed.insert(id.to_string(), view);
    }

    /// Pauses or resumes the session's stream.
    pub fn pause(&self, id: &str, paused: bool) {
        if let Some(instance) = self.instances.get(id) {
            instance.pause(paused);
        }
    }

    /// Whether an instance of the session serves its client here.
    pub fn hosts(&self, id: &str) -> bool {
        self.instances.contains_key(id) && !self.warm.contains_key(id)
    }
}

/// An instance's status as the API shows it.
fn view_of(status: &Status) -> views::Instance {
    let state = if status.failed.is_some() {
        "failed"
    } else if status.pid.is_none() && status.last_exit.is_some() {
        // An exec command between two runs (rtp-audio has no exits).
        "restarting"
    } else {
        "running"
    };
    views::Instance {
        state: state.to_string(),
        restarts: status.restarts,
        pid: status.pid,
        last_exit: status.last_exit.clone(),
        error: status.failed.clone().or_else(|| status.last_error.clone()),
        stderr: status.stderr.clone(),
        packets_dropped: status.packets_dropped,
    }
}

impl Driver {
    /// What an instance told: a restart is shown and counted; a failure
    /// hands the session to its next backup.
    pub(super) fn on_service_event(&mut self, id: &str, event: service::Event) {
        let epoch = |d: &Driver| d.node.engine().map().get(id).map_or(0, |r| r.epoch);
        match event {
            service::Event::Restarted { restarts, exit } => {
                self.shared.metrics.service_restarted();
                let reason = format!("the command ended ({exit}); restart {restarts}");
                self.publish_session_event(id, "restarted", epoch(self), &reason);
            }
            service::Event::Failed { why } => {
                if !self.services.has_failed(id) {
                    return;
                }
                self.shared.metrics.service_failed();
                // The node's SessionFailed event tells the event stream.
                self.node.handle_service_failed(Instant::now(), id, &why);
            }
        }
        self.publish_session(id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use baton_protocol::NodeId;
    use baton_protocol::session::SessionState;

    use super::*;

    fn record(id: &str, template: &str) -> Record {
        Record {
            id: id.to_string(),
            service: "exec".to_string(),
            params: BTreeMap::from([("template".to_string(), template.to_string())]),
            client: "127.0.0.1:5004".to_string(),
            location: String::new(),
            primary: NodeId::synthetic(1),
            backups: vec![NodeId::synthetic(2)],
            epoch: 1,
            version: 0,
            state: SessionState::Active,
            started_ms: 0,
            updated_ms: 0,
            reason: "open".to_string(),
            writer: NodeId::synthetic(1),
            signature: Vec::new(),
        }
    }

    fn services(events: service::Events) -> Services {
        let templates = [
            ("crash", "sh -c 'echo no clip >&2; exit 1'"),
            ("wait", "sleep 30"),
            ("gone", "/nonexistent/baton-test-program"),
        ];
        let config = service::Config {
            exec: templates
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string().into()))
                .collect(),
            ..service::Config::default()
        };
        Services::new(
            Registry::builtin(&config, None)
                .unwrap()
                .with_events(events),
        )
    }

    #[tokio::test]
    async fn a_failed_instance_stays_visible_until_its_session_is_forgotten() {
        let (events, mut told) = tokio::sync::mpsc::channel(8);
        let mut services = services(events);
        services.start(&record("s1", "crash")).unwrap();
        let why = loop {
            let next = tokio::time::timeout(Duration::from_secs(5), told.recv());
            if let (_, service::Event::Failed { why }) = next.await.unwrap().unwrap() {
                break why;
            }
        };
        assert!(services.has_failed("s1"));
        let failed = services.view("s1").unwrap();
        assert_eq!(failed.state, "failed");
        assert_eq!((failed.restarts, failed.pid), (4, None));
        assert_eq!(failed.error.as_deref(), Some(why.as_str()));
        assert_eq!(failed.stderr, vec!["no clip"; 5]);

        // Stopped, as the protocol does on the handover: its word is stale
        // from now on, but the view keeps what happened.
        services.stop("s1");
        assert!(!services.has_failed("s1"));
        assert!(!services.hosts("s1"));
        assert_eq!(services.view("s1"), Some(failed));

        // The session came back here and runs: that is what shows.
        services.start(&record("s1", "wait")).unwrap();
        let running = services.view("s1").unwrap();
        assert_eq!((running.state.as_str(), running.restarts), ("running", 0));
        assert!(running.pid.is_some());
        assert!(!services.has_failed("s1"));
        services.stop("s1");
        assert_eq!(services.view("s1"), None, "a clean stop leaves nothing");
    }

    #[tokio::test]
    async fn a_start_failure_is_shown_and_forgotten_with_the_session() {
        let (events, _told) = tokio::sync::mpsc::channel(8);
        let mut services = services(events);
        let err = services.start(&record("s2", "gone")).unwrap_err();
        let view = services.view("s2").unwrap();
        assert_eq!(view.state, "failed");
        assert_eq!(view.error, Some(format!("would not start: {err}")));
        assert!(
            !services.has_failed("s2"),
            "no instance to hand on: the driver did"
        );
        services.forget("s2");
        assert_eq!(services.view("s2"), None);
    }
}
