//! Bulk loading of `metric_samples` with PostgreSQL's `COPY ... FROM STDIN`, in text format, sent
//! in buffers of about a mebibyte so memory stays flat whatever the number of samples.

use std::fmt::Write as _;

use anyhow::Context;
use sqlx::PgConnection;
use sqlx::postgres::PgCopyIn;
use uuid::Uuid;

use super::signals::Window;

/// Checking the primary key and foreign key row by row is most of a bulk load's cost; building
/// the index and validating the key once afterwards is several times faster. The seed only runs on
/// an empty database inside its own transaction, so no reader ever sees the table without them.
/// These must match the definitions in migrations/0001 (a seed test compares them).
const DROP_SAMPLE_CONSTRAINTS: &str = "ALTER TABLE metric_samples
    DROP CONSTRAINT metric_samples_series_fkey,
    DROP CONSTRAINT metric_samples_pkey";
const RESTORE_SAMPLE_CONSTRAINTS: &str = "ALTER TABLE metric_samples
    ADD CONSTRAINT metric_samples_pkey PRIMARY KEY (series_id, ts),
    ADD CONSTRAINT metric_samples_series_fkey FOREIGN KEY (organization_id, series_id)
        REFERENCES metric_series (organization_id, id)";

/// Buffers are sent once they reach this size.
const BUFFER_BYTES: usize = 1 << 20;

/// An open `COPY metric_samples` on one connection.
pub(crate) struct SampleCopy<'connection> {
    copy: PgCopyIn<&'connection mut PgConnection>,
    buffer: String,
    /// The text of every minute of the window, formatted once and shared by all series.
    timestamps: Vec<String>,
}

impl<'connection> SampleCopy<'connection> {
    pub(crate) async fn start(
        connection: &'connection mut PgConnection,
        window: &Window,
    ) -> anyhow::Result<Self> {
        let copy = connection
            .copy_in_raw("COPY metric_samples (organization_id, series_id, ts, value) FROM STDIN WITH (FORMAT text)")
            .await
            .context("start copying metric samples")?;
        let timestamps = (0..window.minutes)
            .map(|index| {
                window
                    .time_of(index)
                    .format("%Y-%m-%d %H:%M:%S+00")
                    .to_string()
            })
            .collect();
        Ok(Self {
            copy,
            buffer: String::with_capacity(BUFFER_BYTES + 64 * 1024),
            timestamps,
        })
    }

    /// Queues one series' samples, `values[i]` being minute `i` of the window.
    pub(crate) async fn write_series(
        &mut self,
        organization_id: Uuid,
        series_id: i64,
        values: &[f64],
    ) -> anyhow::Result<()> {
        debug_assert_eq!(values.len(), self.timestamps.len());
        let prefix = format!("{organization_id}\t{series_id}\t");
        for (timestamp, value) in self.timestamps.iter().zip(values) {
            // Display prints the shortest text that reads back as the same double, so the database
            // holds exactly the values the alerts were derived from.
            writeln!(self.buffer, "{prefix}{timestamp}\t{value}")
                .expect("writing to a String cannot fail");
            if self.buffer.len() >= BUFFER_BYTES {
                send(&mut self.copy, &mut self.buffer).await?;
            }
        }
        Ok(())
    }

    /// Sends what is left and ends the copy; returns the number of rows the server stored.
    pub(crate) async fn finish(mut self) -> anyhow::Result<u64> {
        send(&mut self.copy, &mut self.buffer).await?;
        self.copy
            .finish()
            .await
            .context("finish copying metric samples")
    }

    /// Ends the copy without storing anything, after a failure on our side.
    pub(crate) async fn abort(self, reason: &str) {
        // The transaction is rolled back anyway; this only leaves the connection usable.
        let _ = self.copy.abort(reason).await;
    }
}

/// Drops the samples' primary key and foreign key before a bulk load.
pub(crate) async fn defer_sample_constraints(connection: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query(DROP_SAMPLE_CONSTRAINTS)
        .execute(connection)
        .await
        .context("defer the metric samples' constraints")?;
    Ok(())
}

/// Re-creates them, which checks every loaded row at once.
pub(crate) async fn restore_sample_constraints(
    connection: &mut PgConnection,
) -> anyhow::Result<()> {
    sqlx::query(RESTORE_SAMPLE_CONSTRAINTS)
        .execute(connection)
        .await
        .context("restore the metric samples' constraints")?;
    Ok(())
}

/// Sends the buffered rows, if any, and empties the buffer.
async fn send(copy: &mut PgCopyIn<&mut PgConnection>, buffer: &mut String) -> anyhow::Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    copy.send(buffer.as_bytes())
        .await
        .context("send metric samples")?;
    buffer.clear();
    Ok(())
}
