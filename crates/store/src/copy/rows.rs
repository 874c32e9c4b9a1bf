//! Values on their way from the source to the target: typed [`Cell`]s,
//! decoded from a source row by the column kinds and bound as the target's
//! types, and the paged `SELECT` and multi-row `INSERT` that move them.

use sqlx::query_builder::Separated;
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::tables::{Column, Kind, Table};
use crate::db::Backend;

/// One value on its way from the source to the target.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Int(Option<i64>),
    Bool(Option<bool>),
    Real(Option<f64>),
    Text(Option<String>),
}

impl Cell {
    /// Roughly what the value weighs, to size pages.
    pub(super) fn weight(&self) -> usize {
        match self {
            Cell::Text(Some(s)) => s.len() + 8,
            _ => 8,
        }
    }
}

/// Decodes one source row by the table's column kinds.
pub(super) fn decode_row<'r, R>(row: &'r R, columns: &[Column]) -> Result<Vec<Cell>, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    Option<bool>: Decode<'r, R::Database> + Type<R::Database>,
    Option<f64>: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.kind {
                Kind::Int => Cell::Int(row.try_get(i)?),
                Kind::Bool => Cell::Bool(row.try_get(i)?),
                Kind::Real => Cell::Real(row.try_get(i)?),
                Kind::Text => Cell::Text(row.try_get(i)?),
            })
        })
        .collect()
}

/// Binds one value as the target's type of its kind.
fn push_cell<DB>(list: &mut Separated<'_, DB, &'static str>, cell: Cell)
where
    DB: Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    match cell {
        Cell::Int(v) => list.push_bind(v),
        Cell::Bool(v) => list.push_bind(v),
        Cell::Real(v) => list.push_bind(v),
        Cell::Text(v) => list.push_bind(v),
    };
}

/// `SELECT columns FROM table [WHERE (key) > (last key)] ORDER BY key LIMIT rows`.
pub(super) fn select_page<DB>(
    table: &Table,
    backend: Backend,
    after: Option<Vec<Cell>>,
    rows: usize,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    let key = table.key_list(backend);
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM \"{}\"",
        table.column_list(backend),
        table.name
    ));
    if let Some(after) = after {
        // A row-value comparison: both engines walk the primary key's index.
        q.push(format!(" WHERE ({key}) > ("));
        let mut list = q.separated(", ");
        for cell in after {
            push_cell(&mut list, cell);
        }
        q.push(")");
    }
    q.push(format!(" ORDER BY {key} LIMIT {rows}"));
    q
}

/// One multi-row `INSERT` of `rows` (non-empty).
pub(super) fn insert_rows<DB>(
    table: &Table,
    backend: Backend,
    rows: Vec<Vec<Cell>>,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "INSERT INTO \"{}\" ({}) ",
        table.name,
        table.column_list(backend)
    ));
    q.push_values(rows, |mut list, row| {
        for cell in row {
            push_cell(&mut list, cell);
        }
    });
    q
}
