//! Configuration: compiled-in defaults, then the config file, then
//! `TESTFLEET_*` variables and flags (clap reads those), resolved once here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use testfleet_agent::AgentConfig;
use testfleet_core::labels::parse_label_list;
use testfleet_server::ServerConfig;
use testfleet_store::DatabaseUrl;

use crate::cli::{AgentArgs, ServerArgs};

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub client: ClientSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub agent: AgentSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub server: Option<String>,
    /// An API token (better: TESTFLEET_TOKEN).
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https coordinator.
    pub ca_cert: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…` (default: SQLite in `data_dir`).
    pub database: Option<String>,
    pub agent_secret: Option<String>,
    #[serde(default)]
    pub host_secrets: BTreeMap<String, String>,
    /// Start without any agent secret (a trusted network only).
    pub allow_any_agent: Option<bool>,
    pub dev: Option<bool>,
    pub lease_timeout: Option<String>,
    pub request_status_interval: Option<String>,
    pub request_status_interval_in_test: Option<String>,
    /// Fair-share weights by queue name.
    #[serde(default)]
    pub queue_weights: BTreeMap<String, f64>,
    /// Stop attempts running longer than this × the p95 of their task's
    /// history; `0` turns the derived limit off.
    pub runtime_factor: Option<f64>,
    pub runtime_min_runs: Option<i64>,
    pub runtime_floor: Option<String>,
    /// Failures re-triggered automatically: `[[server.known_failures]]`.
    #[serde(default)]
    pub known_failures: Vec<KnownFailureSection>,
    /// Who may read and write: `[server.auth]`.
    pub auth: Option<AuthSection>,
    /// Serve HTTPS: certificate chain and key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where results go: `[server.exporters.influxdb]`, `[server.exporters.resultsdb]`.
    #[serde(default)]
    pub exporters: ExportersSection,
    /// Blobs, inputs and artifacts: `[server.blobs]`, `[server.blobs.s3]`.
    #[serde(default)]
    pub blobs: crate::blob_settings::BlobsSection,
    /// Trigger rules for webhooks: a rules file or a directory of them.
    pub trigger_rules: Option<PathBuf>,
    /// How long the events log keeps events (default `30d`).
    pub events_retention: Option<String>,
    /// Webhooks: `[server.hooks.github]`, `[server.hooks.gitlab]`, `[server.hooks.gerrit]`.
    #[serde(default)]
    pub hooks: HooksSection,
    /// Trigger events from an AMQP bus, finished jobs published back:
    /// `[server.amqp]`, `[server.amqp.publish]`.
    pub amqp: Option<AmqpSection>,
    /// Merge-request bots: `[server.bots.gitlab]`, `[server.bots.github]`.
    #[serde(default)]
    pub bots: crate::bot_settings::BotsSection,
    /// Autoscaling: `[server.autoscale]`.
    #[serde(default)]
    pub autoscale: crate::scale_settings::AutoscaleSection,
    /// Coordinators sharing a PostgreSQL database: `[server.cluster]`.
    #[serde(default)]
    pub cluster: crate::scale_settings::ClusterSection,
}

/// `[server.amqp]`. The URL (it may carry a password) can come from
/// `TESTFLEET_AMQP_URL` instead, which wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSection {
    /// `amqp://user:password@host:5672/vhost` or `amqps://…`.
    pub url: Option<String>,
    /// A CA certificate (PEM) to trust for `amqps://`.
    pub ca_file: Option<PathBuf>,
    pub exchange: Option<String>,
    pub queue: Option<String>,
    pub routing_keys: Option<Vec<String>>,
    pub prefetch: Option<u16>,
    /// Publish each finished job back: `[server.amqp.publish]`.
    pub publish: Option<AmqpPublishSection>,
}

/// `[server.amqp.publish]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpPublishSection {
    /// The routing key (default `testfleet.job.finished`).
    pub topic: Option<String>,
    /// This coordinator's URL as readers reach it, for the messages' links.
    pub public_url: Option<String>,
}

