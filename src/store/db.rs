//! The one seam between the store's logic and its two SQL dialects. The
//! store's operations are plain functions of a `Tx`; each statement is written
//! once with `$1`-style placeholders and runs on SQLite (rewritten to `?1`) or
//! PostgreSQL. Values cross the seam as `Value`, rows come back as `Row`.

use uuid::Uuid;

use super::StoreError;
use super::postgres::PgSession;
use super::signals::Signal;

/// Which SQL the statement runs on, for the few fragments that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Appended to a claim's inner SELECT: rows another replica is claiming
    /// are skipped, not waited for. SQLite has one writer, so nothing to skip.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// `column` is among the values `subquery` selects, looked up by
    /// `column`'s index. PostgreSQL computes the subquery once as an array
    /// (an InitPlan) and probes the index with it; as an `IN` it may join a
    /// sequential scan of the whole table, which it picks for a queue table
    /// whose statistics lag behind its size.
    pub fn among(self, column: &str, subquery: &str) -> String {
        match self {
            Self::Sqlite => format!("{column} IN ({subquery})"),
            Self::Postgres => format!("{column} = ANY(ARRAY({subquery}))"),
        }
    }

    /// `column` is among the strings of the JSON array bound to `$param`.
    pub fn among_batch(self, column: &str, param: usize) -> String {
        self.among(column, &self.batch_texts(param))
    }

    /// `column` is among the first fields of the rows of the JSON array of
    /// arrays bound to `$param` (their keys).
    pub fn among_batch_keys(self, column: &str, param: usize) -> String {
        self.among(column, &format!("SELECT k.value ->> 0 FROM {}", self.batch_rows(param, "k")))
    }

    /// For an `UPDATE … FROM` the batch of rows at `$param` joined on
    /// `column`: on PostgreSQL ` AND column` is among the batch's keys, so
    /// that each row is looked up by key whatever the statistics say; nothing
    /// on SQLite, which loops over the batch and looks each row up by itself,
    /// and would instead scan the whole batch again for every row.
    pub fn join_by_key(self, column: &str, param: usize) -> String {
        match self {
            Self::Sqlite => String::new(),
            Self::Postgres => format!(" AND {}", self.among_batch_keys(column, param)),
        }
    }

    /// A subquery of the strings in the JSON array bound to `$param` (see
    /// `batch`).
    pub fn batch_texts(self, param: usize) -> String {
        match self {
            Self::Sqlite => format!("SELECT value FROM json_each(${param})"),
            Self::Postgres => format!("SELECT json_array_elements_text(${param}::json)"),
        }
    }

    /// The JSON array of arrays bound to `$param` (see `batch`) as the `FROM`
    /// item `alias`, one row per array: read a row's fields, in both
    /// dialects, as `alias.value ->> 0`, `alias.value ->> 1`, ….
    pub fn batch_rows(self, param: usize, alias: &str) -> String {
        match self {
            Self::Sqlite => format!("json_each(${param}) {alias}"),
            Self::Postgres => format!("json_array_elements(${param}::json) {alias}(value)"),
        }
    }

    /// Appended to a SELECT of rows the transaction will rewrite from what it
    /// read: another replica's transaction waits for this one to commit.
    /// SQLite's single writer already serializes them.
    pub fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// Appended to a SELECT of a row the transaction relies on staying: a
    /// DELETE of it waits for this transaction, and one committed first
    /// makes the SELECT find nothing. Shared with every other reader's.
    pub fn for_key_share(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR KEY SHARE",
        }
    }

    /// `column` as a term the planner filters by but never looks up through
    /// an index (SQLite's unary `+`, an expression on PostgreSQL). Without
    /// statistics, or with those of a table that has grown since they were
    /// taken, both would rather read a tenant's every row through a tenant
    /// index (PostgreSQL into a bitmap to AND with the ids') than look up a
    /// long `IN` list of ids alone.
    pub fn filter_only(self, column: &str) -> String {
        match self {
            Self::Sqlite => format!("+{column}"),
            Self::Postgres => format!("({column} || '')"),
        }
    }

    /// SQL reading the text at `key` of the JSON object stored as text in `column`.
    pub fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Self::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Self::Postgres => format!("({column}::json ->> '{key}')"),
        }
    }
}

