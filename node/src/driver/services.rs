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
        }
    }

    /// The registry (to validate requests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts an instance of the session (replacing one that runs); answers
    /// when it sends its first packet, if its service can tell.
    pub fn start(&mut self, record: &Record) -> Result<Option<FirstPacket>, crate::service::Error> {
        let mut instance = self.registry.start(spec_of(record))?;
        let first = instance.first_packet();
        tracing::info!(session = %record.id, epoch = record.epoch, reason = %record.reason, "hosting session");
        if let Some(old) = self.instances.insert(record.id.clone(), instance) {
            tokio::spawn(old.stop());
        }
        Ok(first)
    }

    /// Stops the session's instance, if one runs (asynchronously: an exec
    /// child gets its grace period).
    pub fn stop(&mut self, id: &str) {
        if let Some(instance) = self.instances.remove(id) {
            tokio::spawn(instance.stop());
        }
    }

    /// Whether an instance of the session runs here.
    pub fn hosts(&self, id: &str) -> bool {
        self.instances.contains_key(id)
    }
}
