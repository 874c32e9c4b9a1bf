//! Reads trigger rules: one rules file, or every `*.toml` file of a
//! directory (not its subdirectories, where templates can live), and the
//! job templates their actions name, relative to the rules file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use testfleet_core::trigger::{RuleError, RuleSet, Template, TemplateError};

/// Why rules could not be loaded; every variant names a file, and a line
/// where there is one.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no rules files (*.toml) in this directory", .0.display())]
    NoRulesFiles(PathBuf),
    /// A rules file is malformed.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// A template is malformed (named with the first rule that uses it).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// An action names a template that cannot be read.
    #[error("{file}{}: rule `{rule}`: field `do[{action}].template`: cannot read template {}",
        line.map(|l| format!(":{l}")).unwrap_or_default(), template.display())]
    TemplateUnreadable {
        rule: String,
        file: String,
        line: Option<usize>,
        action: usize,
        template: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The rules files `path` stands for: itself, or the `*.toml` files of a
/// directory in name order.
fn rules_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    if !std::fs::metadata(path).map_err(io)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(LoadError::NoRulesFiles(path.to_owned()));
    }
    files.sort();
    Ok(files)
}

/// Loads the rules at `path` (a file or a directory) with every template
/// they name parsed and checked. Rule names must be unique across files.
pub fn load_rules(path: &Path) -> Result<RuleSet, LoadError> {
    let mut set = RuleSet::default();
    let mut templates: BTreeMap<PathBuf, Template> = BTreeMap::new();
    for file in rules_files(path)? {
        let text = read(&file)?;
        let name = file.display().to_string();
        let mut rules = RuleSet::parse(&text, &name)?;
        let base = file.parent().unwrap_or(Path::new(".")).to_owned();
        for rule in rules.rules_mut() {
            for action in &mut rule.actions {
                let template_file = base.join(&action.template_path);
                let template = match templates.get(&template_file) {
                    Some(t) => t.clone(),
                    None => {
                        let text = std::fs::read_to_string(&template_file).map_err(|source| {
                            LoadError::TemplateUnreadable {
                                rule: rule.name.clone(),
                                file: rule.file.clone(),
                                line: action.line,
                                action: action.index,
                                template: template_file.clone(),
                                source,
                            }
                        })?;
                        let origin = template_file.display().to_string();
                        let t =
                            Template::parse(&text, &origin).map_err(|e| e.with_rule(&rule.name))?;
                        templates.insert(template_file, t.clone());
                        t
                    }
                };
                action.template = Some(template);
            }
            for action in &rule.actions {
                action.check_template(rule)?;
            }
        }
        set.extend(rules)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[rule]]
name = "rpmlint"
when = { source = "amqp", topic = "org.fedoraproject.*.buildsys.build.state.change" }
[[rule.do]]
template = "templates/rpmlint.toml"
vars = { item = "{{body.name}}" }
"#;

    const TEMPLATE: &str = r#"name = "rpmlint-{{item}}"
[[task]]
name = "rpmlint"
steps = [{ stage = "test", run = "rpmlint {{item}}" }]
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_a_file_or_a_directory_with_templates_relative_to_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "fedora.toml", RULES);
        write(dir.path(), "templates/rpmlint.toml", TEMPLATE);
        let set = load_rules(&file).unwrap();
        let action = &set.rules()[0].actions[0];
        let template = action.template.as_ref().unwrap();
        assert!(template.origin().ends_with("templates/rpmlint.toml"));

        // A directory: every *.toml at its top, templates/ is not read as rules.
        write(
            dir.path(),
            "gerrit.toml",
            &RULES.replace("\"rpmlint\"\nwhen", "\"other\"\nwhen"),
        );
        write(dir.path(), "notes.txt", "not rules");
        let set = load_rules(dir.path()).unwrap();
        let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["rpmlint", "other"]);
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "fedora.toml", RULES);
        let e = load_rules(&file).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, LoadError::TemplateUnreadable { .. }), "{text}");
        assert!(
            text.contains(
                "fedora.toml:5: rule `rpmlint`: field `do[0].template`: cannot read template"
            ),
            "{text}"
        );

        write(
            dir.path(),
            "templates/rpmlint.toml",
            &TEMPLATE.replace("rpmlint {{item}}", "rpmlint '{{item}}'"),
        );
        let e = load_rules(&file).unwrap_err();
        let LoadError::Template(t) = &e else {
            panic!("{e}")
        };
        assert_eq!(t.rule.as_deref(), Some("rpmlint"));
        assert_eq!(t.line, Some(4));
        assert!(t.file.ends_with("templates/rpmlint.toml"), "{e}");
        assert!(t.message.contains("inside single quotes"), "{e}");

        // A placeholder no event of the rule could fill: refused at load.
        write(
            dir.path(),
            "templates/rpmlint.toml",
            &TEMPLATE.replace("rpmlint {{item}}", "rpmlint {{sha}}"),
        );
        let e = load_rules(&file).unwrap_err();
        let LoadError::Template(t) = &e else {
            panic!("{e}")
        };
        assert_eq!(
            (t.rule.as_deref(), t.line),
            (Some("rpmlint"), Some(4)),
            "{e}"
        );
        assert_eq!(t.field.as_deref(), Some("task[0].steps[0].run"), "{e}");
        assert!(
            t.message
                .starts_with("placeholder `{{sha}}` has no value; known here: `item`"),
            "{e}"
        );

        let e = load_rules(&dir.path().join("missing.toml")).unwrap_err();
        assert!(e.to_string().starts_with("failed to read "), "{e}");

        let empty = tempfile::tempdir().unwrap();
        let e = load_rules(empty.path()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("no rules files (*.toml) in this directory"),
            "{e}"
        );

        write(dir.path(), "templates/rpmlint.toml", TEMPLATE);
        write(dir.path(), "again.toml", RULES);
        let e = load_rules(dir.path()).unwrap_err();
        assert!(e.to_string().contains("already defined in"), "{e}");
    }
}
