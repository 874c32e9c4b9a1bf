//! Configuration of the merge-request bots: `[server.bots.gitlab]` and
//! `[server.bots.github]`. Part of `settings`: defaults → file →
//! `TESTFLEET_*` → flags. The token is read from a file or an environment
//! variable, never from the file itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use testfleet_core::trigger::{Overrides, Template, Vars};
use testfleet_server::ServerConfig;
use testfleet_server::bots::{BotConfig, BotSettings, Host, RetryPolicy, TEMPLATE_VARS, Token};

/// `[server.bots]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotsSection {
    pub gitlab: Option<BotSection>,
    pub github: Option<BotSection>,
}

/// `[server.bots.gitlab]` or `[server.bots.github]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSection {
    /// GitLab's root URL (`https://gitlab.example.com`); GitHub's API URL
    /// (default `https://api.github.com`).
    pub api_url: Option<String>,
    /// GitLab: the project's numeric id or its path (`group/project`).
    pub project: Option<String>,
    /// GitHub: the repository, `owner/repo`.
    pub repository: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub token_env: Option<String>,
    /// The label that asks for a run (default `benchmark`).
    pub label: Option<String>,
    /// How often open requests are looked at (default `1m`).
    pub poll_interval: Option<String>,
    /// The job template (placeholders: `TEMPLATE_VARS`).
    pub template: Option<PathBuf>,
    /// The queue the jobs go to (the benchmark hosts' queue).
    pub queue: Option<String>,
    /// The benchmark hosts: each task runs once on each; their stored
    /// results of a sha are reused.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Confirmation rounds at most while verdicts are UNKNOWN (default 3;
    /// 0 answers at once).
    pub confirm_rounds: Option<u32>,
    /// The dashboard's URL as the notes' readers reach it (default
    /// `http://<listen>`).
    pub dashboard_url: Option<String>,
}

/// Resolves `[server.bots.*]` into `config.bots`.
pub fn apply(section: &BotsSection, config: &mut ServerConfig) -> Result<()> {
    let mut bots = Vec::new();
    if let Some(g) = &section.gitlab {
        bots.push(resolve(Host::GitLab, g, config)?);
    }
    if let Some(g) = &section.github {
        bots.push(resolve(Host::GitHub, g, config)?);
    }
    config.bots = bots;
    Ok(())
}

