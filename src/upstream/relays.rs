//! All smarthosts: one endpoint per configured entry (an SMTP connection pool, or a
//! Microsoft Graph mailbox), the default route and the per-sender routes.
//!
//! A route is a list of entries tried in order: on a connection failure or a 4xx
//! before the message was handed over, the next one is tried. A message is only
//! ever sent to one smarthost: failover happens for what the previous one did not
//! accept.

use super::client::{Upstream, UpstreamError, UpstreamSettings};
use super::graph::Graph;
use super::oauth::TokenSource;
use super::pacing::Pacer;
use super::pool::{Pool, Taken};
use super::throttle::Hold;
use crate::config::{Config, Smarthost, Transport};
use crate::policy::senders::SenderRule;
use crate::tls::{TlsError, client_config, client_config_with_identity};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Where one smarthost entry's mail goes.
pub enum Endpoint {
    Smtp(Pool),
    Graph(Graph),
}

pub struct Relays {
    endpoints: Vec<Endpoint>,
    /// Each entry's `max_messages_per_minute`, if set.
    pacers: Vec<Option<Pacer>>,
    /// Each entry's hold while its smarthost asks to slow down; entries naming the
    /// same smarthost share one.
    holds: Vec<Arc<Hold>>,
    /// Each entry's mailbox, when it logs in with OAuth 2.0 as one (Microsoft 365,
    /// Google): such a smarthost sends only as that mailbox.
    mailboxes: Vec<Option<String>>,
    /// Every entry's token source, kept fresh in the background by the server.
    tokens: Vec<Arc<TokenSource>>,
    default_route: Vec<usize>,
    routes: Vec<(SenderRule, Vec<usize>)>,
}

/// Why the smarthosts cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("smarthost {0}: {1}")]
    Http(String, String),
}

impl Relays {
    /// One endpoint per configured smarthost entry.
    pub fn new(config: &Config) -> Result<Relays, SetupError> {
        let mut relays = Relays {
            endpoints: Vec::new(),
            pacers: Vec::new(),
            holds: Vec::new(),
            mailboxes: Vec::new(),
            tokens: Vec::new(),
            default_route: Vec::new(),
            routes: Vec::new(),
        };
        relays.default_route = relays.add(config, &config.smarthosts)?;
        for r in &config.routes {
            let route = relays.add(config, &r.smarthosts)?;
            relays.routes.push((r.rule.clone(), route));
        }
        Ok(relays)
    }

    /// Adds `hosts` as endpoints; their indices, in order.
    fn add(&mut self, config: &Config, hosts: &[Smarthost]) -> Result<Vec<usize>, SetupError> {
        let mut route = Vec::new();
        for s in hosts {
            let index = self.endpoints.len();
            // HTTPS (token endpoint, Graph) trusts the same roots; the client
            // certificate is for the SMTP connector only.
            let tls = client_config(s.ca_file.as_deref())?;
            let name = entry_name(s);
            let tokens = match &s.oauth2 {
                Some(o) => {
                    let http = super::http::client(&tls, &config.timeouts)
                        .map_err(|e| SetupError::Http(name.clone(), e))?;
                    let wait = config.timeouts.upstream_command;
                    let t = Arc::new(TokenSource::new(http, o.clone(), name.clone(), wait));
                    self.tokens.push(t.clone());
                    Some(t)
                }
                None => None,
            };
            let endpoint = match (s.transport, tokens) {
                (Transport::Graph, Some(tokens)) => {
                    let http = super::http::client(&tls, &config.timeouts)
                        .map_err(|e| SetupError::Http(name.clone(), e))?;
                    let user = s.username.as_deref().unwrap_or_default();
                    Endpoint::Graph(
                        Graph::new(http, &s.graph_url, user, tokens)
                            .map_err(|e| SetupError::Http(name.clone(), e))?,
                    )
                }
                (_, tokens) => {
                    let identity = s.client_certificate.as_deref().zip(s.client_key.as_deref());
                    let tls = client_config_with_identity(s.ca_file.as_deref(), identity)?;
                    let settings =
                        UpstreamSettings::new(s, &config.timeouts, &config.hostname, tls, tokens);
                    Endpoint::Smtp(Pool::new(
                        index,
                        settings,
                        s.pool_size,
                        s.idle_timeout,
                        s.max_messages_per_connection,
                    ))
                }
            };
            self.endpoints.push(endpoint);
            self.pacers.push(s.max_messages_per_minute.map(Pacer::new));
            let hold = self.hold_named(&self.name(index));
            self.holds.push(hold);
            self.mailboxes
                .push(s.oauth2.as_ref().and(s.username.clone()));
            route.push(index);
        }
        Ok(route)
    }

