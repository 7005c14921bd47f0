//! The words of the payments ledger: who a payment event comes from and what
//! kind of event it is. The scheduler records every event once and derives
//! each user's plan from them; these names are stored in the database and
//! spoken on the admin API, so they never change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a payment event comes from.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PaymentProvider {
    /// Stripe Checkout and its webhooks (the website).
    Stripe,
    /// Telegram Stars (`XTR`) invoices and subscriptions.
    Telegram,
    /// Discord premium app subscriptions (entitlements).
    Discord,
    /// An operator, through the admin API or `tessera admin payments`.
    Admin,
}

impl PaymentProvider {
    pub const ALL: [PaymentProvider; 4] = [
        PaymentProvider::Stripe,
        PaymentProvider::Telegram,
        PaymentProvider::Discord,
        PaymentProvider::Admin,
    ];

    /// The stable name used on the wire and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentProvider::Stripe => "stripe",
            PaymentProvider::Telegram => "telegram",
            PaymentProvider::Discord => "discord",
            PaymentProvider::Admin => "admin",
        }
    }
}

/// What a payment event does to the subscription or charge it names.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// A first payment: the plan until the end of the paid period.
    Purchase,
    /// A further period paid: the plan until its end.
    Renewal,
    /// The subscription changed (another plan, another period end) without
    /// new money, or new money the provider reports as an update.
    Update,
    /// The money went back: the plan ends now.
    Refund,
    /// The payer's bank took the money back: the plan ends now.
    Chargeback,
    /// The subscription was cancelled: the plan ends now.
    Cancel,
    /// An operator gave the plan until a date.
    AdminGrant,
    /// An operator ended what they had given (or every grant of the user).
    AdminRevoke,
}

impl PaymentKind {
    pub const ALL: [PaymentKind; 8] = [
        PaymentKind::Purchase,
        PaymentKind::Renewal,
        PaymentKind::Update,
        PaymentKind::Refund,
        PaymentKind::Chargeback,
        PaymentKind::Cancel,
        PaymentKind::AdminGrant,
        PaymentKind::AdminRevoke,
    ];

    /// The stable name used on the wire and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Purchase => "purchase",
            PaymentKind::Renewal => "renewal",
            PaymentKind::Update => "update",
            PaymentKind::Refund => "refund",
            PaymentKind::Chargeback => "chargeback",
            PaymentKind::Cancel => "cancel",
            PaymentKind::AdminGrant => "admin_grant",
            PaymentKind::AdminRevoke => "admin_revoke",
        }
    }

    /// Whether the event gives a plan for a period (it must name both).
    pub const fn grants(self) -> bool {
        matches!(
            self,
            PaymentKind::Purchase
                | PaymentKind::Renewal
                | PaymentKind::Update
                | PaymentKind::AdminGrant
        )
    }

    /// Whether the event ends its grant for good, whatever order events
    /// arrive in.
    pub const fn ends(self) -> bool {
        !self.grants()
    }

    /// Whether the event's amount is money that went back to the payer.
    pub const fn returns_money(self) -> bool {
        matches!(self, PaymentKind::Refund | PaymentKind::Chargeback)
    }
}

macro_rules! names {
    ($ty:ident, $err:ident, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        /// The text names none of the values.
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("unknown {} {:?}; expected one of {}", $what, .0, $ty::ALL.map($ty::as_str).join(", "))]
        pub struct $err(pub String);

        impl FromStr for $ty {
            type Err = $err;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $err(s.to_owned()))
            }
        }
    };
}

names!(PaymentProvider, UnknownProvider, "payment provider");
names!(PaymentKind, UnknownPaymentKind, "payment kind");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_serde() {
        for p in PaymentProvider::ALL {
            assert_eq!(p.as_str().parse::<PaymentProvider>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for k in PaymentKind::ALL {
            assert_eq!(k.as_str().parse::<PaymentKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_ne!(k.grants(), k.ends());
        }
        assert_eq!(
            "paypal".parse::<PaymentProvider>().unwrap_err().to_string(),
            "unknown payment provider \"paypal\"; expected one of stripe, telegram, discord, admin"
        );
    }
}
