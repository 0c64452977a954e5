//! What a reload (SIGHUP) may change in a running node, and what it may
//! not: [`restart_fields`] names the fields of a new configuration that
//! differ from the one the node started with and that only a restart
//! applies; [`update`] is the part the node takes at run time.
//!
//! Reloadable: `log_level`, `allow`, `max_members`, `[services]` `exec`,
//! `media_dir`, `allowed_clients`, `max_sessions_per_client`, `[sessions]`
//! `backups`, `max_loss`, `max_jitter`, `max_rtt`, `poor_for`,
//! `min_dwell`, `min_samples`, `standby`, `max_lifetime`, `[hooks]` and
//! `tags` (announced at once with a new incarnation).
//! Everything else needs a restart.

use baton_protocol::node::Reconfigure;

use crate::config::Config;
use crate::driver::swarm::node_id;

/// The fields of `new` that differ from `running` and need a restart, by
/// their names in the config file.
pub fn restart_fields(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, same: bool| {
        if !same {
            out.push(field);
        }
    };
    check("name", running.name == new.name);
    check("data_dir", running.data_dir == new.data_dir);
    check("listen", running.listen == new.listen);
    check("bootstrap", running.bootstrap == new.bootstrap);
    check("swim_listen", running.swim_listen == new.swim_listen);
    check("mdns", running.mdns == new.mdns);
    check("api", running.api == new.api);
    check("profile", running.profile == new.profile);
    check("capacity", running.capacity == new.capacity);
    check("overlay", running.overlay == new.overlay);
    check(
        "network_key_file",
        running.network_key_file == new.network_key_file && running.network_key == new.network_key,
    );
    check("api_token", running.api_token == new.api_token);
    check(
        "api_read_token",
        running.api_read_token == new.api_read_token,
    );
    check("api_hosts", running.api_hosts == new.api_hosts);
    check("log_format", running.log_format == new.log_format);
    // The profile's SWIM timing, and probe_interval over it.
    check(
        "probe_interval",
        running.profile != new.profile
            || format!("{:?}", running.swim) == format!("{:?}", new.swim),
    );
    check(
        "services.max_sessions_per_caller",
        running.services.max_sessions_per_caller == new.services.max_sessions_per_caller,
    );
    let (a, b) = (&running.sessions.consent, &new.sessions.consent);
    check("sessions.consent", a.required == b.required);
    check("sessions.consent_first", a.first == b.first);
    check("sessions.consent_interval", a.interval == b.interval);
    check("sessions.consent_grace", a.grace == b.grace);
    check("sessions.consent_exempt", a.exempt == b.exempt);
    out
}

/// The fields `new` changes that a reload applies (for the log).
pub fn applied_fields(applied: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, same: bool| {
        if !same {
            out.push(field);
        }
    };
    check("log_level", applied.log_level == new.log_level);
    check("allow", applied.allowlist == new.allowlist);
    check("max_members", applied.max_members == new.max_members);
    let (a, b) = (&applied.services, &new.services);
    check("services.exec", a.exec == b.exec);
    check("services.media_dir", a.media_dir == b.media_dir);
    check(
        "services.allowed_clients",
        a.allowed_clients == b.allowed_clients,
    );
    check(
        "services.max_sessions_per_client",
        a.max_sessions_per_client == b.max_sessions_per_client,
    );
    let (a, b) = (&applied.sessions, &new.sessions);
    check("sessions.backups", a.policy.backups == b.policy.backups);
    check("sessions.max_loss", a.policy.max_loss == b.policy.max_loss);
    check(
        "sessions.max_jitter",
        a.policy.max_jitter == b.policy.max_jitter,
    );
    check("sessions.max_rtt", a.policy.max_rtt == b.policy.max_rtt);
    check("sessions.poor_for", a.policy.poor_for == b.policy.poor_for);
    check(
        "sessions.min_dwell",
        a.policy.min_dwell == b.policy.min_dwell,
    );
    check(
        "sessions.min_samples",
        a.policy.min_samples == b.policy.min_samples,
    );
    check("sessions.standby", a.standby == b.standby);
    check("sessions.max_lifetime", a.max_lifetime == b.max_lifetime);
    check("hooks", applied.hooks == new.hooks);
    check("tags", applied.tags == new.tags);
    out
}

/// What the protocol node takes of `new`.
pub fn update(new: &Config) -> Reconfigure {
    Reconfigure {
        allowlist: new
            .allowlist
            .as_ref()
            .map(|set| set.iter().map(node_id).collect()),
        max_members: new.max_members,
        clients: new.clients.clone(),
        placement: new.sessions.policy.clone(),
        standby: new.sessions.standby,
        max_lifetime: new.sessions.max_lifetime,
        tags: new.tags.clone(),
        services: new.services.digest(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;
    use clap::Parser;

    fn load(args: &[&str], file: &str) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "baton-reload-unit-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("batond.toml");
        std::fs::write(&path, file).unwrap();
        let mut all = vec!["batond", "--config", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let config = Config::load(Flags::try_parse_from(all).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        config.unwrap()
    }

    #[test]
    fn restart_fields_and_applied_fields_are_told_apart() {
        let id = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_base58();
        let old = load(&[], "name = \"a\"\ncapacity = 5\n");
        let new = load(
            &[],
            &format!(
                "name = \"b\"\ncapacity = 6\nprobe_interval = \"300ms\"\nallow = [\"{id}\"]\n\
                 log_level = \"debug\"\n[sessions]\nbackups = 1\nconsent_grace = \"9s\"\n\
                 [services.exec]\nt = \"true\"\n\
                 [[hooks.handler]]\nevents = [\"*\"]\ncommand = [\"true\"]\n"
            ),
        );
        assert_eq!(
            restart_fields(&old, &new),
            [
                "name",
                "capacity",
                "probe_interval",
                "sessions.consent_grace"
            ]
        );
        assert_eq!(
            applied_fields(&old, &new),
            [
                "log_level",
                "allow",
                "services.exec",
                "sessions.backups",
                "hooks"
            ]
        );
        assert!(restart_fields(&new, &new).is_empty());
        assert!(applied_fields(&new, &new).is_empty());
        let up = update(&new);
        assert_eq!(up.allowlist.unwrap().len(), 1);
        assert_eq!(up.placement.backups, 1);
    }
}
