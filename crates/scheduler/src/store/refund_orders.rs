//! Refunds an operator orders of Telegram Stars payments (migration
//! `0011_refund_orders`). The scheduler decides a refund but holds no bot
//! token, and Telegram lets only the bot that took a payment refund it, so
//! it records an order for that bot (known from `telegram_charges`, written
//! when the bot relayed the charge); the bot asks for its pending orders,
//! calls `refundStarPayment`, and reports the order done (through the
//! refund relay, which records the ledger's refund event once) or failed
//! with Telegram's error.

use async_trait::async_trait;

use tessera_core::{BotId, Millis, PaymentProvider, UserRef};

use super::payments::PaymentEventRecord;
use super::rows::corrupt;
use super::StoreError;

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundState {
    /// Waiting for its bot.
    Pending,
    /// Telegram refunded the charge.
    Done,
    /// Telegram refused; `error` says why. Ordering it again retries it.
    Failed,
}

impl RefundState {
    pub const fn as_str(self) -> &'static str {
        match self {
            RefundState::Pending => "pending",
            RefundState::Done => "done",
            RefundState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => RefundState::Pending,
            "done" => RefundState::Done,
            "failed" => RefundState::Failed,
            other => return Err(corrupt("refund state", other)),
        })
    }
}

/// A refund an operator ordered.
#[derive(Clone, Debug, PartialEq)]
pub struct RefundOrderRecord {
    pub id: i64,
    /// The ledger's id of the payment refunded.
    pub payment_id: i64,
    /// Telegram's `telegram_payment_charge_id`.
    pub charge_id: String,
    /// Who paid.
    pub user_ref: UserRef,
    /// The bot that took the payment, the only one that can refund it.
    pub bot_id: BotId,
    /// Stars to give back.
    pub amount_minor: i64,
    pub state: RefundState,
    /// Telegram's error, when it refused.
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What [`RefundOrders::order_refund`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderOutcome {
    /// A new order, pending.
    Ordered(RefundOrderRecord),
    /// The payment's failed order, pending again.
    Retried(RefundOrderRecord),
    /// The payment has an order pending or done: nothing changed.
    Exists(RefundOrderRecord),
}

/// Refund orders, and the bot behind each Stars charge.
#[async_trait]
pub trait RefundOrders {
    /// Records which bot relayed a Stars charge (the first one to say so).
    async fn record_charge_bot(
        &self,
        charge_id: &str,
        bot_id: &BotId,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// The bot that relayed a Stars charge, if known.
    async fn charge_bot(&self, charge_id: &str) -> Result<Option<BotId>, StoreError>;

    /// One ledger event by the ledger's own id.
    async fn payment_event_by_id(&self, id: i64) -> Result<Option<PaymentEventRecord>, StoreError>;

    /// One ledger event by its provider and the provider's event id.
    async fn payment_event_of(
        &self,
        provider: PaymentProvider,
        event_id: &str,
    ) -> Result<Option<PaymentEventRecord>, StoreError>;

    /// Orders the bot to refund a payment: once per payment; a failed order
    /// is made pending again.
    async fn order_refund(
        &self,
        payment: &PaymentEventRecord,
        user_ref: &UserRef,
        bot_id: &BotId,
        now: Millis,
    ) -> Result<OrderOutcome, StoreError>;

    /// The bot's pending orders, oldest first.
    async fn pending_refund_orders(
        &self,
        bot_id: &BotId,
        limit: u32,
    ) -> Result<Vec<RefundOrderRecord>, StoreError>;

    /// One order by id.
    async fn refund_order(&self, id: i64) -> Result<Option<RefundOrderRecord>, StoreError>;

    /// The charge was refunded: its orders, pending or failed, are done.
    async fn refund_orders_done(&self, charge_id: &str, now: Millis) -> Result<u64, StoreError>;

    /// Telegram refused the order's refund: a pending order becomes failed
    /// with the error. `None` when no such pending order is the bot's.
    async fn refund_order_failed(
        &self,
        id: i64,
        bot_id: &BotId,
        error: &str,
        now: Millis,
    ) -> Result<Option<RefundOrderRecord>, StoreError>;

    /// Orders, newest first, of one state or all.
    async fn refund_orders(
        &self,
        state: Option<RefundState>,
        limit: u32,
    ) -> Result<Vec<RefundOrderRecord>, StoreError>;
}

pub(crate) const ORDER_SELECT: &str = "SELECT id, payment_id, charge_id, user_ref, bot_id, \
    amount_minor, state, error, created_at, updated_at FROM refund_orders";

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    id: i64,
    payment_id: i64,
    charge_id: String,
    user_ref: String,
    bot_id: String,
    amount_minor: i64,
    state: String,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<OrderRow> for RefundOrderRecord {
    type Error = StoreError;

    fn try_from(r: OrderRow) -> Result<Self, StoreError> {
        Ok(RefundOrderRecord {
            id: r.id,
            payment_id: r.payment_id,
            charge_id: r.charge_id,
            user_ref: r
                .user_ref
                .parse()
                .map_err(|_| corrupt("user_ref", &r.user_ref))?,
            bot_id: r.bot_id.parse().map_err(|_| corrupt("bot_id", &r.bot_id))?,
            amount_minor: r.amount_minor,
            state: RefundState::parse(&r.state)?,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Implements [`RefundOrders`] for a backend with `writer()` and `reader()`
/// pools.
macro_rules! impl_refund_orders {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_core::{BotId, Millis, PaymentProvider, UserRef};

            use $crate::store::payments::{EventRow, EVENT_SELECT};
            use $crate::store::refund_orders::{OrderRow, ORDER_SELECT};
            use $crate::store::rows::corrupt;
            use $crate::store::{
                OrderOutcome, PaymentEventRecord, RefundOrderRecord, RefundOrders, RefundState,
                StoreError,
            };

            async fn order_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                condition: &str,
                id: i64,
            ) -> Result<Option<RefundOrderRecord>, StoreError> {
                let row: Option<OrderRow> =
                    sqlx::query_as(&format!("{ORDER_SELECT} WHERE {condition}"))
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            #[async_trait::async_trait]
            impl RefundOrders for $store {
                async fn record_charge_bot(
                    &self,
                    charge_id: &str,
                    bot_id: &BotId,
                    now: Millis,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO telegram_charges (charge_id, bot_id, created_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (charge_id) DO NOTHING",
                    )
                    .bind(charge_id)
                    .bind(bot_id.as_str())
                    .bind(now)
                    .execute(self.writer())
                    .await?;
                    Ok(())
                }

                async fn charge_bot(&self, charge_id: &str) -> Result<Option<BotId>, StoreError> {
                    let row: Option<(String,)> =
                        sqlx::query_as("SELECT bot_id FROM telegram_charges WHERE charge_id = $1")
                            .bind(charge_id)
                            .fetch_optional(self.reader())
                            .await?;
                    row.map(|(b,)| b.parse().map_err(|_| corrupt("bot_id", &b)))
                        .transpose()
                }

                async fn payment_event_by_id(
                    &self,
                    id: i64,
                ) -> Result<Option<PaymentEventRecord>, StoreError> {
                    let row: Option<EventRow> =
                        sqlx::query_as(&format!("{EVENT_SELECT} WHERE e.id = $1"))
                            .bind(id)
                            .fetch_optional(self.reader())
                            .await?;
                    row.map(TryInto::try_into).transpose()
                }

                async fn payment_event_of(
                    &self,
                    provider: PaymentProvider,
                    event_id: &str,
                ) -> Result<Option<PaymentEventRecord>, StoreError> {
                    let row: Option<EventRow> = sqlx::query_as(&format!(
                        "{EVENT_SELECT} WHERE e.provider = $1 AND e.event_id = $2"
                    ))
                    .bind(provider.as_str())
                    .bind(event_id)
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }

                async fn order_refund(
                    &self,
                    payment: &PaymentEventRecord,
                    user_ref: &UserRef,
                    bot_id: &BotId,
                    now: Millis,
                ) -> Result<OrderOutcome, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let inserted: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO refund_orders (payment_id, charge_id, user_ref, bot_id, \
                         amount_minor, state, error, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', NULL, $6, $6) \
                         ON CONFLICT (payment_id) DO NOTHING RETURNING id",
                    )
                    .bind(payment.id)
                    .bind(&payment.event_id)
                    .bind(user_ref.to_string())
                    .bind(bot_id.as_str())
                    .bind(payment.amount_minor)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let outcome = if let Some((id,)) = inserted {
                        let order = order_on(&mut tx, "id = $1", id).await?;
                        OrderOutcome::Ordered(order.ok_or_else(|| {
                            StoreError::Corrupt(format!("refund order {id} vanished"))
                        })?)
                    } else {
                        let retried: Option<(i64,)> = sqlx::query_as(
                            "UPDATE refund_orders SET state = 'pending', error = NULL, \
                             updated_at = $2 WHERE payment_id = $1 AND state = 'failed' \
                             RETURNING id",
                        )
                        .bind(payment.id)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let order = order_on(&mut tx, "payment_id = $1", payment.id)
                            .await?
                            .ok_or_else(|| {
                                StoreError::Corrupt(format!(
                                    "the refund order of payment {} vanished",
                                    payment.id
                                ))
                            })?;
                        if retried.is_some() {
                            OrderOutcome::Retried(order)
                        } else {
                            OrderOutcome::Exists(order)
                        }
                    };
                    tx.commit().await?;
                    Ok(outcome)
                }

                async fn pending_refund_orders(
                    &self,
                    bot_id: &BotId,
                    limit: u32,
                ) -> Result<Vec<RefundOrderRecord>, StoreError> {
                    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
                        "{ORDER_SELECT} WHERE bot_id = $1 AND state = 'pending' ORDER BY id LIMIT $2"
                    ))
                    .bind(bot_id.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn refund_order(
                    &self,
                    id: i64,
                ) -> Result<Option<RefundOrderRecord>, StoreError> {
                    let mut conn = self.reader().acquire().await?;
                    order_on(&mut conn, "id = $1", id).await
                }

                async fn refund_orders_done(
                    &self,
                    charge_id: &str,
                    now: Millis,
                ) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "UPDATE refund_orders SET state = 'done', error = NULL, updated_at = $2 \
                         WHERE charge_id = $1 AND state <> 'done'",
                    )
                    .bind(charge_id)
                    .bind(now)
                    .execute(self.writer())
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn refund_order_failed(
                    &self,
                    id: i64,
                    bot_id: &BotId,
                    error: &str,
                    now: Millis,
                ) -> Result<Option<RefundOrderRecord>, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let failed: Option<(i64,)> = sqlx::query_as(
                        "UPDATE refund_orders SET state = 'failed', error = $3, updated_at = $4 \
                         WHERE id = $1 AND bot_id = $2 AND state = 'pending' RETURNING id",
                    )
                    .bind(id)
                    .bind(bot_id.as_str())
                    .bind(error)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let order = match failed {
                        Some((id,)) => order_on(&mut tx, "id = $1", id).await?,
                        None => None,
                    };
                    tx.commit().await?;
                    Ok(order)
                }

                async fn refund_orders(
                    &self,
                    state: Option<RefundState>,
                    limit: u32,
                ) -> Result<Vec<RefundOrderRecord>, StoreError> {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(ORDER_SELECT);
                    if let Some(state) = state {
                        qb.push(" WHERE state = ").push_bind(state.as_str());
                    }
                    qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
                    let rows: Vec<OrderRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }
            }
        };
    };
}

pub(crate) use impl_refund_orders;