/// `[server.hooks.*]`. Secrets come from a file (`*_file`), the config file
/// itself, or a `TESTFLEET_*` variable, which wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    pub github: Option<HookSection>,
    pub gitlab: Option<HookSection>,
    pub gerrit: Option<HookSection>,
    /// How far a signed `webhook-timestamp` may be off (default `5m`).
    pub timestamp_tolerance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSection {
    /// GitHub's webhook secret, Gitlab's secret token (`X-Gitlab-Token`),
    /// Gerrit's `?secret=`.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// GitLab's signing token (`whsec_…`).
    pub signing_token: Option<String>,
    pub signing_token_file: Option<PathBuf>,
    /// Gerrit: networks the hook may come from.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportersSection {
    pub influxdb: Option<InfluxSection>,
    pub resultsdb: Option<ResultsDbSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSection {
    /// Base URL, such as `http://influx:8086`.
    pub url: String,
    /// 1 (`/write`, database, user, password) or 2 (`/api/v2/write`, org, bucket, token).
    #[serde(default = "default_influx_version")]
    pub version: u8,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub token: Option<String>,
    pub batch_points: Option<usize>,
}

fn default_influx_version() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsDbSection {
    /// The receiver's API base, such as `https://resultsdb/api/v2.0`.
    pub url: String,
    /// This coordinator's URL as the receiver's users reach it (for `ref_url`s).
    pub public_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Anyone may read (default true).
    pub read_open: Option<bool>,
    /// Networks allowed to write without credentials (default: loopback).
    pub allowed_cidrs: Option<Vec<String>>,
    /// The realm of Basic and Digest challenges (default `testfleet`);
    /// `testfleet users add` computes Digest credentials for it.
    pub realm: Option<String>,
    /// A secret file every coordinator behind one load balancer shares:
    /// Digest nonces are signed with a key derived from it, so a nonce one
    /// coordinator issued is good on the others (default: a random key per
    /// process).
    pub digest_key_file: Option<PathBuf>,
}

/// The authentication realm: `[server.auth] realm`, else `testfleet`.
pub fn auth_realm(file: &FileConfig) -> Result<String> {
    match file.server.auth.as_ref().and_then(|a| a.realm.clone()) {
        Some(realm) => {
            testfleet_server::auth::validate_realm(&realm)
                .map_err(|e| anyhow::anyhow!("config `server.auth.realm`: {e}"))?;
            Ok(realm)
        }
        None => Ok(testfleet_server::auth::DEFAULT_REALM.to_owned()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailureSection {
    /// A regular expression over the failure's reason and the end of its log.
    pub pattern: String,
    /// At most this many re-triggers per task.
    #[serde(default = "default_retrigger")]
    pub retrigger: u32,
}

fn default_retrigger() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The coordinator, or several separated by commas (tried in order).
    pub server: Option<String>,
    /// The coordinators as a list, tried in order (instead of `server`).
    pub servers: Option<Vec<String>>,
    pub hostname: Option<String>,
    pub secret: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub work_dir: Option<PathBuf>,
    pub poll_interval: Option<String>,
    pub ca_cert: Option<PathBuf>,
    /// The blob cache for inputs, and its size limit (`20GB`).
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<String>,
    /// The default `[bench]` of every task this agent runs.
    pub bench: Option<testfleet_core::job::BenchSpec>,
    /// The host-prep helper, sysfs tree, journal and load wait.
    pub host_prep: Option<crate::prep_settings::HostPrepSection>,
}

/// Loads the config file: the given one (which must exist) or the default
/// one when it exists.
pub fn load(path: Option<&Path>) -> Result<FileConfig> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(FileConfig::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {}", path.display(), e.message()))
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("testfleet").join("config.toml"))
}

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t)
            .with_context(|| format!("config `{field}`: `{t}` is not a duration like \"10s\"")),
    }
}

/// Credentials for client commands: `TESTFLEET_TOKEN`, or `TESTFLEET_USER`
/// and `TESTFLEET_PASSWORD`, else the config file. Never from flags, which
/// `ps` would show.
pub fn client_credentials(file: &FileConfig) -> testfleet_client::Credentials {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let token = env("TESTFLEET_TOKEN").or_else(|| file.client.token.clone());
    let user = env("TESTFLEET_USER").or_else(|| file.client.user.clone());
    let password = env("TESTFLEET_PASSWORD").or_else(|| file.client.password.clone());
    match (token, user, password) {
        (Some(t), _, _) => testfleet_client::Credentials::Token(t),
        (None, Some(user), Some(password)) => {
            testfleet_client::Credentials::Basic { user, password }
        }
        _ => testfleet_client::Credentials::None,
    }
}

