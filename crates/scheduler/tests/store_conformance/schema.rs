//! The two schemas, compared column for column.

use tessera_testkit::{Backend, TestDb};

/// The two schemas, migrated, have the same tables and columns, and the
/// same columns may be NULL (SQLite's primary keys aside: it lets a
/// non-integer primary key hold NULL, though Tessera never writes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schemas_are_equal_column_for_column() {
    use sqlx::Connection;
    use std::collections::BTreeMap;

    let pg = TestDb::new(Backend::Postgres).await;
    let lite = TestDb::new(Backend::Sqlite).await;
    // Opening a store applies the migrations.
    pg.store().await.close().await;
    lite.store().await.close().await;

    // (table, column) -> (nullable, part of the primary key)
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.is_nullable::text, \
         EXISTS (SELECT 1 FROM information_schema.table_constraints t \
                 JOIN information_schema.key_column_usage k \
                   ON k.constraint_name = t.constraint_name AND k.table_name = t.table_name \
                 WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_name = c.table_name \
                   AND k.column_name = c.column_name) \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let postgres: BTreeMap<(String, String), (bool, bool)> = rows
        .into_iter()
        .map(|(t, c, nullable, pk)| ((t, c), (nullable == "YES", pk)))
        .collect();
    let mut conn = sqlx::SqliteConnection::connect(&lite.url).await.unwrap();
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT m.name, p.name, p.\"notnull\", p.pk FROM sqlite_master m \
         JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let sqlite: BTreeMap<(String, String), (bool, bool)> = rows
        .into_iter()
        .map(|(t, c, notnull, pk)| ((t, c), (notnull == 0, pk > 0)))
        .collect();

    let names =
        |m: &BTreeMap<(String, String), (bool, bool)>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&postgres),
        names(&sqlite),
        "tables and columns differ"
    );
    assert!(postgres.contains_key(&("link_codes".to_owned(), "code_hash".to_owned())));
    for (column, &(pg_nullable, pk)) in &postgres {
        let (lite_nullable, lite_pk) = sqlite[column];
        assert_eq!(pk, lite_pk, "{column:?}: primary key on one side only");
        if !pk {
            assert_eq!(
                pg_nullable, lite_nullable,
                "{column:?}: NULL allowed on one side only"
            );
        }
    }
}