/// Why a statement failed, as far as the store cares.
#[derive(Debug)]
pub enum DbError {
    /// The database cannot be reached or refused the connection.
    Unavailable(String),
    /// A deadlock or serialization failure: the whole transaction may be tried again.
    Contention(String),
    /// Anything else: a bug or a corrupt row.
    Internal(String),
}

pub type DbResult<T> = Result<T, DbError>;

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(reason) | DbError::Contention(reason) => StoreError::Unavailable(reason),
            DbError::Internal(reason) => StoreError::Internal(reason),
        }
    }
}

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Self {
        Value::Text(value.clone())
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<Uuid> for Value {
    fn from(value: Uuid) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Self {
        Value::Bytes(value.to_vec())
    }
}

impl From<&Vec<u8>> for Value {
    fn from(value: &Vec<u8>) -> Self {
        Value::Bytes(value.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// The values of one statement's placeholders, in order: `args![a, b]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => { &[$($crate::store::db::Value::from($value)),*] as &[$crate::store::db::Value] };
}
pub(crate) use args;

/// The WHERE clause of a list: the tenant and only the filters given, so
/// that each statement names exactly the columns of the index serving it (a
/// `column = $n OR $n IS NULL` condition hides every index from both planners).
pub struct ListQuery {
    conditions: Vec<String>,
    args: Vec<Value>,
}

impl ListQuery {
    pub fn for_tenant(tenant: &str) -> Self {
        Self { conditions: vec!["tenant = $1".to_owned()], args: vec![Value::from(tenant)] }
    }

    /// `column = value`, when a value is given.
    pub fn filter(mut self, column: &str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            self.args.push(value.into());
            self.conditions.push(format!("{column} = ${}", self.args.len()));
        }
        self
    }

    pub fn condition(&self) -> String {
        self.conditions.join(" AND ")
    }

    pub fn args(&self) -> &[Value] {
        &self.args
    }

    /// `LIMIT $n OFFSET $m` for the page, with the arguments it completes.
    pub fn page(&self, page: super::Page) -> (String, Vec<Value>) {
        let mut args = self.args.clone();
        args.extend([Value::from(page.size), Value::from(page.offset())]);
        (format!("LIMIT ${} OFFSET ${}", args.len() - 1, args.len()), args)
    }
}

/// One result row; columns by position, as the statement selected them.
#[derive(Debug)]
pub struct Row(pub(super) Vec<Value>);

impl Row {
    fn value(&self, column: usize) -> DbResult<&Value> {
        self.0.get(column).ok_or_else(|| DbError::Internal(format!("no column {column} in the row")))
    }

    fn mismatch(&self, column: usize, wanted: &str) -> DbError {
        DbError::Internal(format!("column {column} is not {wanted}: {:?}", self.0.get(column)))
    }

    pub fn opt_str(&self, column: usize) -> DbResult<Option<&str>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text)),
            _ => Err(self.mismatch(column, "text")),
        }
    }

    pub fn opt_text(&self, column: usize) -> DbResult<Option<String>> {
        Ok(self.opt_str(column)?.map(str::to_owned))
    }

    pub fn text(&self, column: usize) -> DbResult<String> {
        self.opt_text(column)?.ok_or_else(|| self.mismatch(column, "text"))
    }

    pub fn opt_int(&self, column: usize) -> DbResult<Option<i64>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Int(number) => Ok(Some(*number)),
            _ => Err(self.mismatch(column, "an integer")),
        }
    }

    pub fn int(&self, column: usize) -> DbResult<i64> {
        self.opt_int(column)?.ok_or_else(|| self.mismatch(column, "an integer"))
    }

    pub fn count(&self, column: usize) -> DbResult<u32> {
        u32::try_from(self.int(column)?).map_err(|_| self.mismatch(column, "a count"))
    }

    /// A boolean: PostgreSQL's own, or SQLite's 0 and 1.
    pub fn boolean(&self, column: usize) -> DbResult<bool> {
        match self.value(column)? {
            Value::Bool(flag) => Ok(*flag),
            Value::Int(number) => Ok(*number != 0),
            _ => Err(self.mismatch(column, "a boolean")),
        }
    }

    pub fn opt_bytes(&self, column: usize) -> DbResult<Option<Vec<u8>>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Bytes(bytes) => Ok(Some(bytes.clone())),
            _ => Err(self.mismatch(column, "bytes")),
        }
    }

    pub fn bytes(&self, column: usize) -> DbResult<Vec<u8>> {
        self.opt_bytes(column)?.ok_or_else(|| self.mismatch(column, "bytes"))
    }

    pub fn uuid(&self, column: usize) -> DbResult<Uuid> {
        let text = self.opt_str(column)?.ok_or_else(|| self.mismatch(column, "a UUID"))?;
        Uuid::parse_str(text).map_err(|_| self.mismatch(column, "a UUID"))
    }

    pub fn opt_json<T: serde::de::DeserializeOwned>(&self, column: usize) -> DbResult<Option<T>> {
        self.opt_str(column)?
            .map(|text| serde_json::from_str(text).map_err(|e| DbError::Internal(format!("column {column} is not the JSON expected: {e}"))))
            .transpose()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, column: usize) -> DbResult<T> {
        self.opt_json(column)?.ok_or_else(|| self.mismatch(column, "JSON"))
    }
}

