//! Service instances of the sessions this node hosts: started and stopped
//! as the protocol `Node` asks ([`Action::Start`], [`Action::Stop`]),
//! through the service registry.
//!
//! [`Action::Start`]: baton_protocol::node::Action::Start
//! [`Action::Stop`]: baton_protocol::node::Action::Stop

use std::collections::HashMap;

use baton_protocol::session::Record;

use crate::service::{FirstPacket, Instance, Registry, SessionSpec};

/// The running instances, by session id.
#[derive(Debug)]
pub struct Services {
    registry: Registry,
    instances: HashMap<String, Box<dyn Instance>>,
    /// Instances standing by warm (running, sending nothing), with when
    /// they will first send, for the takeover that promotes them.
    warm: HashMap<String, Option<FirstPacket>>,
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
        }
    }

    /// The registry (to validate requests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts an instance of the session (replacing one that runs), or
    /// promotes its warm instance: a takeover that only opens a gate.
    /// Answers when the instance sends its first packet, if its service can
    /// tell (a warm instance has sent nothing yet: it was paused from the
    /// start).
    pub fn start(&mut self, record: &Record) -> Result<Option<FirstPacket>, crate::service::Error> {
        if let Some(first) = self.warm.remove(&record.id)
            && let Some(instance) = self.instances.get(&record.id)
        {
            instance.pause(false);
            tracing::info!(session = %record.id, epoch = record.epoch, reason = %record.reason, "hosting session: warm standby promoted");
            return Ok(first);
        }
        let mut instance = self.registry.start(spec_of(record))?;
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
        let mut instance = self.registry.start(spec)?;
        instance.pause(true);
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
            tokio::spawn(instance.stop());
        }
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
