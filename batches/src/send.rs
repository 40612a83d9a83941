//! Sending a released batch to a GSMA MMAPI provider, exactly once, and resuming after a crash.
//!
//! [`Batches::send`] works in three phases, each safe to interrupt at any await point (a
//! killed sender leaves only committed steps behind, and the next `send` carries on):
//!
//! 1. **Record.** The batch's pending lines are split into provider batches of at most
//!    [`SendOptions::lines_per_request`] lines; each becomes a `payment_attempts` row with a
//!    fresh correlation id (the `X-CorrelationID`), its lines move to `in_flight`, the batch to
//!    `sending`, all in one transaction with the audit event, *before* anything is sent.
//! 2. **Submit.** For each attempt not yet known to the provider: if it may have been sent
//!    before (a try is recorded), ask `GET /responses/{correlationId}` first; otherwise (or
//!    when the provider says it has no such request) record the try, then
//!    `POST /batchtransactions` with the *same* correlation id. A 202 or a `duplicateRequest`
//!    answer means the provider has it; a timeout or 5xx is followed by
//!    `GET /responses/{correlationId}` before anything else. A request the provider refuses
//!    outright (4xx validation) fails its lines; 401/403 stop the send with nothing failed.
//!    After [`SendOptions::max_tries`] undetermined tries the attempt and its lines are
//!    `unknown`: counted, listed, never retried until someone runs `send` again (which asks
//!    the provider first).
//! 3. **Settle.** For each accepted attempt: poll `GET /requeststates/{serverCorrelationId}`
//!    until the request completes, read `GET /batchtransactions/{batchId}` until the completed
//!    and rejected counts add up to the lines sent, page through `/completions` and
//!    `/rejections`, and apply the outcomes ([`crate::outcomes`]). Lines the provider has not
//!    resolved by [`SendOptions::settle_timeout`] become `unknown`.
//!
//! Re-sending is only ever with the same correlation id, which a GSMA provider refuses as a
//! `duplicateRequest`, and every ledger posting has a key derived from the line: so even two
//! senders running at once pay nothing twice. The database's one-live-line-per-entitlement
//! index makes a second payment of an entitlement impossible whatever the code does.

use std::time::Duration;

use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_providers::gsma::{
    rejection_code, BatchStatus, BatchTransactionRequest, Party, RequestStatus, ServiceStatus,
    Transaction,
};
use cva_registry::{read_pool, write_tx, RegistryError};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::mmapi::{CallError, MmapiClient};
use crate::outcomes::{failure_code, Applied, LineOutcome, Outcome};

use crate::provider::AdapterKind;
use crate::{now, BatchView, Batches, Provider, Result};

/// How a send behaves. The defaults suit a real provider; tests shorten the times.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Time limit of each HTTP call.
    pub request_timeout: Duration,
    /// Pause between two polls of a request state or batch.
    pub poll_interval: Duration,
    /// How long to wait for the provider to resolve every line before the rest are `unknown`.
    pub settle_timeout: Duration,
    /// Undetermined `POST` tries (timeouts, 5xx with no record at the provider) before an
    /// attempt is left `unknown`.
    pub max_tries: u32,
    /// Most lines per provider batch request.
    pub lines_per_request: usize,
    /// `X-Callback-URL` to give the provider (callbacks only wake polling; they never move
    /// money).
    pub callback_url: Option<String>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            settle_timeout: Duration::from_secs(600),
            max_tries: 3,
            lines_per_request: 5000,
            callback_url: None,
        }
    }
}

/// One submission to the provider, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    pub id: i64,
    pub correlation_id: String,
    pub status: String,
    pub line_count: i64,
    pub tries: i64,
    pub provider_batch_id: Option<String>,
    pub last_error: Option<String>,
}

/// What a send (or resume) achieved.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendReport {
    pub batch: BatchView,
    pub attempts: Vec<AttemptView>,
    /// Outcomes applied by this run.
    pub applied: Applied,
    /// Lines by status after the run.
    pub completed: i64,
    pub failed: i64,
    pub unknown: i64,
    pub in_flight: i64,
    /// Completions or rejections the provider listed that match no open line of the attempt
    /// (a reference we did not send, or a second answer for one line): reported, never paid.
    pub anomalies: Vec<String>,
}

