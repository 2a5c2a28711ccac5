//! Batched statements over sqlx `Any` (one SQL text for PostgreSQL and SQLite): a projection
//! writes a whole batch's rows in a few multi-row statements instead of one per row.

use sqlx::AnyConnection;

/// Bound parameters per statement: under SQLite's 32,766 and PostgreSQL's 65,535.
pub const PARAMS_PER_STATEMENT_MAX: usize = 30_000;

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
    /// SQL `NULL` (of a text column).
    Null,
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Value::Null, Value::from)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

/// `INSERT INTO {table} ({columns}) VALUES (…), (…) {tail}` for all `rows`, in as many
/// statements as the parameter limit needs. Every row must have `columns.len()` values.
///
/// # Errors
/// The database error of the first failing statement.
pub async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
    tail: &str,
) -> Result<(), sqlx::Error> {
    let width = columns.len();
    let per_statement = (PARAMS_PER_STATEMENT_MAX / width).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut n = 0;
        for (i, row) in chunk.iter().enumerate() {
            debug_assert_eq!(row.len(), width, "row width differs from the column list");
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for j in 0..width {
                n += 1;
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            sql.push(')');
        }
        sql.push(' ');
        sql.push_str(tail);
        let mut query = sqlx::query(&sql);
        for row in chunk {
            for v in row {
                query = match v {
                    Value::Int(i) => query.bind(*i),
                    Value::Text(s) => query.bind(s.as_str()),
                    Value::Null => query.bind(Option::<String>::None),
                };
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `$from, $from+1, …` for `n` values: the inside of an `IN (…)` list.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_the_given_index() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }
}
