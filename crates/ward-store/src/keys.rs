//! Data-key and blind-index-key set-up: keys live in `wrapped_key`, wrapped by the KEK.

use sqlx::{AnyPool, Row};
use ward_crypto::{BlindIndexer, DataKey, Envelope, Kek};

use crate::StoreError;

pub(crate) const PURPOSE_DATA: &str = "data";
pub(crate) const PURPOSE_INDEX: &str = "index";

struct WrappedKey {
    purpose: String,
    epoch: u32,
    wrapped: Vec<u8>,
}

async fn read_keys(pool: &AnyPool) -> Result<Vec<WrappedKey>, StoreError> {
    let rows = sqlx::query("SELECT purpose, epoch, wrapped FROM wrapped_key ORDER BY purpose, epoch")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let epoch: i64 = r.try_get("epoch")?;
            Ok(WrappedKey {
                purpose: r.try_get("purpose")?,
                epoch: u32::try_from(epoch)
                    .map_err(|_| StoreError::Corrupt("key epoch out of range".into()))?,
                wrapped: r.try_get("wrapped")?,
            })
        })
        .collect()
}

/// Loads the wrapped keys; creates epoch 1 of each purpose if absent. Inserts use
/// ON CONFLICT DO NOTHING and the keys are re-read, so nodes racing on one database agree.
pub(crate) async fn load_or_create(
    pool: &AnyPool,
    kek: &Kek,
) -> Result<(Envelope, BlindIndexer), StoreError> {
    let mut keys = read_keys(pool).await?;
    let mut inserted = false;
    for purpose in [PURPOSE_DATA, PURPOSE_INDEX] {
        if !keys.iter().any(|k| k.purpose == purpose) {
            let key = DataKey::generate()?;
            let wrapped = kek.wrap(&key)?;
            sqlx::query(
                "INSERT INTO wrapped_key (purpose, epoch, wrapped, created_at) VALUES ($1, 1, $2, $3) \
                 ON CONFLICT (purpose, epoch) DO NOTHING",
            )
            .bind(purpose)
            .bind(wrapped)
            .bind(crate::format_instant(time::OffsetDateTime::now_utc()))
            .execute(pool)
            .await?;
            inserted = true;
        }
    }
    if inserted {
        keys = read_keys(pool).await?;
    }

    let mut data = Vec::new();
    let mut index: Option<(u32, DataKey)> = None;
    for k in &keys {
        // The only cause in practice: another deployment's keys/ (the wrapped keys were
        // made under the KEK of the `ward init` that created this database).
        let key = kek.unwrap(&k.wrapped).map_err(|e| match e {
            ward_crypto::Error::Unwrap => StoreError::OtherKek,
            other => other.into(),
        })?;
        match k.purpose.as_str() {
            PURPOSE_DATA => data.push((k.epoch, key)),
            PURPOSE_INDEX if index.as_ref().is_none_or(|(e, _)| k.epoch > *e) => {
                index = Some((k.epoch, key));
            }
            _ => {}
        }
    }
    let current = data
        .iter()
        .map(|(e, _)| *e)
        .max()
        .ok_or_else(|| StoreError::Corrupt("no data key".into()))?;
    let (_, index_key) = index.ok_or_else(|| StoreError::Corrupt("no index key".into()))?;
    Ok((Envelope::new(data, current)?, BlindIndexer::new(index_key)))
}
