//! Trigger rules and job templates (issue 13): which events submit which
//! jobs, decided without IO.
//!
//! - [`event`]: the [`Event`] a rule is matched against (source, AMQP topic,
//!   webhook kind, JSON body);
//! - [`rules`]: the rules file (`[[rule]]` with `when` and `do`) parsed into a
//!   [`RuleSet`], every mistake named with file, line, rule and field;
//! - [`matching`]: [`RuleSet::matches`] and [`RuleSet::explain`] (why a rule
//!   did not match: its first failed condition);
//! - [`vars`]: placeholder values (well-known per source, `body.<path>`,
//!   `event.*`, an action's `vars`, `testfleet run --var`);
//! - [`template`]: job templates rendered safely into a [`crate::JobSpec`].
//!
//! Reading rules and template files is the caller's (the server's
//! `triggers::load`); everything here works on text and plain values, so
//! every piece can be fed plain dictionaries (seed 001).

pub mod event;
pub mod matching;
mod placeholder;
pub mod rules;
pub mod template;
pub mod vars;

pub use event::{Event, Source, UnknownSource};
pub use matching::{Explanation, Match, Mismatch};
pub use placeholder::shell_quote;
pub use rules::{
    Action, ActionVar, ConditionError, FieldCondition, Op, Rule, RuleError, RuleSet, Scalar,
    TopicPattern, TopicPatternError, When,
};
pub use template::{Overrides, Rendered, Template, TemplateError, render};
pub use vars::{VarError, Vars, WellKnown, well_known};
