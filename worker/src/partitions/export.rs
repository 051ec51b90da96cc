//! Exporting a detached partition to S3 before it is dropped (`EXPORT_BUCKET`): one object
//! per partition, JSON Lines compressed with gzip, streamed from `COPY` through the encoder
//! into a multipart upload (parts of 8 MiB, so memory stays flat whatever the partition's
//! size). The table no longer changes once detached, so its row count, taken first, is the
//! truth the export is checked against before the drop: the lines streamed, and the object's
//! size and `rows` metadata as S3 reports them (HeadObject). Any mismatch keeps the table.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use sqlx::PgConnection;
use tokio_stream::StreamExt as _;

/// Compressed bytes per uploaded part (S3's least is 5 MiB, but for the last).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Where exports go.
#[derive(Debug, Clone)]
pub(crate) struct Exporter {
    /// The S3 client.
    pub(crate) s3: aws_sdk_s3::Client,
    /// `EXPORT_BUCKET`.
    pub(crate) bucket: String,
    /// `EXPORT_PREFIX`, prepended to every key.
    pub(crate) prefix: String,
}

/// One finished export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exported {
    /// The object's key.
    pub(crate) key: String,
    /// Rows (lines) in it.
    pub(crate) rows: i64,
    /// Its size, compressed.
    pub(crate) bytes: i64,
}

/// The object key of partition `name` whose range starts at `from`:
/// `{prefix}webhook_events/2026/08/webhook_events_p20260801.jsonl.gz`.
pub(crate) fn object_key(prefix: &str, name: &str, from: Option<DateTime<Utc>>) -> String {
    let folder = from.map_or_else(
        || "legacy".to_owned(),
        |from| from.format("%Y/%m").to_string(),
    );
    format!("{prefix}webhook_events/{folder}/{name}.jsonl.gz")
}

/// The query whose lines are the export: one JSON object per row (the body exact, in
/// base64), through CSV with a quote and a delimiter that JSON text never holds raw, so
/// each line is the JSON text as it is (text COPY would double its backslashes).
fn copy_statement(name: &str) -> String {
    format!(
        "COPY (SELECT json_build_object('source', source, 'id', id, 'received_at', received_at,
                  'stored_at', stored_at, 'headers', headers, 'content_type', content_type,
                  'body_base64', translate(encode(body, 'base64'), E'\\n', ''))::text
              FROM ONLY \"{name}\")
         TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
    )
}

impl Exporter {
    /// Exports the detached table `name` (range starting at `from`) and checks the object.
    pub(crate) async fn export(
        &self,
        conn: &mut PgConnection,
        name: &str,
        from: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Exported> {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ONLY \"{name}\""))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("counting the rows of {name}"))?;
        let key = object_key(&self.prefix, name, from);
        let upload = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .metadata("rows", rows.to_string())
            .metadata("partition", name)
            .send()
            .await
            .with_context(|| format!("starting the upload of s3://{}/{key}", self.bucket))?;
        let upload_id = upload
            .upload_id()
            .context("S3 gave no upload id")?
            .to_owned();
        let streamed = self.stream(conn, name, &key, &upload_id).await;
        let (lines, bytes, parts) = match streamed {
            Ok(streamed) => streamed,
            Err(error) => {
                let _ = self
                    .s3
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(error);
            }
        };
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("completing the upload of s3://{}/{key}", self.bucket))?;
        if lines != rows {
            bail!("{name} has {rows} rows but {lines} lines were exported; the table is kept");
        }
        let head = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .with_context(|| format!("checking s3://{}/{key}", self.bucket))?;
        let stored_rows = head.metadata().and_then(|m| m.get("rows")).cloned();
        if head.content_length() != Some(bytes) || stored_rows != Some(rows.to_string()) {
            bail!(
                "s3://{}/{key} holds {:?} bytes and rows {stored_rows:?}, not {bytes} bytes and {rows} rows; the table is kept",
                self.bucket,
                head.content_length()
            );
        }
        Ok(Exported { key, rows, bytes })
    }

    /// Streams the rows through gzip into the upload's parts; returns the lines, the
    /// compressed bytes and the parts.
    async fn stream(
        &self,
        conn: &mut PgConnection,
        name: &str,
        key: &str,
        upload_id: &str,
    ) -> anyhow::Result<(i64, i64, Vec<CompletedPart>)> {
        let mut encoder = GzEncoder::new(Vec::with_capacity(PART_BYTES), Compression::default());
        let mut parts = Vec::new();
        let (mut lines, mut bytes) = (0_i64, 0_i64);
        let mut copy = conn
            .copy_out_raw(&copy_statement(name))
            .await
            .with_context(|| format!("starting COPY of {name}"))?;
        while let Some(chunk) = copy.next().await {
            let chunk = chunk.with_context(|| format!("reading {name}"))?;
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as i64;
            encoder.write_all(&chunk)?;
            if encoder.get_ref().len() >= PART_BYTES {
                let part = std::mem::replace(encoder.get_mut(), Vec::with_capacity(PART_BYTES));
                bytes += part.len() as i64;
                parts.push(
                    self.upload_part(key, upload_id, parts.len() + 1, part)
                        .await?,
                );
            }
        }
        drop(copy);
        let last = encoder.finish()?;
        bytes += last.len() as i64;
        parts.push(
            self.upload_part(key, upload_id, parts.len() + 1, last)
                .await?,
        );
        Ok((lines, bytes, parts))
    }

    /// Uploads part `number`.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: usize,
        body: Vec<u8>,
    ) -> anyhow::Result<CompletedPart> {
        let number = i32::try_from(number).context("more than 2^31 parts")?;
        let uploaded = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(Bytes::from(body)))
            .send()
            .await
            .with_context(|| format!("uploading part {number} of s3://{}/{key}", self.bucket))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(uploaded.e_tag().map(str::to_owned))
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_partitions_by_month() {
        let from = "2026-08-01T00:00:00Z".parse().ok();
        assert_eq!(
            object_key("archive/", "webhook_events_p20260801", from),
            "archive/webhook_events/2026/08/webhook_events_p20260801.jsonl.gz"
        );
        assert_eq!(
            object_key("", "webhook_events_legacy", None),
            "webhook_events/legacy/webhook_events_legacy.jsonl.gz"
        );
    }

    #[test]
    fn the_copy_reads_only_the_detached_table_as_csv_lines() {
        let sql = copy_statement("webhook_events_p20260801");
        assert!(
            sql.contains("FROM ONLY \"webhook_events_p20260801\""),
            "{sql}"
        );
        assert!(sql.contains("FORMAT csv"), "{sql}");
    }
}
