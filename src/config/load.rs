//! Loading: read the config file, validate every section in turn (reporting every
//! problem, not the first), audit the permissions of the files it names, then read
//! the users file.

use super::ctx::Ctx;
use super::{
    Config, Problems, Users, abuse, admin, cluster, delivery, delivery_log, dkim, general, limits,
    listeners, load_users, log, metrics, perms, routes, smarthost, timeouts, webhooks,
};
use std::path::{Path, PathBuf};

const KNOWN_KEYS: &[&str] = &[
    "hostname",
    "listeners",
    "tls",
    "users",
    "smarthost",
    "delivery",
    "limits",
    "rate_limits",
    "domain_rate_limits",
    "log",
    "timeouts",
    "received",
    "abuse",
    "routes",
    "metrics",
    "trusted_proxies",
    "run_as",
    "dkim",
    "cluster",
    "delivery_log",
    // Its `webhooks` list is parsed by `webhooks.rs`.
    "admin",
];

impl Config {
    /// Loads and validates the config at `path` and the users file it names.
    pub fn load(path: &Path) -> Result<(Config, Users), Problems> {
        let mut problems = Problems::default();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.add(path, "", format!("cannot read the config file: {e}"));
                return Err(problems);
            }
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let config = Config::from_yaml(&text, path, &base, &mut problems);
        if let Some(c) = &config {
            for (key, file, kind) in c.trusted_files() {
                for f in perms::audit(&file, kind, None) {
                    if f.fatal {
                        problems.add(path, &key, f.message);
                    }
                }
            }
        }
        // Users in a database are read by the server when it starts.
        let users = config.as_ref().and_then(|c| match c.users_database {
            Some(_) => Some(Users::default()),
            None => load_users(&c.users_file, &c.rate_limits, &mut problems),
        });
        match (config, users) {
            (Some(c), Some(u)) if problems.is_empty() => Ok((c, u)),
            _ => Err(problems),
        }
    }

    /// Every file whose exposure matters: (config key, path, kind).
    pub fn trusted_files(&self) -> Vec<(String, PathBuf, perms::Kind)> {
        let mut out = vec![(String::new(), self.path.clone(), perms::Kind::Config)];
        match &self.users_database {
            None => out.push((
                "users.file".into(),
                self.users_file.clone(),
                perms::Kind::Users,
            )),
            Some(db) => out.extend(
                db.password_file
                    .iter()
                    .map(|p| ("users.password_file".into(), p.clone(), perms::Kind::Secret)),
            ),
        }
        if let Some(t) = &self.tls {
            out.push((
                "tls.private_key".into(),
                t.private_key.clone(),
                perms::Kind::Secret,
            ));
        }
        if let Some(a) = &self.admin {
            out.push((
                "admin.token_file".into(),
                a.token_file.clone(),
                perms::Kind::Secret,
            ));
        }
        let routed = self.routes.iter().flat_map(|r| r.smarthosts.iter());
        for s in self.smarthosts.iter().chain(routed) {
            let label = |k: &'static str| move |p: &PathBuf| (format!("smarthost.{k}"), p.clone());
            let oauth2 = s.oauth2.iter().flat_map(|o| o.secret_files.iter());
            let secrets = (s.password_file.iter().map(label("password_file")))
                .chain(oauth2.map(label("oauth2")))
                .chain(s.client_key.iter().map(label("client_key")));
            for (key, p) in secrets {
                if !out.iter().any(|(_, q, _)| *q == p) {
                    out.push((key, p, perms::Kind::Secret));
                }
            }
        }
        for w in &self.webhooks {
            out.push((
                "admin.webhooks.secret_file".into(),
                w.secret_file.clone(),
                perms::Kind::Secret,
            ));
        }
        out
    }

    /// Permission problems that do not stop the server, as log-ready sentences.
    /// `service_gid`: the group the server runs as, if known.
    pub fn permission_warnings(&self, service_gid: Option<u32>) -> Vec<String> {
        self.trusted_files()
            .into_iter()
            .flat_map(|(_, file, kind)| perms::audit(&file, kind, service_gid))
            .filter(|f| !f.fatal)
            .map(|f| f.message)
            .collect()
    }

    /// Parses and validates config text; relative paths are resolved against `base`.
    pub fn from_yaml(
        text: &str,
        file: &Path,
        base: &Path,
        problems: &mut Problems,
    ) -> Option<Config> {
        let before = problems.len();
        let root = parse_root(text, file, problems)?;
        let Some(map) = root.as_mapping() else {
            problems.add(file, "", "the config must be a mapping of keys to values");
            return None;
        };
        let cx = &mut Ctx {
            map,
            file,
            base,
            problems,
        };
        check_keys(cx);
        // Sections in a fixed order: problems are reported in this order.
        let hostname = general::hostname(cx);
        let listeners = listeners::listeners(cx);
        let tls = listeners::tls(cx, &listeners);
        let (users_file, users_database) = general::users_store(cx);
        let smarthosts = smarthost::default_smarthosts(cx);
        let routes = routes::routes(cx);
        let delivery = delivery::delivery(cx);
        let limits = limits::limits(cx);
        let rate_limits = limits::rate_limits(cx);
        let domain_rate_limits = limits::domain_rate_limits(cx);
        let log = log::log(cx);
        let timeouts = timeouts::timeouts(cx);
        let received_include_client_ip = general::received_include_client_ip(cx);
        let metrics = metrics::metrics(cx);
        let trusted_proxies = listeners::trusted_proxies(cx, &listeners);
        let run_as = general::run_as(cx);
        let abuse = abuse::abuse(cx, &delivery.spool_directory);
        let dkim = dkim::dkim(cx);
        let cluster = cluster::cluster(cx);
        let admin = admin::admin(cx, tls.is_some());
        let delivery_log = delivery_log::delivery_log(cx, &delivery.spool_directory);
        let webhooks = webhooks::webhooks(cx);
        if cx.problems.len() != before {
            return None;
        }
        Some(Config {
            path: file.to_path_buf(),
            hostname,
            listeners,
            tls,
            users_file,
            users_database,
            smarthosts: smarthosts?,
            routes,
            delivery,
            limits,
            rate_limits,
            domain_rate_limits,
            log,
            timeouts,
            received_include_client_ip,
            abuse,
            metrics,
            trusted_proxies,
            run_as,
            dkim,
            cluster,
            admin,
            delivery_log,
            webhooks,
        })
    }
}

/// The YAML document, or a problem saying why it is not one.
fn parse_root(text: &str, file: &Path, problems: &mut Problems) -> Option<serde_yaml::Value> {
    match serde_yaml::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.add(file, "", e.to_string());
            None
        }
    }
}

/// Every top-level key must be one Postern knows (a typo is not silently ignored).
fn check_keys(cx: &mut Ctx) {
    for key in cx.map.keys() {
        let name = key.as_str().unwrap_or("?");
        if !KNOWN_KEYS.contains(&name) {
            cx.add(
                name,
                format!("unknown key (known: {})", KNOWN_KEYS.join(", ")),
            );
        }
    }
}