/// The CA certificate to trust for an https coordinator.
pub fn client_ca(file: &FileConfig) -> Option<PathBuf> {
    std::env::var_os("TESTFLEET_CA_CERT")
        .map(PathBuf::from)
        .or_else(|| file.client.ca_cert.clone())
}

/// The coordinator's data directory for admin commands.
pub fn data_dir(flag: Option<&Path>, file: &FileConfig) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| file.server.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("testfleet-data"))
}

/// The coordinator's store: `--database`/`TESTFLEET_DATABASE`, else
/// `[server] database`, else SQLite in the data directory.
pub fn database(flag: Option<&str>, data_dir: &Path, file: &FileConfig) -> Result<DatabaseUrl> {
    match flag.or(file.server.database.as_deref()) {
        Some(url) => url
            .parse::<DatabaseUrl>()
            .map_err(|e| anyhow::anyhow!("--database: {e}")),
        None => Ok(DatabaseUrl::in_dir(data_dir)),
    }
}

/// The coordinator URL for client commands.
pub fn client_server(flag: Option<&str>, file: &FileConfig) -> Result<String> {
    let url = flag
        .map(str::to_owned)
        .or_else(|| file.client.server.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("the server URL `{url}` must start with http:// or https://");
    }
    Ok(url)
}

pub fn server_config(args: &ServerArgs, file: &FileConfig) -> Result<ServerConfig> {
    let s = &file.server;
    let listen = args
        .listen
        .or(s.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| s.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("testfleet-data"));
    let database = database(args.database.as_deref(), &data_dir, file)?;
    let mut config = ServerConfig::new(listen, data_dir);
    config.database = Some(database);
    config.agent_secret = args
        .agent_secret
        .clone()
        .or_else(|| s.agent_secret.clone())
        .filter(|s| !s.is_empty());
    config.host_secrets = s.host_secrets.clone();
    config.allow_any_agent = args.allow_any_agent || s.allow_any_agent.unwrap_or(false);
    // Refused here, before anything is opened or bound (exit status 2).
    config.check_agent_access()?;
    config.dev = args.dev || s.dev.unwrap_or(false);
    config.lease_timeout = duration(
        "server.lease_timeout",
        s.lease_timeout.as_deref(),
        config.lease_timeout,
    )?;
    config.request_status_interval = duration(
        "server.request_status_interval",
        s.request_status_interval.as_deref(),
        config.request_status_interval,
    )?;
    config.queue_weights = s.queue_weights.clone();
    if let Some((queue, w)) = config
        .queue_weights
        .iter()
        .find(|(_, w)| !(w.is_finite() && **w > 0.0))
    {
        bail!(
            "config `server.queue_weights.{queue}`: the weight must be a positive number, not {w}"
        );
    }
    match s.runtime_factor {
        Some(0.0) => config.runtime_factor = None,
        Some(f) if f.is_finite() && f > 0.0 => config.runtime_factor = Some(f),
        Some(f) => {
            bail!("config `server.runtime_factor`: must be a positive number or 0 (off), not {f}")
        }
        None => {}
    }
    if let Some(n) = s.runtime_min_runs {
        config.runtime_min_runs = n.max(1);
    }
    match (
        args.tls_cert.clone().or_else(|| s.tls_cert.clone()),
        args.tls_key.clone().or_else(|| s.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => config.tls = Some(testfleet_server::tls::TlsFiles { cert, key }),
        (None, None) => {}
        _ => bail!(
            "TLS needs both a certificate and a key (--tls-cert and --tls-key, or [server] tls_cert and tls_key)"
        ),
    }
    if let Some(influx) = &s.exporters.influxdb {
        use testfleet_server::exporters::{InfluxApi, InfluxConfig};
        let api = match influx.version {
            1 => InfluxApi::V1 {
                database: influx
                    .database
                    .clone()
                    .context("config `server.exporters.influxdb`: version 1 needs `database`")?,
                user: influx.user.clone(),
                password: influx.password.clone(),
            },
            2 => InfluxApi::V2 {
                org: influx
                    .org
                    .clone()
                    .context("config `server.exporters.influxdb`: version 2 needs `org`")?,
                bucket: influx
                    .bucket
                    .clone()
                    .context("config `server.exporters.influxdb`: version 2 needs `bucket`")?,
                token: influx.token.clone(),
            },
            v => bail!("config `server.exporters.influxdb.version`: {v} is not 1 or 2"),
        };
        if !(influx.url.starts_with("http://") || influx.url.starts_with("https://")) {
            bail!(
                "config `server.exporters.influxdb.url`: `{}` must start with http:// or https://",
                influx.url
            );
        }
        config.exporters.influxdb = Some(InfluxConfig {
            url: influx.url.clone(),
            api,
            batch_points: influx.batch_points.unwrap_or(5000).max(1),
        });
    }
    if let Some(rdb) = &s.exporters.resultsdb {
        config.exporters.resultsdb = Some(testfleet_server::exporters::ResultsDbReporterConfig {
            url: rdb.url.clone(),
            public_url: rdb.public_url.clone(),
        });
    }
    if let Some(auth) = &s.auth {
        if let Some(open) = auth.read_open {
            config.auth.read_open = open;
        }
        if let Some(cidrs) = &auth.allowed_cidrs {
            config.auth.allowed_cidrs = cidrs
                .iter()
                .map(|c| {
                    c.parse::<ipnet::IpNet>()
                        .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| anyhow::anyhow!("config `server.auth.allowed_cidrs`: `{c}` is not a network like 10.0.0.0/8"))
                })
                .collect::<Result<_>>()?;
        }
    }
    config.auth.realm = auth_realm(file)?;
    if let Some(path) = s.auth.as_ref().and_then(|a| a.digest_key_file.as_deref()) {
        config.auth.digest_key = crate::auth_settings::digest_key(path)?;
    }
    for (i, rule) in s.known_failures.iter().enumerate() {
        let pattern = regex::Regex::new(&rule.pattern).map_err(|e| {
            anyhow::anyhow!(
                "config `server.known_failures[{i}].pattern`: invalid regular expression: {e}"
            )
        })?;
        config.known_failures.push(testfleet_server::KnownFailure {
            pattern,
            retrigger: rule.retrigger,
        });
    }
    config.runtime_floor = duration(
        "server.runtime_floor",
        s.runtime_floor.as_deref(),
        config.runtime_floor,
    )?;
    config.request_status_interval_in_test = duration(
        "server.request_status_interval_in_test",
        s.request_status_interval_in_test.as_deref(),
        config.request_status_interval_in_test,
    )?;
    crate::blob_settings::apply_server(&s.blobs, &mut config)?;
    apply_hooks(s, &mut config)?;
    crate::bot_settings::apply(&s.bots, &mut config)?;
    crate::scale_settings::apply(&s.autoscale, &mut config)?;
    crate::scale_settings::apply_cluster(&s.cluster, &mut config)?;
    Ok(config)
}