    /// The entries (indices, in failover order) for mail from `sender`.
    pub fn route(&self, sender: &str) -> &[usize] {
        self.routes
            .iter()
            .find(|(rule, _)| rule.allows(sender))
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&self.default_route)
    }

    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    /// The mailbox the first entry of `sender`'s route sends as, if it is bound
    /// to one (OAuth 2.0): the `From:` its bounces must carry.
    pub fn mailbox(&self, sender: &str) -> Option<String> {
        let first = *self.route(sender).first()?;
        self.mailboxes[first].clone()
    }

    /// Entry `index`'s pacing, if it has one.
    pub fn pacer(&self, index: usize) -> Option<&Pacer> {
        self.pacers[index].as_ref()
    }

    /// Cluster mode: every paced entry takes its slots from `shared`, under a
    /// name every instance with the same config gives it (address and mailbox).
    pub fn share_pacing(&self, shared: std::sync::Arc<dyn super::pacing::SharedPacing>) {
        for (i, pacer) in self.pacers.iter().enumerate() {
            if let Some(p) = pacer {
                let mailbox = self.mailboxes[i].as_deref().unwrap_or("");
                p.share(shared.clone(), format!("{}/{mailbox}", self.name(i)));
            }
        }
    }

    /// The hold of the smarthost called `name`: the one an earlier entry naming it
    /// has, or a new one.
    fn hold_named(&self, name: &str) -> Arc<Hold> {
        (0..self.endpoints.len().min(self.holds.len()))
            .find(|&i| self.name(i) == name)
            .map(|i| self.holds[i].clone())
            .unwrap_or_default()
    }

    /// Until when entry `index` is held (its smarthost asked to slow down), if it is.
    pub fn held_until(&self, index: usize) -> Option<std::time::Instant> {
        self.holds[index].until()
    }

    /// Entry `index` answered with `failed`: holds it if that was a throttle.
    /// `chosen` are the client's strings the reply may echo (see `is_throttle`).
    pub fn note_failure(&self, index: usize, failed: &super::Failed, chosen: &[&str]) {
        if !failed.throttled(chosen) {
            return;
        }
        let pause = self.holds[index].throttled(failed.retry_after());
        warn!(
            smarthost = %self.name(index),
            pause_s = pause.as_secs(),
            reason = %crate::proto::printable::Printable(&failed.reason()),
            "smarthost is throttling; holding its mail, other smarthosts go on"
        );
    }

    /// Entry `index` took a message: its next throttle starts at the first step.
    pub fn note_success(&self, index: usize) {
        self.holds[index].succeeded();
    }

    /// Ends every hold (`postern queue flush`).
    pub fn clear_holds(&self) {
        self.holds.iter().for_each(|h| h.clear());
    }

    /// Entry `index`'s name, for logs.
    pub fn name(&self, index: usize) -> String {
        match &self.endpoints[index] {
            Endpoint::Smtp(p) => p.name(),
            Endpoint::Graph(g) => g.name.clone(),
        }
    }

    /// The largest message every entry of `sender`'s route can take, if any is
    /// limited (Graph).
    pub fn max_message_size(&self, sender: &str) -> Option<u64> {
        self.route(sender)
            .iter()
            .filter_map(|&i| match &self.endpoints[i] {
                Endpoint::Graph(_) => Some(super::graph::MAX_MESSAGE),
                Endpoint::Smtp(_) => None,
            })
            .min()
    }

    /// Whether `sender`'s route has a Graph entry, which delivers to the recipients
    /// the header names.
    pub fn through_graph(&self, sender: &str) -> bool {
        self.route(sender)
            .iter()
            .any(|&i| matches!(self.endpoints[i], Endpoint::Graph(_)))
    }

    /// Every entry's OAuth 2.0 token source.
    pub fn token_sources(&self) -> &[Arc<TokenSource>] {
        &self.tokens
    }

    fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.endpoints.iter().filter_map(|e| match e {
            Endpoint::Smtp(p) => Some(p),
            Endpoint::Graph(_) => None,
        })
    }

    fn smtp(&self, index: usize) -> Result<&Pool, UpstreamError> {
        match &self.endpoints[index] {
            Endpoint::Smtp(p) => Ok(p),
            Endpoint::Graph(_) => Err(UpstreamError::Missing("SMTP (a Graph entry)")),
        }
    }

    /// A connection from pool `index` (idle if possible).
    pub async fn take(&self, index: usize) -> Result<Taken, UpstreamError> {
        self.smtp(index)?.take().await
    }

    /// A fresh connection from pool `index`.
    pub async fn connect(&self, index: usize) -> Result<Upstream, UpstreamError> {
        self.smtp(index)?.connect().await
    }

    /// Back to its own pool after a completed transaction.
    pub fn put(&self, conn: Upstream) {
        if let Endpoint::Smtp(p) = &self.endpoints[conn.pool] {
            p.put(conn);
        }
    }

    /// RSET, then back to its pool.
    pub async fn reset_and_put(&self, conn: Upstream) {
        if let Endpoint::Smtp(p) = &self.endpoints[conn.pool] {
            p.reset_and_put(conn).await;
        }
    }

    pub fn prune(&self) {
        self.pools().for_each(Pool::prune);
    }

    pub async fn close_all(&self) {
        for p in self.pools() {
            p.close_all().await;
        }
    }

    /// The shortest idle timeout, for the pruning interval.
    pub fn idle_timeout(&self) -> Duration {
        self.pools()
            .map(Pool::idle_timeout)
            .min()
            .unwrap_or(Duration::from_secs(30))
    }
}