pub fn to_json(value: &impl serde::Serialize) -> DbResult<String> {
    serde_json::to_string(value).map_err(|e| DbError::Internal(e.to_string()))
}

/// One transaction (or, for reads, one connection) of either dialect. The
/// signals it collects reach this replica and every other one once it commits.
pub struct Tx<'a> {
    connection: Connection<'a>,
    signals: Vec<Signal>,
}

enum Connection<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a mut PgSession),
}

impl<'a> Tx<'a> {
    pub(super) fn sqlite(connection: &'a rusqlite::Connection) -> Self {
        Self { connection: Connection::Sqlite(connection), signals: Vec::new() }
    }

    pub(super) fn postgres(session: &'a mut PgSession) -> Self {
        Self { connection: Connection::Postgres(session), signals: Vec::new() }
    }

    pub fn dialect(&self) -> Dialect {
        match self.connection {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, args: &[Value]) -> DbResult<u64> {
        match &mut self.connection {
            Connection::Sqlite(connection) => super::sqlite::execute(connection, sql, args),
            Connection::Postgres(session) => session.execute(sql, args),
        }
    }

    /// Runs a statement whose count no one reads, in a write. On PostgreSQL it
    /// is sent ahead of the transaction's next statement or its `COMMIT`, in
    /// the same round trip, and its failure is reported there and fails the
    /// whole write: a caller must not take the next statement's error for
    /// that statement's own.
    pub fn execute_later(&mut self, sql: &str, args: &[Value]) -> DbResult<()> {
        match &mut self.connection {
            Connection::Sqlite(connection) => super::sqlite::execute(connection, sql, args).map(drop),
            Connection::Postgres(session) => {
                session.execute_later(sql, args);
                Ok(())
            }
        }
    }

    pub fn query(&mut self, sql: &str, args: &[Value]) -> DbResult<Vec<Row>> {
        match &mut self.connection {
            Connection::Sqlite(connection) => super::sqlite::query(connection, sql, args),
            Connection::Postgres(session) => session.query(sql, args),
        }
    }

    pub fn query_opt(&mut self, sql: &str, args: &[Value]) -> DbResult<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, args: &[Value]) -> DbResult<Row> {
        self.query_opt(sql, args)?.ok_or_else(|| DbError::Internal(format!("no row from: {sql}")))
    }

    /// Tells waiters, on every replica, once this transaction commits.
    pub fn signal(&mut self, signal: Signal) {
        if !self.signals.contains(&signal) {
            self.signals.push(signal);
        }
    }

    pub(super) fn take_signals(&mut self) -> Vec<Signal> {
        std::mem::take(&mut self.signals)
    }
}

/// A batch bound as one value, a JSON array read back by `Dialect::batch_texts`
/// or `Dialect::batch_rows`: a statement's text is then the same whatever the
/// batch's size, prepared and cached once rather than once per size.
pub fn batch(items: &impl serde::Serialize) -> DbResult<Value> {
    Ok(Value::Text(to_json(items)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_both_dialects_booleans_and_refuse_wrong_types() {
        let row = Row(vec![Value::Int(1), Value::Bool(false), Value::Text("x".into()), Value::Null]);
        assert!(row.boolean(0).unwrap() && !row.boolean(1).unwrap());
        assert_eq!(row.text(2).unwrap(), "x");
        assert_eq!(row.opt_text(3).unwrap(), None);
        assert!(row.int(2).is_err() && row.text(3).is_err() && row.uuid(2).is_err() && row.int(9).is_err());
    }
}