/// A hook secret: `TESTFLEET_<var>`, else the file named, else the value.
fn hook_secret(
    field: &str,
    var: &str,
    file: Option<&Path>,
    value: Option<&String>,
) -> Result<Option<String>> {
    if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Ok(Some(v));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config `{field}_file`: cannot read {}", path.display()))?;
        return Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()));
    }
    Ok(value.cloned().filter(|v| !v.is_empty()))
}

/// Webhooks, trigger rules and the events log's retention.
fn apply_hooks(s: &ServerSection, config: &mut ServerConfig) -> Result<()> {
    use testfleet_server::triggers::hooks::{GerritHook, GithubHook, GitlabHook};
    let h = &s.hooks;
    let empty = HookSection::default();
    let gh = h.github.as_ref().unwrap_or(&empty);
    if let Some(secret) = hook_secret(
        "server.hooks.github.secret",
        "TESTFLEET_GITHUB_HOOK_SECRET",
        gh.secret_file.as_deref(),
        gh.secret.as_ref(),
    )? {
        config.hooks.github = Some(GithubHook { secret });
    }
    let gl = h.gitlab.as_ref().unwrap_or(&empty);
    let token = hook_secret(
        "server.hooks.gitlab.secret",
        "TESTFLEET_GITLAB_HOOK_TOKEN",
        gl.secret_file.as_deref(),
        gl.secret.as_ref(),
    )?;
    let signing = hook_secret(
        "server.hooks.gitlab.signing_token",
        "TESTFLEET_GITLAB_SIGNING_TOKEN",
        gl.signing_token_file.as_deref(),
        gl.signing_token.as_ref(),
    )?
    .map(|t| GitlabHook::signing_key(&t))
    .transpose()
    .context("config `server.hooks.gitlab.signing_token`")?;
    if token.is_some() || signing.is_some() {
        config.hooks.gitlab = Some(GitlabHook {
            token,
            signing_key: signing,
        });
    }
    let ge = h.gerrit.as_ref().unwrap_or(&empty);
    let secret = hook_secret(
        "server.hooks.gerrit.secret",
        "TESTFLEET_GERRIT_HOOK_SECRET",
        ge.secret_file.as_deref(),
        ge.secret.as_ref(),
    )?;
    let allowed_cidrs = ge
        .allowed_cidrs
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| anyhow::anyhow!("config `server.hooks.gerrit.allowed_cidrs`: `{c}` is not a network like 10.0.0.0/8"))
        })
        .collect::<Result<Vec<_>>>()?;
    if secret.is_some() || !allowed_cidrs.is_empty() {
        config.hooks.gerrit = Some(GerritHook {
            secret,
            allowed_cidrs,
        });
    }
    config.hooks.timestamp_tolerance = duration(
        "server.hooks.timestamp_tolerance",
        h.timestamp_tolerance.as_deref(),
        config.hooks.timestamp_tolerance,
    )?;
    config.events_retention = duration(
        "server.events_retention",
        s.events_retention.as_deref(),
        config.events_retention,
    )?;
    if let Some(path) = &s.trigger_rules {
        let rules = testfleet_server::triggers::load_rules(path)
            .with_context(|| format!("config `server.trigger_rules`: {}", path.display()))?;
        config.trigger_rules = Some(std::sync::Arc::new(rules));
    }
    apply_amqp(s, config)
}