/// An entry's name for logs: `host:port`, or the Graph mailbox.
fn entry_name(s: &Smarthost) -> String {
    match s.transport {
        Transport::Graph => format!("graph:{}", s.username.as_deref().unwrap_or("")),
        Transport::Smtp => format!("{}:{}", s.host, s.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problems;
    use crate::proto::reply::{Esc, Reply};
    use crate::upstream::Failed;
    use std::path::Path;

    /// The default route and a route through the same smarthost, plus another.
    fn relays() -> Relays {
        let yaml = "hostname: relay.test\n\
             listeners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\n\
             users:\n  file: users.yaml\n\
             smarthost:\n  address: \"127.0.0.1:9\"\n  tls: none\n\
             routes:\n  - match: \"@a.example\"\n    smarthost:\n      address: \"127.0.0.1:9\"\n      tls: none\n\
             \x20 - match: \"@b.example\"\n    smarthost:\n      address: \"127.0.0.1:10\"\n      tls: none\n\
             delivery:\n  mode: passthrough\n";
        let mut problems = Problems::default();
        let config = Config::from_yaml(
            yaml,
            Path::new("postern.yaml"),
            Path::new("/"),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        Relays::new(&config.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn entries_naming_one_smarthost_share_its_hold() {
        let r = relays();
        let (default, a, b) = (
            r.route("x@y")[0],
            r.route("m@a.example")[0],
            r.route("m@b.example")[0],
        );
        assert_ne!(default, a, "two entries");
        let throttle = Failed::Refused(Reply::new(454, Esc(4, 7, 0), "Throttling failure"));
        r.note_failure(a, &throttle, &[]);
        assert!(r.held_until(a).is_some());
        assert!(r.held_until(default).is_some(), "same host:port, same hold");
        assert!(r.held_until(b).is_none(), "another smarthost goes on");
        // A refusal that is not a throttle holds nothing.
        r.note_failure(
            b,
            &Failed::Refused(Reply::new(451, Esc(4, 3, 0), "busy")),
            &[],
        );
        assert!(r.held_until(b).is_none());
        r.clear_holds();
        assert!(r.held_until(default).is_none());
    }
}
