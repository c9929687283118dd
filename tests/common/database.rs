//! The database each test gets. `ACTIOND_TEST_DATABASE` picks the dialect of
//! the black-box suite: `sqlite` (the default: a fresh file) or `postgres` (a
//! fresh database cloned from a template migrated once per test process, on
//! the server at `ACTIOND_TEST_POSTGRES_URL`, default the local one). Tests of
//! replicas use PostgreSQL whatever the dialect, and fail when it is missing.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use uuid::Uuid;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The dialect the black-box suite runs on.
pub fn dialect() -> Dialect {
    match std::env::var("ACTIOND_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Dialect::Sqlite,
        Ok("postgres") => Dialect::Postgres,
        Ok(other) => panic!("ACTIOND_TEST_DATABASE={other}: use sqlite or postgres"),
    }
}

fn admin_url() -> String {
    std::env::var("ACTIOND_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// The URL of database `name` on the test server.
pub fn url_of(name: &str) -> String {
    let mut url = reqwest::Url::parse(&admin_url()).expect("ACTIOND_TEST_POSTGRES_URL is a URL");
    url.set_path(name);
    url.to_string()
}

/// Runs a future to completion on a runtime of its own, from sync or async code alike.
pub fn block_on<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future))
            .join()
            .expect("the database helper did not panic")
    })
}

/// Runs SQL on the server's admin database; a server that does not answer is
/// an error that says which URL it tried.
async fn admin(sql: &str) -> Result<(), tokio_postgres::Error> {
    let url = admin_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.inspect_err(|error| {
        eprintln!("PostgreSQL at {url} does not answer ({error}); start it or set ACTIOND_TEST_POSTGRES_URL");
    })?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    result
}

/// Retries `sql` while the database it names still has connections closing.
async fn admin_when_free(sql: &str) {
    for _ in 0..100 {
        match admin(sql).await {
            Ok(()) => return,
            Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{sql}: {error}"),
        }
    }
    panic!("{sql}: the database stayed in use");
}

/// The migrated database tests clone, named after the migrations it holds:
/// made by the first test process that needs it (under a lock, built under
/// another name and renamed when complete) and reused by every later one.
fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut files: Vec<_> = std::fs::read_dir(directory).expect("the migrations").map(|entry| entry.unwrap().path()).collect();
        files.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for file in files {
            std::hash::Hash::hash(&std::fs::read(file).unwrap(), &mut hasher);
        }
        let name = format!("actiond_tpl_{:016x}", std::hash::Hasher::finish(&hasher));
        block_on(async {
            let url = admin_url();
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {url} does not answer ({e}); start it or set ACTIOND_TEST_POSTGRES_URL"));
            tokio::spawn(connection);
            client.execute("SELECT pg_advisory_lock(7262018)", &[]).await.expect("the template lock");
            let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some();
            if !exists {
                let stale = client.query("SELECT datname FROM pg_database WHERE datname LIKE 'actiond\\_tpl\\_%'", &[]).await.unwrap();
                for row in stale {
                    admin_when_free(&format!("DROP DATABASE {} WITH (FORCE)", row.get::<_, String>(0))).await;
                }
                let building = format!("{name}_building");
                admin(&format!("CREATE DATABASE {building}")).await.expect("the template database is created");
                let store = actiond::store::Store::open(&url_of(&building), 1).await.expect("the template database migrates");
                drop(store);
                admin_when_free(&format!("ALTER DATABASE {building} RENAME TO {name}")).await;
            }
            client.execute("SELECT pg_advisory_unlock(7262018)", &[]).await.expect("the template lock");
        });
        name
    })
}

/// A database of its own for one test, dropped with it.
pub struct TestDatabase {
    pub url: String,
    postgres: Option<String>,
}

impl TestDatabase {
    /// A fresh database of the suite's dialect; a SQLite file lives in `dir`.
    pub fn fresh(dir: &Path) -> Self {
        match dialect() {
            Dialect::Sqlite => Self { url: format!("sqlite://{}", dir.join("actiond.db").display()), postgres: None },
            Dialect::Postgres => Self::postgres(),
        }
    }

    /// A fresh, migrated PostgreSQL database.
    pub fn postgres() -> Self {
        let template = template();
        let name = format!("actiond_t_{}", Uuid::new_v4().simple());
        block_on(admin_when_free(&format!("CREATE DATABASE {name} TEMPLATE {template}")));
        Self { url: url_of(&name), postgres: Some(name) }
    }

    /// An empty PostgreSQL database, not migrated: for tests of migration itself.
    pub fn empty_postgres() -> Self {
        let name = format!("actiond_t_{}", Uuid::new_v4().simple());
        block_on(admin(&format!("CREATE DATABASE {name}"))).expect("an empty test database is created");
        Self { url: url_of(&name), postgres: Some(name) }
    }

    /// The SQLite database at this URL, as the suite's own.
    pub fn sqlite_at(url: &str) -> Self {
        Self { url: url.to_owned(), postgres: None }
    }

    /// Runs SQL on this database behind the app's back (to age a row, say).
    pub fn execute(&self, sql: &str) {
        match self.url.strip_prefix("sqlite://") {
            Some(path) => rusqlite::Connection::open(path).and_then(|c| c.execute_batch(sql)).expect("the SQL runs on SQLite"),
            None => {
                let url = self.url.clone();
                block_on(async move {
                    let (client, connection) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("the test database answers");
                    tokio::spawn(connection);
                    client.batch_execute(sql).await.expect("the SQL runs on PostgreSQL");
                });
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs SQL on this (PostgreSQL) database and returns the first column of each row, as bytes.
    pub fn query_bytes(&self, sql: &str) -> Vec<Vec<u8>> {
        let url = self.url.clone();
        block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("the test database answers");
            tokio::spawn(connection);
            let rows = client.query(sql, &[]).await.expect("the query runs");
            rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect()
        })
    }
}

/// The versions `schema_migrations` lists once every PostgreSQL migration in
/// the repository is applied, as `1,2,…`.
pub fn all_postgres_migrations() -> Vec<u8> {
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let count = std::fs::read_dir(directory).expect("the migrations directory").count();
    (1..=count).map(|version| version.to_string()).collect::<Vec<_>>().join(",").into_bytes()
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = &self.postgres {
            let _ = block_on(admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
        }
    }
}