/// `[server.amqp]`: checked here, so a coordinator with a broker setting it
/// could never use does not start.
fn apply_amqp(s: &ServerSection, config: &mut ServerConfig) -> Result<()> {
    use testfleet_server::triggers::amqp::{AmqpConfig, PublishConfig};
    let Some(a) = &s.amqp else {
        return Ok(());
    };
    let url = std::env::var("TESTFLEET_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| a.url.clone())
        .context("config `server.amqp.url`: the broker's URL is missing (amqp://user:password@host:5672/vhost, or TESTFLEET_AMQP_URL)")?;
    let mut amqp = AmqpConfig::new(url);
    amqp.ca_file = a.ca_file.clone();
    if let Some(e) = &a.exchange {
        amqp.exchange = e.clone();
    }
    if let Some(q) = &a.queue {
        amqp.queue = q.clone();
    }
    if let Some(keys) = &a.routing_keys {
        amqp.routing_keys = keys.clone();
    }
    if let Some(p) = a.prefetch {
        amqp.prefetch = p;
    }
    if let Some(p) = &a.publish {
        let mut publish = PublishConfig::new();
        if let Some(t) = &p.topic {
            publish.topic = t.clone();
        }
        publish.public_url = p.public_url.clone();
        amqp.publish = Some(publish);
    }
    amqp.validate()
        .map_err(|e| anyhow::anyhow!("config `server.amqp`: {e}"))?;
    if config.trigger_rules.is_none() {
        bail!(
            "config `server.amqp`: messages are matched against trigger rules, and none are configured (`trigger_rules` in [server])"
        );
    }
    config.amqp = Some(amqp);
    Ok(())
}

pub fn agent_config(
    args: &AgentArgs,
    server_flag: Option<&str>,
    file: &FileConfig,
) -> Result<AgentConfig> {
    let a = &file.agent;
    let mut servers = agent_servers(server_flag, file)?.into_iter();
    let server = servers
        .next()
        .context("no coordinator given: pass --server URL (or set TESTFLEET_SERVER, or [agent] server in the config file)")?;
    let hostname = match args.hostname.clone().or_else(|| a.hostname.clone()) {
        Some(h) => h,
        None => std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .context("no hostname given: pass --hostname NAME")?,
    };
    let work_dir = args
        .work_dir
        .clone()
        .or_else(|| a.work_dir.clone())
        .unwrap_or_else(|| PathBuf::from("testfleet-agent"));
    let mut config = AgentConfig::new(server, hostname, work_dir);
    config.fallback_servers = servers.collect();
    crate::blob_settings::apply_agent(
        args.cache_dir.as_deref(),
        args.cache_size.as_deref(),
        a.cache_dir.as_deref(),
        a.cache_size.as_deref(),
        &mut config,
    )?;
    let prep_flags = crate::prep_settings::PrepFlags {
        sysfs_root: args.sysfs_root.as_deref(),
        journal: args.prep_journal.as_deref(),
    };
    crate::prep_settings::apply_agent(
        a.bench.as_ref(),
        a.host_prep.as_ref(),
        &prep_flags,
        &mut config,
    )?;
    config.secret = args.secret.clone().or_else(|| a.secret.clone());
    config.labels = a.labels.clone();
    if let Some(list) = &args.labels {
        config
            .labels
            .extend(parse_label_list(list).map_err(|e| anyhow::anyhow!("--labels: {e}"))?);
    }
    config.ca_cert = args
        .ca_cert
        .clone()
        .or_else(|| a.ca_cert.clone())
        .or_else(|| file.client.ca_cert.clone());
    config.poll_interval = match &args.poll_interval {
        Some(d) => (*d).into(),
        None => duration(
            "agent.poll_interval",
            a.poll_interval.as_deref(),
            config.poll_interval,
        )?,
    };
    Ok(config)
}

/// The coordinators an agent knows, in the order it tries them:
/// `--server`/`TESTFLEET_SERVER`, else `[agent] server` or `servers`, else
/// `[client] server`; a `server` value lists several separated by commas.
/// Empty when none is given.
fn agent_servers(flag: Option<&str>, file: &FileConfig) -> Result<Vec<String>> {
    let a = &file.agent;
    let (origin, urls): (&str, Vec<&str>) = match (flag, &a.server, &a.servers) {
        (Some(flag), _, _) => ("--server/TESTFLEET_SERVER", flag.split(',').collect()),
        (None, Some(_), Some(_)) => {
            bail!("config `agent`: give the coordinators in `server` or in `servers`, not both")
        }
        (None, Some(server), None) => ("config `agent.server`", server.split(',').collect()),
        (None, None, Some(list)) => {
            if list.is_empty() {
                bail!("config `agent.servers`: the list is empty");
            }
            (
                "config `agent.servers`",
                list.iter().map(String::as_str).collect(),
            )
        }
        (None, None, None) => match &file.client.server {
            Some(server) => ("config `client.server`", server.split(',').collect()),
            None => return Ok(Vec::new()),
        },
    };
    let mut servers: Vec<String> = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().map(|u| u.trim()).enumerate() {
        if url.is_empty() {
            bail!("{origin}: coordinator {} of the list is empty", i + 1);
        }
        check_agent_url(url)
            .map_err(|why| anyhow::anyhow!("{origin}: the coordinator URL `{url}` {why}"))?;
        if servers.iter().any(|s| s == url) {
            bail!("{origin}: the coordinator URL `{url}` is listed twice");
        }
        servers.push(url.to_owned());
    }
    Ok(servers)
}

/// What is wrong with an agent's coordinator URL, checked here so that a
/// fallback that would only be tried after a failure is refused at start.
/// The agent connects to `http(s)://` or `ws(s)://host:port` (the socket.io
/// endpoint's path is its own).
fn check_agent_url(url: &str) -> std::result::Result<(), &'static str> {
    let rest = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or("must start with http://, https://, ws:// or wss://")?;
    if rest.contains(char::is_whitespace) {
        return Err("must not contain spaces");
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, after) = rest.split_at(end);
    if host.is_empty() {
        return Err("has no host");
    }
    let path = after.split(['?', '#']).next().unwrap_or_default();
    if !matches!(path, "" | "/") {
        return Err(
            "must not have a path (the coordinator's address only, such as http://host:8080)",
        );
    }
    Ok(())
}