fn resolve(host: Host, g: &BotSection, config: &ServerConfig) -> Result<BotConfig> {
    let key = match host {
        Host::GitLab => "gitlab",
        Host::GitHub => "github",
    };
    let field = |name: &str| format!("config `server.bots.{key}.{name}`");
    let api_url = match (host, &g.api_url) {
        (_, Some(url)) => url.clone(),
        (Host::GitHub, None) => "https://api.github.com".to_owned(),
        (Host::GitLab, None) => bail!("{}: GitLab's URL is missing", field("api_url")),
    };
    let project = match host {
        Host::GitLab => {
            if g.repository.is_some() {
                bail!(
                    "{}: GitLab names a project with `project`",
                    field("repository")
                );
            }
            g.project
                .clone()
                .filter(|p| !p.trim().is_empty())
                .with_context(|| {
                    format!("{}: the project id or path is missing", field("project"))
                })?
        }
        Host::GitHub => {
            if g.project.is_some() {
                bail!(
                    "{}: GitHub names a repository with `repository = \"owner/repo\"`",
                    field("project")
                );
            }
            let repo = g
                .repository
                .clone()
                .with_context(|| format!("{}: `owner/repo` is missing", field("repository")))?;
            let parts: Vec<&str> = repo.trim().split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                bail!("{}: `{repo}` is not `owner/repo`", field("repository"));
            }
            repo.trim().to_owned()
        }
    };
    let token = match (&g.token_file, &g.token_env) {
        (Some(_), Some(_)) => bail!(
            "{}: give `token_file` or `token_env`, not both",
            field("token_file")
        ),
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read {}", field("token_file"), path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("{}: the variable `{var}` is not set", field("token_env")))?,
        (None, None) => bail!(
            "{}: the token is missing (`token_file` or `token_env`)",
            field("token_file")
        ),
    };
    if token.trim().is_empty() {
        bail!("{}: the token is empty", field("token_file"));
    }
    let poll_interval = match &g.poll_interval {
        None => Duration::from_secs(60),
        Some(t) => humantime::parse_duration(t).with_context(|| {
            format!(
                "{}: `{t}` is not a duration like \"1m\"",
                field("poll_interval")
            )
        })?,
    };
    if poll_interval.is_zero() {
        bail!("{}: must be more than 0", field("poll_interval"));
    }
    if let Some(bad) = g.hosts.iter().find(|h| h.trim().is_empty()) {
        bail!("{}: `{bad}` is not a host name", field("hosts"));
    }
    let confirm_rounds = g.confirm_rounds.unwrap_or(3);
    if confirm_rounds > 10 {
        bail!(
            "{}: {confirm_rounds} is too many; use 0 to 10",
            field("confirm_rounds")
        );
    }
    let path = g
        .template
        .as_ref()
        .with_context(|| format!("{}: the job template's path is missing", field("template")))?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read {}", field("template"), path.display()))?;
    let origin = path.display().to_string();
    let template = Template::parse(&text, &origin)
        .map_err(|e| anyhow::anyhow!("{}: {e}", field("template")))?;
    template
        .check(&Vars::only(TEMPLATE_VARS.iter().map(|v| (*v).to_owned())))
        .map_err(|e| anyhow::anyhow!("{}: {e}", field("template")))?;
    let dashboard_url = g
        .dashboard_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let settings = BotSettings {
        project,
        label: g.label.clone().unwrap_or_else(|| "benchmark".to_owned()),
        poll_interval,
        template,
        overrides: Overrides {
            queue: g.queue.clone(),
            priority: None,
        },
        dashboard_url,
        hosts: g.hosts.iter().map(|h| h.trim().to_owned()).collect(),
        confirm_rounds,
    };
    Ok(BotConfig {
        host,
        api_url,
        token: Token::new(&token),
        retry: RetryPolicy::default(),
        request_timeout: Duration::from_secs(30),
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "name = \"bench-{{side}}\"\n[[task]]\nname = \"b\"\nsteps = [{ stage = \"test\", run = \"./bench {{sha}}\" }]\n";

    fn section(dir: &std::path::Path, template: &str) -> BotSection {
        let token = dir.join("token");
        std::fs::write(&token, "glpat-secret\n").expect("token file");
        let path = dir.join("bench.toml");
        std::fs::write(&path, template).expect("template file");
        BotSection {
            api_url: Some("https://gitlab.example.com".into()),
            project: Some("group/project".into()),
            token_file: Some(token),
            template: Some(path),
            ..BotSection::default()
        }
    }

    fn config() -> ServerConfig {
        ServerConfig::new(
            "127.0.0.1:8080".parse().expect("address"),
            PathBuf::from("/tmp/unused"),
        )
    }

    #[test]
    fn a_complete_section_resolves_with_defaults_and_hides_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config();
        let mut github = section(dir.path(), TEMPLATE);
        github.api_url = None;
        github.project = None;
        github.repository = Some("octo-org/octo-repo".into());
        github.hosts = vec!["bench-1".into()];
        let bots = BotsSection {
            gitlab: Some(section(dir.path(), TEMPLATE)),
            github: Some(github),
        };
        apply(&bots, &mut c).expect("valid");
        assert_eq!(c.bots.len(), 2);
        let gh = &c.bots[1];
        assert_eq!(gh.host, Host::GitHub);
        assert_eq!(gh.api_url, "https://api.github.com");
        assert_eq!(gh.settings.project, "octo-org/octo-repo");
        assert_eq!(gh.settings.hosts, vec!["bench-1".to_owned()]);
        let bot = &c.bots[0];
        assert_eq!(bot.settings.label, "benchmark");
        assert_eq!(bot.settings.poll_interval, Duration::from_secs(60));
        assert_eq!(bot.settings.dashboard_url, "http://127.0.0.1:8080");
        let shown = format!("{c:?}");
        assert!(!shown.contains("glpat-secret"), "{shown}");
    }

    #[test]
    fn bad_sections_are_refused_by_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut no_token = section(dir.path(), TEMPLATE);
        no_token.token_file = None;
        let mut bad_poll = section(dir.path(), TEMPLATE);
        bad_poll.poll_interval = Some("often".into());
        let unknown_var = section(
            dir.path(),
            "name = \"{{nope}}\"\n[[task]]\nname = \"b\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
        );
        for (s, expected) in [
            (
                no_token,
                "server.bots.gitlab.token_file`: the token is missing",
            ),
            (bad_poll, "server.bots.gitlab.poll_interval`: `often`"),
            (unknown_var, "server.bots.gitlab.template`"),
        ] {
            let bots = BotsSection {
                gitlab: Some(s),
                github: None,
            };
            let err = apply(&bots, &mut config()).expect_err("refused");
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
        let mut bad_repo = section(dir.path(), TEMPLATE);
        bad_repo.project = None;
        bad_repo.repository = Some("octo-org".into());
        let mut gitlab_project = section(dir.path(), TEMPLATE);
        gitlab_project.repository = None;
        for (s, expected) in [
            (
                bad_repo,
                "server.bots.github.repository`: `octo-org` is not `owner/repo`",
            ),
            (
                gitlab_project,
                "server.bots.github.project`: GitHub names a repository",
            ),
        ] {
            let bots = BotsSection {
                gitlab: None,
                github: Some(s),
            };
            let err = apply(&bots, &mut config()).expect_err("refused");
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }
}
