//! What the SQL stores share: how values are written to columns (times as Unix
//! nanoseconds, ids as text, roles as JSON) and read back from rows, and how
//! database errors become [`StoreError`]s. The SQL itself stays in each store.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Active, TokenId, TokenRecord, User, UserId};
use crate::error::StoreError;
use crate::token::TokenHash;

/// A value that cannot be written as the SQL stores encode it, or a stored value
/// they did not write.
#[derive(Debug, thiserror::Error)]
enum EncodingError {
    #[error("`{0}` is outside the times the SQL stores keep (1677-09-21 to 2262-04-11)")]
    TimeOutOfRange(&'static str),
    #[error("the stored `{0}` is malformed")]
    Malformed(&'static str),
}

/// A unique-key violation is the caller's [`StoreError::Conflict`]; anything
/// else is the backend's failure, as `otherwise` wraps it.
pub(super) fn write_error(
    err: sqlx::Error,
    conflict: &'static str,
    otherwise: fn(sqlx::Error) -> StoreError,
) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(conflict),
        _ => otherwise(err),
    }
}

pub(super) fn malformed(column: &'static str) -> StoreError {
    StoreError::backend(EncodingError::Malformed(column))
}

/// `at` as stored: Unix nanoseconds in a 64-bit integer.
pub(super) fn nanos(at: OffsetDateTime, column: &'static str) -> Result<i64, StoreError> {
    i64::try_from(at.unix_timestamp_nanos())
        .map_err(|_| StoreError::backend(EncodingError::TimeOutOfRange(column)))
}

pub(super) fn nanos_opt(
    at: Option<OffsetDateTime>,
    column: &'static str,
) -> Result<Option<i64>, StoreError> {
    at.map(|at| nanos(at, column)).transpose()
}

/// `active`'s bounds as stored: `now` and `issued_after` in nanoseconds. An
/// `issued_after` before the times the stores keep excludes nothing.
pub(super) fn active_bounds(active: Active) -> Result<(i64, Option<i64>), StoreError> {
    let now = nanos(active.now, "now")?;
    let issued_after = match active.issued_after {
        Some(after) if after.unix_timestamp_nanos() < i128::from(i64::MIN) => None,
        after => nanos_opt(after, "issued_after")?,
    };
    Ok((now, issued_after))
}

pub(super) fn roles_json(user: &User) -> Result<String, StoreError> {
    serde_json::to_string(&user.roles).map_err(StoreError::backend)
}

/// The columns a row of either SQL store is read through.
pub(super) trait StoreRow {
    fn text(&self, name: &'static str) -> Result<String, StoreError>;
    fn int(&self, name: &'static str) -> Result<i64, StoreError>;
    fn int_opt(&self, name: &'static str) -> Result<Option<i64>, StoreError>;
}

macro_rules! store_row {
    ($row:ty) => {
        impl StoreRow for $row {
            fn text(&self, name: &'static str) -> Result<String, StoreError> {
                sqlx::Row::try_get(self, name).map_err(StoreError::backend)
            }
            fn int(&self, name: &'static str) -> Result<i64, StoreError> {
                sqlx::Row::try_get(self, name).map_err(StoreError::backend)
            }
            fn int_opt(&self, name: &'static str) -> Result<Option<i64>, StoreError> {
                sqlx::Row::try_get(self, name).map_err(StoreError::backend)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
store_row!(sqlx::sqlite::SqliteRow);
#[cfg(feature = "postgres")]
store_row!(sqlx::postgres::PgRow);

fn time(nanos: i64, name: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(|_| malformed(name))
}

fn time_column(row: &impl StoreRow, name: &'static str) -> Result<OffsetDateTime, StoreError> {
    time(row.int(name)?, name)
}

fn time_column_opt(
    row: &impl StoreRow,
    name: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    row.int_opt(name)?.map(|n| time(n, name)).transpose()
}

fn uuid_column(row: &impl StoreRow, name: &'static str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(&row.text(name)?).map_err(|_| malformed(name))
}

/// A [`TokenRecord`] from a row with the token columns.
pub(super) fn token_record(row: &impl StoreRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: TokenId(uuid_column(row, "id")?),
        user_id: UserId(uuid_column(row, "user_id")?),
        hash: TokenHash::from_hex(&row.text("hash")?).map_err(|_| malformed("hash"))?,
        hint: row.text("hint")?,
        issued_at: time_column(row, "issued_at")?,
        expires_at: time_column_opt(row, "expires_at")?,
        revoked_at: time_column_opt(row, "revoked_at")?,
        last_used_at: time_column_opt(row, "last_used_at")?,
    })
}

/// A [`User`] from a row with the user columns.
pub(super) fn user(row: &impl StoreRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId(uuid_column(row, "id")?),
        username: row.text("username")?,
        roles: serde_json::from_str(&row.text("roles")?).map_err(|_| malformed("roles"))?,
        identity_provider: row.text("identity_provider")?,
    })
}
