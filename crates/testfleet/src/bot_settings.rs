//! Configuration of the merge-request bots: `[server.bots.gitlab]`. Part of
//! `settings`: defaults → file → `TESTFLEET_*` → flags. The token is read
//! from a file or an environment variable, never from the file itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use testfleet_core::trigger::{Overrides, Template, Vars};
use testfleet_server::ServerConfig;
use testfleet_server::bots::gitlab::{GitLabBotConfig, GitLabBotSettings, RetryPolicy, Token};

/// `[server.bots]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotsSection {
    pub gitlab: Option<GitLabBotSection>,
}

/// `[server.bots.gitlab]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLabBotSection {
    /// GitLab's root URL (`https://gitlab.example.com`).
    pub api_url: Option<String>,
    /// The project's numeric id or its path (`group/project`).
    pub project: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub token_env: Option<String>,
    /// The label that asks for a run (default `benchmark`).
    pub label: Option<String>,
    /// How often open merge requests are looked at (default `1m`).
    pub poll_interval: Option<String>,
    /// The job template (placeholders `sha`, `branch`, `target_branch`,
    /// `mr`, `side`, `project`, `pipeline_id`, `pipeline_started_at`).
    pub template: Option<PathBuf>,
    /// The queue the jobs go to (the benchmark hosts' queue).
    pub queue: Option<String>,
    /// The dashboard's URL as the notes' readers reach it (default
    /// `http://<listen>`).
    pub dashboard_url: Option<String>,
}

/// The placeholders a bot's template may use.
const VARS: &[&str] = &[
    "sha",
    "branch",
    "target_branch",
    "mr",
    "side",
    "project",
    "pipeline_id",
    "pipeline_started_at",
];

/// Resolves `[server.bots.gitlab]` into `config.gitlab_bot`.
pub fn apply(section: &BotsSection, config: &mut ServerConfig) -> Result<()> {
    let Some(g) = &section.gitlab else {
        return Ok(());
    };
    let field = |name: &str| format!("config `server.bots.gitlab.{name}`");
    let api_url = g
        .api_url
        .clone()
        .with_context(|| format!("{}: GitLab's URL is missing", field("api_url")))?;
    let project = g
        .project
        .clone()
        .filter(|p| !p.trim().is_empty())
        .with_context(|| format!("{}: the project id or path is missing", field("project")))?;
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
        .check(&Vars::only(VARS.iter().map(|v| (*v).to_owned())))
        .map_err(|e| anyhow::anyhow!("{}: {e}", field("template")))?;
    let dashboard_url = g
        .dashboard_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let settings = GitLabBotSettings {
        project,
        label: g.label.clone().unwrap_or_else(|| "benchmark".to_owned()),
        poll_interval,
        template,
        overrides: Overrides {
            queue: g.queue.clone(),
            priority: None,
        },
        dashboard_url,
    };
    config.gitlab_bot = Some(GitLabBotConfig {
        api_url,
        token: Token::new(&token),
        retry: RetryPolicy::default(),
        request_timeout: Duration::from_secs(30),
        settings,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "name = \"bench-{{side}}\"\n[[task]]\nname = \"b\"\nsteps = [{ stage = \"test\", run = \"./bench {{sha}}\" }]\n";

    fn section(dir: &std::path::Path, template: &str) -> GitLabBotSection {
        let token = dir.join("token");
        std::fs::write(&token, "glpat-secret\n").expect("token file");
        let path = dir.join("bench.toml");
        std::fs::write(&path, template).expect("template file");
        GitLabBotSection {
            api_url: Some("https://gitlab.example.com".into()),
            project: Some("group/project".into()),
            token_file: Some(token),
            template: Some(path),
            ..GitLabBotSection::default()
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
        let bots = BotsSection {
            gitlab: Some(section(dir.path(), TEMPLATE)),
        };
        apply(&bots, &mut c).expect("valid");
        let bot = c.gitlab_bot.as_ref().expect("configured");
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
            let err = apply(&BotsSection { gitlab: Some(s) }, &mut config()).expect_err("refused");
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }
}
