//! Test support shared by the crates of the workspace.

use sqlx::{AnyConnection, AssertSqlSafe, Connection};

/// Environment variable naming an administrative PostgreSQL URL for tests.
pub const POSTGRES_URL_ENV: &str = "WARD_TEST_POSTGRES_URL";

/// Creates a fresh, empty PostgreSQL database `ward_t_<random hex>` through the server named by
/// `WARD_TEST_POSTGRES_URL` and returns a URL pointing at it.
///
/// # Panics
/// If `WARD_TEST_POSTGRES_URL` is unset or the server is unreachable: PostgreSQL tests must fail,
/// never skip silently.
pub async fn fresh_postgres_url() -> String {
    sqlx::any::install_default_drivers();
    let base = std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_ENV} is not set: PostgreSQL tests require it \
             (e.g. postgres://postgres@127.0.0.1:5432/test)"
        )
    });
    let mut conn = AnyConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!("cannot connect to the PostgreSQL server named by {POSTGRES_URL_ENV}: {e}")
    });
    let name = format!("ward_t_{}", hex::encode(uuid::Uuid::new_v4().as_bytes()));
    // The name is generated here from hex digits only.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    let _ = conn.close().await;
    with_database(&base, &name)
}

/// Replaces the database name (path) of a `postgres://` URL, keeping query parameters.
fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split_once('/').map_or(before_query, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/test?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