type AttemptRow = (
    i64,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Batches {
    /// Sends a released batch, or resumes one already `sending` (see the module docs). Only
    /// for providers with the `gsma-mmapi` adapter.
    pub async fn send(
        &self,
        id: i64,
        opts: &SendOptions,
        ctx: &AuditContext,
    ) -> Result<SendReport> {
        let b = self.batch(id).await?;
        if !matches!(
            b.status.as_str(),
            "released" | "sending" | "completed" | "partially_completed" | "failed"
        ) {
            return Err(RegistryError::Conflict(format!(
                "batch {id} is {}; only a released batch is sent",
                b.status
            )));
        }
        let provider = self.provider_of(&b)?.clone();
        if provider.adapter != AdapterKind::GsmaMmapi {
            return Err(RegistryError::Conflict(format!(
                "provider `{}` takes files: export the batch and import the result file",
                provider.name
            )));
        }
        let client = client_for(&provider, opts)?;
        if b.status == "released" {
            // Asking first costs one call and keeps a down provider from taking the batch.
            match client.heartbeat().await {
                Ok(ServiceStatus::Unavailable) => {
                    return Err(RegistryError::Provider(format!(
                        "`{}` reports it is unavailable; nothing was sent, try again later",
                        provider.name
                    )))
                }
                Ok(ServiceStatus::Degraded) => {
                    tracing::warn!(provider = %provider.name, "provider reports degraded service");
                }
                Ok(ServiceStatus::Available) => {}
                Err(e) => tracing::warn!(provider = %provider.name, error = %e, "heartbeat failed"),
            }
            self.record_attempts(&b, opts.lines_per_request, ctx)
                .await?;
        }
        let mut anomalies = Vec::new();
        let mut applied = Applied::default();
        // Submit every attempt first (the provider works while we post the next), then settle.
        for a in self.attempts(id).await? {
            if matches!(a.status.as_str(), "recorded" | "unknown") {
                self.submit_attempt(&b, &provider, &client, &a, opts, ctx)
                    .await?;
            }
        }
        for a in self.attempts(id).await? {
            if a.status == "accepted" {
                let got = self
                    .settle(&b, &client, &a, opts, ctx, &mut anomalies)
                    .await?;
                applied.completed += got.completed;
                applied.failed += got.failed;
                applied.unknown += got.unknown;
                applied.already_resolved += got.already_resolved;
            }
        }
        self.settle_status(id, ctx).await?;
        let counts = self.line_counts(id).await?;
        Ok(SendReport {
            batch: self.batch(id).await?,
            attempts: self.attempts(id).await?,
            applied,
            completed: counts.0,
            failed: counts.1,
            unknown: counts.2,
            in_flight: counts.3,
            anomalies,
        })
    }

    /// Asks the provider about every completed line of a sent batch
    /// (`GET /transactions/{id}`, eight at a time) and books those it has reversed since
    /// ([`Batches::record_reversal`]: the money is back in the float and owed to the household
    /// again). Returns the reversed line ids. Lines the provider cannot be asked about now are
    /// skipped (logged) and asked about next time.
    pub async fn check_reversals(
        &self,
        id: i64,
        opts: &SendOptions,
        ctx: &AuditContext,
    ) -> Result<Vec<i64>> {
        use futures::StreamExt;
        let b = self.batch(id).await?;
        let provider = self.provider_of(&b)?.clone();
        if provider.adapter != AdapterKind::GsmaMmapi {
            return Err(RegistryError::Conflict(format!(
                "provider `{}` takes files: its reversals come with its statement",
                provider.name
            )));
        }
        let client = client_for(&provider, opts)?;
        let completed: Vec<(i64, String)> = self
            .lines(id)
            .await?
            .into_iter()
            .filter(|l| l.status == "completed")
            .filter_map(|l| l.provider_transaction_id.map(|t| (l.id, t)))
            .collect();
        let answers: Vec<(i64, std::result::Result<String, CallError>)> =
            futures::stream::iter(completed)
                .map(|(line, tx)| {
                    let client = client.clone();
                    async move {
                        let status = client.transaction(&tx).await.map(|t| t.transaction_status);
                        (line, status)
                    }
                })
                .buffered(8)
                .collect()
                .await;
        let mut reversed = Vec::new();
        for (line, status) in answers {
            match status {
                Ok(s) if s.eq_ignore_ascii_case("reversed") => {
                    self.record_reversal(line, ctx).await?;
                    reversed.push(line);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(batch = id, line, error = %e, "transaction not read"),
            }
        }
        Ok(reversed)
    }

    /// Phase 1: attempts and in-flight lines, committed before anything is sent.
    async fn record_attempts(&self, b: &BatchView, per: usize, ctx: &AuditContext) -> Result<()> {
        let per = per.clamp(1, 100_000);
        let at = now();
        let adapter = "gsma-mmapi";
        write_tx!(self.registry.ledger(), |tx| {
            let moved = sqlx::query(
                "UPDATE batches SET status = 'sending', status_changed_at = $1 WHERE id = $2 AND status = 'released'",
            )
            .bind(at)
            .bind(b.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                // Another sender recorded them first: resume what it recorded.
                return Ok(());
            }
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM batch_lines WHERE batch_id = $1 AND status = 'pending' ORDER BY id",
            )
            .bind(b.id)
            .fetch_all(&mut *tx)
            .await?;
            let mut correlations = Vec::new();
            for chunk in ids.chunks(per) {
                let correlation = Uuid::new_v4().to_string();
                let attempt: i64 = sqlx::query_scalar(
                    "INSERT INTO payment_attempts (batch_id, correlation_id, adapter, line_count, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
                )
                .bind(b.id)
                .bind(&correlation)
                .bind(adapter)
                .bind(chunk.len() as i64)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
                let (first, last) = (chunk[0], chunk[chunk.len() - 1]);
                let n = sqlx::query(
                    "UPDATE batch_lines SET status = 'in_flight', attempt_id = $1 \
                     WHERE batch_id = $2 AND status = 'pending' AND id >= $3 AND id <= $4",
                )
                .bind(attempt)
                .bind(b.id)
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != chunk.len() as u64 {
                    return Err(RegistryError::Conflict(format!(
                        "batch {} changed while its lines were being recorded",
                        b.id
                    )));
                }
                correlations.push(correlation);
            }
            let rec = AuditRecord::new(
                ctx,
                "batch.send",
                "batch",
                b.id.to_string(),
                serde_json::json!({"attempts": correlations, "lines": ids.len()}),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        Ok(())
    }

    /// The attempts of a batch, oldest first.
    pub async fn attempts(&self, id: i64) -> Result<Vec<AttemptView>> {
        let rows: Vec<AttemptRow> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT id, correlation_id, status, CAST(line_count AS BIGINT), CAST(tries AS BIGINT), \
                 server_correlation_id, provider_batch_id, last_error \
                 FROM payment_attempts WHERE batch_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| AttemptView {
                id: r.0,
                correlation_id: r.1,
                status: r.2,
                line_count: r.3,
                tries: r.4,
                provider_batch_id: r.6,
                last_error: r.7,
            })
            .collect())
    }

    async fn server_correlation(&self, attempt: i64) -> Result<Option<String>> {
        Ok(read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT server_correlation_id FROM payment_attempts WHERE id = $1",
            )
            .bind(attempt)
            .fetch_one(pool)
            .await?
        }))
    }

    /// (completed, failed, unknown, in_flight + pending) lines of a batch.
    pub async fn line_counts(&self, id: i64) -> Result<(i64, i64, i64, i64)> {
        let counts: Vec<(String, i64)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT status, CAST(count(*) AS BIGINT) FROM batch_lines WHERE batch_id = $1 GROUP BY status",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        let n = |s: &str| counts.iter().find(|c| c.0 == s).map_or(0, |c| c.1);
        Ok((
            n("completed"),
            n("failed"),
            n("unknown"),
            n("in_flight") + n("pending"),
        ))
    }

    /// Writes an attempt's new state (and audit event) in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn set_attempt(
        &self,
        b: &BatchView,
        a: &AttemptView,
        status: &str,
        tries_inc: i64,
        server: Option<&str>,
        provider_batch: Option<&str>,
        error: Option<&str>,
        ctx: &AuditContext,
    ) -> Result<()> {
        let at = now();
        write_tx!(self.registry.ledger(), |tx| {
            sqlx::query(
                "UPDATE payment_attempts SET status = $1, tries = tries + $2, \
                 server_correlation_id = COALESCE($3, server_correlation_id), \
                 provider_batch_id = COALESCE($4, provider_batch_id), last_error = $5, updated_at = $6 \
                 WHERE id = $7",
            )
            .bind(status)
            .bind(tries_inc)
            .bind(server)
            .bind(provider_batch)
            .bind(error)
            .bind(at)
            .bind(a.id)
            .execute(&mut *tx)
            .await?;
            if status == "unknown" {
                sqlx::query(
                    "UPDATE batch_lines SET status = 'unknown' WHERE attempt_id = $1 AND status = 'in_flight'",
                )
                .bind(a.id)
                .execute(&mut *tx)
                .await?;
            }
            let action = if tries_inc > 0 {
                "batch.attempt.try".to_owned()
            } else {
                format!("batch.attempt.{status}")
            };
            let rec = AuditRecord::new(
                ctx,
                &action,
                "batch",
                b.id.to_string(),
                serde_json::json!({"attempt": a.id, "correlation_id": a.correlation_id,
                    "status": status, "provider_batch_id": provider_batch, "error": error}),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        Ok(())
    }

    /// Phase 2 for one attempt: get it to the provider exactly once, or leave it `unknown`.
    async fn submit_attempt(
        &self,
        b: &BatchView,
        provider: &Provider,
        client: &MmapiClient,
        a: &AttemptView,
        opts: &SendOptions,
        ctx: &AuditContext,
    ) -> Result<()> {
        let correlation = Uuid::parse_str(&a.correlation_id)
            .map_err(|_| RegistryError::Corrupt(format!("attempt {} correlation id", a.id)))?;
        let mut tries_left = opts.max_tries.max(1);
        let mut may_have_been_sent = a.tries > 0;
        let mut last_error = String::new();
        let mut body = None;
        loop {
            if may_have_been_sent {
                match client.batch_for(correlation).await {
                    Ok(Some(batch_id)) => {
                        return self
                            .set_attempt(b, a, "accepted", 0, None, Some(&batch_id), None, ctx)
                            .await;
                    }
                    Ok(None) => {} // The provider never took it: sending again is safe.
                    Err(e) => {
                        // Cannot tell: do not send again blindly.
                        last_error = e.to_string();
                        tries_left = tries_left.saturating_sub(1);
                        if tries_left == 0 {
                            break;
                        }
                        tokio::time::sleep(opts.poll_interval).await;
                        continue;
                    }
                }
            }
            if tries_left == 0 {
                break;
            }
            let request = match &body {
                Some(r) => r,
                None => body.insert(self.request_for(b, provider, a.id).await?),
            };
            // Recorded before it leaves: after a crash from here on, the next run asks first.
            self.set_attempt(b, a, "recorded", 1, None, None, None, ctx)
                .await?;
            may_have_been_sent = true;
            tries_left -= 1;
            match client
                .post_batch(correlation, request, opts.callback_url.as_deref())
                .await
            {
                Ok(state) => {
                    return self
                        .set_attempt(
                            b,
                            a,
                            "accepted",
                            0,
                            Some(&state.server_correlation_id),
                            state.object_reference.as_deref(),
                            None,
                            ctx,
                        )
                        .await;
                }
                Err(e) if e.code() == Some("duplicateRequest") => {
                    // Already submitted under this correlation id: ask where it is (loop).
                    last_error = e.to_string();
                }
                Err(e) if e.is_uncertain() => {
                    last_error = e.to_string();
                    tracing::warn!(batch = b.id, attempt = a.id, error = %e, "send uncertain; asking the provider");
                }
                Err(e) if matches!(e.status(), Some(401 | 403)) => {
                    let msg = format!(
                        "`{}` refused our credentials ({e}); nothing was sent; fix the credentials and send again",
                        provider.name
                    );
                    self.set_attempt(b, a, "recorded", 0, None, None, Some(&msg), ctx)
                        .await?;
                    return Err(RegistryError::Provider(msg));
                }
                Err(e) => {
                    // The provider refused the whole request: nothing was paid.
                    let code = e.code().unwrap_or("requestRefused").to_owned();
                    self.refuse_attempt(b, a, &code, &e.to_string(), ctx)
                        .await?;
                    return Ok(());
                }
            }
            tokio::time::sleep(opts.poll_interval).await;
        }
        tracing::warn!(batch = b.id, attempt = a.id, "attempt left unknown");
        self.set_attempt(b, a, "unknown", 0, None, None, Some(&last_error), ctx)
            .await
    }

    /// The provider refused a whole request (nothing paid): its open lines fail with the
    /// error's code, then the attempt is marked `refused`. In that order: a crash between the
    /// two leaves an attempt the next run asks about again, never open lines under a refused
    /// attempt that no run would look at.
    async fn refuse_attempt(
        &self,
        b: &BatchView,
        a: &AttemptView,
        gsma_code: &str,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<Applied> {
        let outcomes: Vec<LineOutcome> = self
            .open_lines(a.id)
            .await?
            .into_iter()
            .map(|line| LineOutcome {
                line,
                // The whole request was refused: a line-level code (`invalid_msisdn` for a
                // `formatError`) would blame the household for what is a request problem.
                outcome: Outcome::Failed {
                    code: "request_refused".to_owned(),
                    reason: format!("{gsma_code}: {reason}"),
                },
            })
            .collect();
        let applied = self.apply_outcomes(b, &outcomes, "provider", ctx).await?;
        self.set_attempt(b, a, "refused", 0, None, None, Some(reason), ctx)
            .await?;
        Ok(applied)
    }

    async fn open_lines(&self, attempt: i64) -> Result<Vec<i64>> {
        Ok(read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_scalar(
                "SELECT id FROM batch_lines WHERE attempt_id = $1 AND status IN ('in_flight', 'unknown') ORDER BY id",
            )
            .bind(attempt)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The GSMA request for an attempt's lines: one `disbursement` per line, amount in major
    /// units as a string, the household's phone as the `msisdn` credit party, our line id as
    /// `requestingOrganisationTransactionReference`.
    pub async fn request_for(
        &self,
        b: &BatchView,
        provider: &Provider,
        attempt: i64,
    ) -> Result<BatchTransactionRequest> {
        let rows: Vec<(i64, i64, Option<String>)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT l.id, l.amount, h.msisdn FROM batch_lines l JOIN households h ON h.id = l.household_id \
                 WHERE l.attempt_id = $1 ORDER BY l.id",
            )
            .bind(attempt)
            .fetch_all(pool)
            .await?
        });
        let exponent = provider.currency.exponent();
        let mut transactions = Vec::with_capacity(rows.len());
        for (line, amount, sealed) in rows {
            let sealed = sealed.ok_or_else(|| {
                RegistryError::Corrupt(format!("line {line}: the household has no phone number"))
            })?;
            let msisdn = self.registry.open_msisdn(&sealed)?;
            transactions.push(Transaction {
                transaction_type: "disbursement".into(),
                amount: Decimal::new(amount, exponent).normalize().to_string(),
                currency: provider.currency.code().to_owned(),
                credit_party: vec![Party::msisdn(msisdn)],
                debit_party: Some(vec![Party {
                    key: provider.debit_party.key.clone(),
                    value: provider.debit_party.value.clone(),
                }]),
                requesting_organisation_transaction_reference: Some(line.to_string()),
                description_text: None,
            });
        }
        Ok(BatchTransactionRequest {
            batch_title: Some(format!("{} batch {} attempt {attempt}", b.programme, b.id)),
            batch_description: Some(format!("Cash assistance, {} lines", transactions.len())),
            transactions,
        })
    }

    /// Phase 3 for one accepted attempt.
    async fn settle(
        &self,
        b: &BatchView,
        client: &MmapiClient,
        a: &AttemptView,
        opts: &SendOptions,
        ctx: &AuditContext,
        anomalies: &mut Vec<String>,
    ) -> Result<Applied> {
        let deadline = tokio::time::Instant::now() + opts.settle_timeout;
        let mut provider_batch = a.provider_batch_id.clone();
        // Learn the provider's batch id from the request state when the 202 did not carry it.
        while provider_batch.is_none() {
            let Some(server) = self.server_correlation(a.id).await? else {
                return Err(RegistryError::Corrupt(format!(
                    "attempt {} is accepted without any provider id",
                    a.id
                )));
            };
            match client.request_state(&server).await {
                Ok(state) if state.status == RequestStatus::Completed => {
                    if let Some(id) = state.object_reference {
                        self.set_attempt(b, a, "accepted", 0, None, Some(&id), None, ctx)
                            .await?;
                        provider_batch = Some(id);
                    }
                }
                Ok(state) if state.status == RequestStatus::Failed => {
                    let reason = state
                        .error
                        .as_ref()
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e.error_code,
                                e.error_description.as_deref().unwrap_or("")
                            )
                        })
                        .unwrap_or_else(|| "request failed".into());
                    let code = state
                        .error
                        .as_ref()
                        .map_or("requestFailed", |e| e.error_code.as_str())
                        .to_owned();
                    return self.refuse_attempt(b, a, &code, &reason, ctx).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(attempt = a.id, error = %e, "request state not read"),
            }
            if provider_batch.is_none() {
                if tokio::time::Instant::now() >= deadline {
                    return self.leave_unknown(b, a, ctx).await;
                }
                tokio::time::sleep(opts.poll_interval).await;
            }
        }
        let provider_batch = provider_batch.unwrap_or_default();
        // Wait until the provider has an answer for every line, or the deadline.
        let complete = loop {
            match client.batch(&provider_batch).await {
                Ok(pb) => {
                    let resolved = i64::from(pb.completed_count) + i64::from(pb.rejection_count);
                    if resolved >= a.line_count
                        || (pb.batch_status == BatchStatus::Completed && !pb.processing_flag)
                    {
                        break true;
                    }
                }
                Err(e) => tracing::warn!(attempt = a.id, error = %e, "provider batch not read"),
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(opts.poll_interval).await;
        };
        let (completions, rejections) = match tokio::try_join!(
            client.completions(&provider_batch),
            client.rejections(&provider_batch)
        ) {
            Ok(x) => x,
            Err(e) => {
                // Could not read the outcomes now; the lines stay in flight for the next run.
                tracing::warn!(attempt = a.id, error = %e, "outcomes not read");
                return Ok(Applied::default());
            }
        };
        let open: std::collections::HashSet<i64> =
            self.open_lines(a.id).await?.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        let mut outcomes = Vec::new();
        let reference =
            |r: &Option<String>| r.as_deref().and_then(|s| s.trim().parse::<i64>().ok());
        for c in &completions {
            match reference(&c.requesting_organisation_transaction_reference) {
                Some(line) if open.contains(&line) && seen.insert(line) => {
                    outcomes.push(LineOutcome {
                        line,
                        outcome: Outcome::Completed {
                            provider_tx: c.transaction_reference.clone(),
                        },
                    })
                }
                Some(line) if seen.contains(&line) => anomalies.push(format!(
                    "provider batch {provider_batch}: line {line} has a second answer (transaction {})",
                    c.transaction_reference
                )),
                _ => {}
            }
        }
        for r in &rejections {
            match reference(&r.requesting_organisation_transaction_reference) {
                Some(line) if open.contains(&line) && seen.insert(line) => {
                    let code = rejection_code(&r.rejection_reason);
                    outcomes.push(LineOutcome {
                        line,
                        outcome: Outcome::Failed {
                            code: failure_code(code).to_owned(),
                            reason: r.rejection_reason.clone(),
                        },
                    })
                }
                Some(line) if seen.contains(&line) => anomalies.push(format!(
                    "provider batch {provider_batch}: line {line} is both paid and rejected"
                )),
                _ => {}
            }
        }
        // Whatever the provider has not answered by the deadline, or leaves out of a batch it
        // calls complete, cannot be determined now.
        let unanswered: Vec<i64> = open
            .iter()
            .copied()
            .filter(|line| !seen.contains(line))
            .collect();
        if complete && !unanswered.is_empty() {
            anomalies.push(format!(
                "provider batch {provider_batch} is complete but has no answer for {} line(s); they are unknown",
                unanswered.len()
            ));
        }
        outcomes.extend(unanswered.into_iter().map(|line| LineOutcome {
            line,
            outcome: Outcome::Unknown,
        }));
        let applied = self.apply_outcomes(b, &outcomes, "provider", ctx).await?;
        if self.open_lines(a.id).await?.is_empty() {
            self.set_attempt(b, a, "settled", 0, None, None, None, ctx)
                .await?;
        }
        Ok(applied)
    }

    async fn leave_unknown(
        &self,
        b: &BatchView,
        a: &AttemptView,
        ctx: &AuditContext,
    ) -> Result<Applied> {
        let outcomes: Vec<LineOutcome> = self
            .open_lines(a.id)
            .await?
            .into_iter()
            .map(|line| LineOutcome {
                line,
                outcome: Outcome::Unknown,
            })
            .collect();
        self.apply_outcomes(b, &outcomes, "provider", ctx).await
    }
}

fn client_for(provider: &Provider, opts: &SendOptions) -> Result<MmapiClient> {
    let base = provider.base_url.as_deref().ok_or_else(|| {
        RegistryError::invalid(
            "base_url",
            format!("provider `{}` has no base_url", provider.name),
        )
    })?;
    let token = match &provider.credentials {
        Some(c) => Some(c.secret().map_err(|e| {
            RegistryError::Provider(format!("credentials of `{}`: {e}", provider.name))
        })?),
        None => None,
    };
    MmapiClient::new(base, token, opts.request_timeout)
        .map_err(|e: CallError| RegistryError::Provider(e.to_string()))
}
