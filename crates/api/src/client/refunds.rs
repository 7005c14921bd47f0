//! The client's calls for refunds operators make: the admin's refund and
//! listing, and a Telegram bot's refund orders (see [`crate::refunds`]).

use reqwest::Method;

use super::{Client, ClientError};
use crate::refunds::{
    ListRefundOrdersQuery, RefundAccepted, RefundOrderList, RefundPaymentRequest,
    StarsRefundFailure, StarsRefundOrders,
};

impl Client {
    /// `POST /api/admin/payments/refund`: refund a payment of the ledger.
    pub async fn refund_payment(&self, payment_id: i64) -> Result<RefundAccepted, ClientError> {
        let rb = self.request(Method::POST, "api/admin/payments/refund")?;
        Self::send(Self::json(rb, &RefundPaymentRequest { payment_id })).await
    }

    /// `GET /api/admin/payments/refunds`: refund orders, newest first.
    pub async fn list_refund_orders(
        &self,
        query: &ListRefundOrdersQuery,
    ) -> Result<RefundOrderList, ClientError> {
        Self::send(
            self.request(Method::GET, "api/admin/payments/refunds")?
                .query(query),
        )
        .await
    }

    /// `GET /api/v1/payments/telegram/refund-orders`: this bot's pending
    /// refund orders.
    pub async fn stars_refund_orders(&self) -> Result<StarsRefundOrders, ClientError> {
        Self::send(self.request(Method::GET, "api/v1/payments/telegram/refund-orders")?).await
    }

    /// `POST /api/v1/payments/telegram/refund-failures`: Telegram refused an
    /// order's refund.
    pub async fn stars_refund_failed(&self, body: &StarsRefundFailure) -> Result<(), ClientError> {
        let rb = self.request(Method::POST, "api/v1/payments/telegram/refund-failures")?;
        Self::send_empty(Self::json(rb, body)).await
    }
}
