//! The payments ledger: events recorded once, applied in any order to the
//! same end, grants that lapse on their own, refunds and cancels that end
//! them, operators' plans no provider undoes, and events for unknown users
//! kept and listed.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use tessera_core::{Millis, PaymentKind, PaymentProvider, UserRef};
use tessera_scheduler::store::{
    ApplyOutcome, GrantRecord, NewPaymentEvent, PaymentEventRecord, PaymentFilter, PaymentOutcome,
    Store,
};
use tessera_testkit::{backend_tests, Backend, TestDb};

use crate::common::*;

const DAY: Millis = 86_400_000;
/// 2026-11-01, the start of the first paid period.
const T0: Millis = 1_793_491_200_000;

fn event(
    provider: PaymentProvider,
    event_id: &str,
    kind: PaymentKind,
    user: &str,
    reference: &str,
    at: Millis,
) -> NewPaymentEvent {
    NewPaymentEvent {
        provider,
        event_id: event_id.into(),
        kind,
        user_ref: Some(user.parse().unwrap()),
        plan_id: None,
        amount_minor: 0,
        currency: None,
        period: None,
        reference: Some(reference.into()),
        occurred_at: at,
    }
}

/// A payment for `plan` of 30 days from `start`.
fn paid(
    kind: PaymentKind,
    event_id: &str,
    user: &str,
    reference: &str,
    plan: &str,
    start: Millis,
    at: Millis,
) -> NewPaymentEvent {
    NewPaymentEvent {
        plan_id: Some(plan.into()),
        amount_minor: if plan == "pro" { 1200 } else { 500 },
        currency: Some("usd".into()),
        period: Some((start, start + 30 * DAY)),
        ..event(PaymentProvider::Stripe, event_id, kind, user, reference, at)
    }
}

async fn apply(store: &dyn Store, e: &NewPaymentEvent, now: Millis) -> ApplyOutcome {
    store.apply_payment_event(e, now).await.unwrap()
}

async fn recorded(store: &dyn Store, e: &NewPaymentEvent, now: Millis) -> PaymentEventRecord {
    match apply(store, e, now).await {
        ApplyOutcome::Recorded(r) => r,
        other => panic!("expected {} to be recorded, got {other:?}", e.event_id),
    }
}

/// The plan that applies to `user` at `now`.
async fn plan_at(store: &dyn Store, user: &str, now: Millis) -> String {
    let user: UserRef = user.parse().unwrap();
    store
        .quota(&user, day(), now)
        .await
        .unwrap()
        .expect("a known user")
        .plan
        .id
}

async fn known(store: &dyn Store, user: &str) {
    store
        .set_plan(&user.parse().unwrap(), "free", day(), 0)
        .await
        .unwrap()
        .unwrap();
}

/// Two users' subscriptions: ada buys STARTER, upgrades to PRO, renews, and a
/// late "created" of the first period arrives after the update; bob buys and
/// is refunded; cy buys and charges back; dee buys and cancels.
fn history() -> Vec<NewPaymentEvent> {
    use PaymentKind::*;
    let ada = "telegram:1";
    vec![
        paid(Purchase, "evt_1", ada, "sub_a", "starter", T0, T0),
        paid(Update, "evt_2", ada, "sub_a", "pro", T0, T0 + DAY),
        paid(
            Renewal,
            "evt_3",
            ada,
            "sub_a",
            "pro",
            T0 + 30 * DAY,
            T0 + 30 * DAY,
        ),
        paid(Update, "evt_4", ada, "sub_a", "starter", T0, T0 + 2),
        paid(Purchase, "evt_5", "telegram:2", "sub_b", "pro", T0, T0),
        NewPaymentEvent {
            amount_minor: 1200,
            currency: Some("usd".into()),
            ..event(
                PaymentProvider::Stripe,
                "evt_6",
                Refund,
                "telegram:2",
                "sub_b",
                T0 + 3 * DAY,
            )
        },
        paid(Purchase, "evt_7", "discord:3", "sub_c", "starter", T0, T0),
        event(
            PaymentProvider::Stripe,
            "evt_8",
            Chargeback,
            "discord:3",
            "sub_c",
            T0 + DAY,
        ),
        paid(Purchase, "evt_9", "web:4", "sub_d", "pro", T0, T0),
        event(
            PaymentProvider::Stripe,
            "evt_10",
            Cancel,
            "web:4",
            "sub_d",
            T0 + 5 * DAY,
        ),
    ]
}

const USERS: [&str; 4] = ["telegram:1", "telegram:2", "discord:3", "web:4"];

/// What the ledger adds up to: every user's grants, and the plan that
/// applies to each at a few times.
async fn final_state(store: &dyn Store) -> Vec<(Vec<GrantRecord>, Vec<String>)> {
    let mut state = Vec::new();
    for user in USERS {
        let grants = store.plan_grants(&user.parse().unwrap()).await.unwrap();
        let mut plans = Vec::new();
        for t in [T0 + 1, T0 + 10 * DAY, T0 + 45 * DAY, T0 + 61 * DAY] {
            plans.push(plan_at(store, user, t).await);
        }
        state.push((grants, plans));
    }
    state
}

async fn shuffled_redeliveries_end_where_one_delivery_in_order_does(backend: Backend) {
    let in_order = TestDb::new(backend).await;
    let store = in_order.store().await;
    for user in USERS {
        known(&*store, user).await;
    }
    for e in history() {
        recorded(&*store, &e, T0).await;
    }
    let expected = final_state(&*store).await;
    // Ada: STARTER, then PRO from the update; the late "created"-time update
    // to STARTER is older and changes nothing; the renewal runs to day 60.
    assert_eq!(
        expected[0].1,
        ["pro", "pro", "pro", "free"],
        "{:?}",
        expected[0]
    );
    // Refunded, charged back, cancelled: FREE at once.
    for (user, (_, plans)) in USERS.iter().zip(&expected).skip(1) {
        assert_eq!(plans, &["free"; 4], "{user}");
    }

    for seed in [1u64, 7, 42] {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        for user in USERS {
            known(&*store, user).await;
        }
        let mut deliveries: Vec<NewPaymentEvent> = history()
            .into_iter()
            .flat_map(|e| std::iter::repeat_n(e, 5))
            .collect();
        deliveries.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut first = std::collections::HashSet::new();
        for e in &deliveries {
            match apply(&*store, e, T0).await {
                ApplyOutcome::Recorded(r) => {
                    assert!(first.insert(e.event_id.clone()), "{} twice", e.event_id);
                    assert_eq!(r.event_id, e.event_id);
                }
                ApplyOutcome::AlreadyRecorded(r) => {
                    assert!(first.contains(&e.event_id), "{} early", e.event_id);
                    assert_eq!((r.event_id.as_str(), r.kind), (e.event_id.as_str(), e.kind));
                }
                ApplyOutcome::Invalid(why) => panic!("{why}"),
            }
        }
        assert_eq!(final_state(&*store).await, expected, "seed {seed}");
        let all = PaymentFilter {
            limit: 100,
            ..Default::default()
        };
        assert_eq!(store.payment_events(&all).await.unwrap().len(), 10);
    }
}

async fn a_lapsed_subscription_returns_the_user_to_free(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    known(&*store, "telegram:1").await;
    let e = paid(
        PaymentKind::Purchase,
        "evt_1",
        "telegram:1",
        "sub_a",
        "starter",
        T0,
        T0,
    );
    let r = recorded(&*store, &e, T0).await;
    assert_eq!(r.outcome, PaymentOutcome::Applied);
    assert_eq!(r.billing_user.unwrap().to_string(), "telegram:1");
    assert!(
        r.effect.contains("telegram:1 is now on starter"),
        "{}",
        r.effect
    );
    assert_eq!(
        plan_at(&*store, "telegram:1", T0 + 30 * DAY - 1).await,
        "starter"
    );
    // Nobody acts: past the paid period the grant no longer counts.
    assert_eq!(plan_at(&*store, "telegram:1", T0 + 30 * DAY).await, "free");
    let gauges = store.gauges(T0 + 31 * DAY).await.unwrap();
    assert_eq!(gauges.users_per_plan, [("free".to_owned(), 1)]);
    let gauges = store.gauges(T0 + DAY).await.unwrap();
    assert_eq!(gauges.users_per_plan, [("starter".to_owned(), 1)]);
    // A renewal carries it on.
    let renewal = paid(
        PaymentKind::Renewal,
        "evt_2",
        "telegram:1",
        "sub_a",
        "starter",
        T0 + 30 * DAY,
        T0 + 30 * DAY,
    );
    recorded(&*store, &renewal, T0 + 30 * DAY).await;
    assert_eq!(
        plan_at(&*store, "telegram:1", T0 + 59 * DAY).await,
        "starter"
    );
    assert_eq!(plan_at(&*store, "telegram:1", T0 + 60 * DAY).await, "free");
}

async fn refunds_and_chargebacks_end_the_plan_in_any_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    known(&*store, "telegram:1").await;
    known(&*store, "telegram:2").await;
    // The refund arrives before the purchase it refunds.
    let refund = NewPaymentEvent {
        amount_minor: 500,
        currency: Some("usd".into()),
        ..event(
            PaymentProvider::Telegram,
            "r1",
            PaymentKind::Refund,
            "telegram:1",
            "ch_1",
            T0 + DAY,
        )
    };
    recorded(&*store, &refund, T0).await;
    let purchase = NewPaymentEvent {
        provider: PaymentProvider::Telegram,
        ..paid(
            PaymentKind::Purchase,
            "p1",
            "telegram:1",
            "ch_1",
            "starter",
            T0,
            T0,
        )
    };
    let late = recorded(&*store, &purchase, T0).await;
    assert_eq!(late.outcome, PaymentOutcome::Unchanged, "{}", late.effect);
    assert_eq!(plan_at(&*store, "telegram:1", T0 + 1).await, "free");

    let purchase = paid(
        PaymentKind::Purchase,
        "p2",
        "telegram:2",
        "sub_2",
        "pro",
        T0,
        T0,
    );
    recorded(&*store, &purchase, T0).await;
    assert_eq!(plan_at(&*store, "telegram:2", T0 + 1).await, "pro");
    let chargeback = event(
        PaymentProvider::Stripe,
        "c2",
        PaymentKind::Chargeback,
        "telegram:2",
        "sub_2",
        T0 + 2,
    );
    let r = recorded(&*store, &chargeback, T0 + 2).await;
    assert_eq!(
        r.plan_id.as_deref(),
        Some("pro"),
        "the grant's plan is recorded"
    );
    assert_eq!(plan_at(&*store, "telegram:2", T0 + 3).await, "free");
    // A renewal of a charged-back subscription changes nothing.
    let renewal = paid(
        PaymentKind::Renewal,
        "p3",
        "telegram:2",
        "sub_2",
        "pro",
        T0,
        T0 + 5,
    );
    recorded(&*store, &renewal, T0 + 5).await;
    assert_eq!(plan_at(&*store, "telegram:2", T0 + 6).await, "free");

    // Money received, net: every payment in (the renewal too: the provider
    // took it), every refund out.
    let revenue = store.revenue_since(0).await.unwrap();
    let net: i64 = revenue.iter().map(|r| r.net_minor).sum();
    assert_eq!(net, 500 + 1200 + 1200 - 500);
}

async fn an_operators_plan_survives_a_providers_cancel(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let user: UserRef = "discord:9".parse().unwrap();
    store
        .set_plan(&user, "pro", day(), 0)
        .await
        .unwrap()
        .unwrap();
    let purchase = paid(
        PaymentKind::Purchase,
        "e1",
        "discord:9",
        "ent_1",
        "starter",
        T0,
        T0,
    );
    recorded(&*store, &purchase, T0).await;
    assert_eq!(plan_at(&*store, "discord:9", T0 + 1).await, "pro");
    let cancel = event(
        PaymentProvider::Discord,
        "e2",
        PaymentKind::Cancel,
        "discord:9",
        "ent_1",
        T0 + 1,
    );
    recorded(&*store, &cancel, T0 + 1).await;
    assert_eq!(plan_at(&*store, "discord:9", T0 + 2).await, "pro");

    // An operator's grant until a date: a provider's cancel of its own
    // subscription leaves it; the operator's revoke ends it.
    known(&*store, "telegram:5").await;
    let grant = NewPaymentEvent {
        plan_id: Some("pro".into()),
        period: Some((T0, T0 + 90 * DAY)),
        ..event(
            PaymentProvider::Admin,
            "adm_1",
            PaymentKind::AdminGrant,
            "telegram:5",
            "adm_1",
            T0,
        )
    };
    recorded(&*store, &grant, T0).await;
    let sub = paid(
        PaymentKind::Purchase,
        "s1",
        "telegram:5",
        "sub_5",
        "starter",
        T0,
        T0 + 1,
    );
    recorded(&*store, &sub, T0 + 1).await;
    let cancel = event(
        PaymentProvider::Stripe,
        "s2",
        PaymentKind::Cancel,
        "telegram:5",
        "sub_5",
        T0 + 2,
    );
    recorded(&*store, &cancel, T0 + 2).await;
    assert_eq!(plan_at(&*store, "telegram:5", T0 + 3).await, "pro");
    // A provider's event cannot touch the operator's grant even by naming it.
    let forged = event(
        PaymentProvider::Stripe,
        "s3",
        PaymentKind::Cancel,
        "telegram:5",
        "adm_1",
        T0 + 3,
    );
    recorded(&*store, &forged, T0 + 3).await;
    assert_eq!(plan_at(&*store, "telegram:5", T0 + 4).await, "pro");
    let revoke = NewPaymentEvent {
        reference: None,
        ..event(
            PaymentProvider::Admin,
            "adm_2",
            PaymentKind::AdminRevoke,
            "telegram:5",
            "",
            T0 + 4,
        )
    };
    let r = recorded(&*store, &revoke, T0 + 4).await;
    assert_eq!(r.outcome, PaymentOutcome::Applied, "{}", r.effect);
    assert_eq!(plan_at(&*store, "telegram:5", T0 + 5).await, "free");
}

async fn an_upgrade_raises_todays_tokens_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for i in 0..20 {
        created(&*store, "telegram:2", T0 + i).await;
    }
    assert!(matches!(
        create(
            &*store,
            &new_job("telegram:2", T0 + 30),
            serde_json::json!({"prompt": "x"})
        )
        .await,
        tessera_scheduler::store::CreateOutcome::QuotaExhausted { .. }
    ));
    let purchase = paid(
        PaymentKind::Purchase,
        "e1",
        "telegram:2",
        "sub",
        "starter",
        T0,
        T0 + 40,
    );
    recorded(&*store, &purchase, T0 + 40).await;
    let quota = store
        .quota(&"telegram:2".parse().unwrap(), day(), T0 + 41)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((quota.plan.id.as_str(), quota.tokens_used), ("starter", 20));
    let job = created(&*store, "telegram:2", T0 + 42).await;
    assert_eq!(job.priority.0, 1, "the job carries STARTER's priority");
}

async fn events_for_unknown_users_are_kept_and_listed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let stray = paid(
        PaymentKind::Purchase,
        "e1",
        "telegram:404",
        "sub_x",
        "pro",
        T0,
        T0,
    );
    let r = recorded(&*store, &stray, T0).await;
    assert_eq!(
        (r.outcome, r.billing_user.clone()),
        (PaymentOutcome::UnknownUser, None)
    );
    assert!(r.effect.contains("no user telegram:404"), "{}", r.effect);
    let nobody = NewPaymentEvent {
        user_ref: None,
        ..paid(
            PaymentKind::Purchase,
            "e2",
            "telegram:1",
            "sub_y",
            "pro",
            T0,
            T0,
        )
    };
    recorded(&*store, &nobody, T0).await;
    known(&*store, "telegram:1").await;
    let other_plan = paid(
        PaymentKind::Purchase,
        "e3",
        "telegram:1",
        "sub_z",
        "gold",
        T0,
        T0,
    );
    let r = recorded(&*store, &other_plan, T0).await;
    assert_eq!(r.outcome, PaymentOutcome::UnknownPlan);
    // Nothing applied to a guess: the user seen later is on FREE.
    known(&*store, "telegram:404").await;
    assert_eq!(plan_at(&*store, "telegram:404", T0 + 1).await, "free");
    assert_eq!(plan_at(&*store, "telegram:1", T0 + 1).await, "free");
    let unknown = store
        .payment_events(&PaymentFilter {
            unknown_user: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = unknown.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e2", "e1"], "newest first");
    let by_user = store
        .payment_events(&PaymentFilter {
            user_ref: Some("telegram:404".parse().unwrap()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_user.len(), 1);
    // Paged: one at a time, newest first.
    let page = PaymentFilter {
        limit: 2,
        ..Default::default()
    };
    let first = store.payment_events(&page).await.unwrap();
    let second = store
        .payment_events(&PaymentFilter {
            before: Some(first[1].id),
            ..page
        })
        .await
        .unwrap();
    let ids: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(ids, ["e3", "e2", "e1"]);
    // A malformed event is refused and not recorded.
    let no_period = NewPaymentEvent {
        period: None,
        ..paid(
            PaymentKind::Renewal,
            "e4",
            "telegram:1",
            "sub_z",
            "pro",
            T0,
            T0,
        )
    };
    assert!(matches!(
        apply(&*store, &no_period, T0).await,
        ApplyOutcome::Invalid(_)
    ));
}

async fn a_linked_chat_user_pays_for_the_account(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let web: UserRef = "web:ada".parse().unwrap();
    store
        .create_account(&web, "web-1", "ada@example.org", "$argon2id$stand-in", 0)
        .await
        .unwrap()
        .unwrap();
    // Bought in Telegram before linking: the grant follows the link.
    known(&*store, "telegram:7").await;
    let stars = NewPaymentEvent {
        provider: PaymentProvider::Telegram,
        currency: Some("XTR".into()),
        ..paid(
            PaymentKind::Purchase,
            "t1",
            "telegram:7",
            "ch_7",
            "starter",
            T0,
            T0,
        )
    };
    recorded(&*store, &stars, T0).await;
    let tg: UserRef = "telegram:7".parse().unwrap();
    assert!(store
        .put_link_code(&tg, &[3; 32], T0 + DAY, T0)
        .await
        .unwrap());
    store
        .redeem_link_code(&web, "web-1", &[3; 32], T0 + 1)
        .await
        .unwrap();
    assert_eq!(plan_at(&*store, "web:ada", T0 + 2).await, "starter");
    // Bought by the linked chat user after linking: the account's.
    let pro = NewPaymentEvent {
        provider: PaymentProvider::Telegram,
        ..paid(
            PaymentKind::Purchase,
            "t2",
            "telegram:7",
            "ch_8",
            "pro",
            T0,
            T0 + 3,
        )
    };
    let r = recorded(&*store, &pro, T0 + 3).await;
    assert_eq!(r.billing_user, Some(web.clone()));
    assert_eq!(plan_at(&*store, "web:ada", T0 + 4).await, "pro");
    assert_eq!(plan_at(&*store, "telegram:7", T0 + 4).await, "pro");
    let grants = store.plan_grants(&tg).await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants.iter().all(|g| g.user_ref == web && g.active));
}

/// Events of one subscription arriving at the same moment (a provider sends
/// an invoice's payment and its checkout together) take turns: every one is
/// recorded, none fails, and the grant holds what one at a time gives.
async fn events_of_one_grant_applied_at_once_all_apply(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    known(&*store, "telegram:5").await;
    let events: Vec<NewPaymentEvent> = (0..8)
        .map(|i| {
            paid(
                PaymentKind::Renewal,
                &format!("c{i}"),
                "telegram:5",
                "sub_c",
                "starter",
                T0 + i * 30 * DAY,
                T0 + i,
            )
        })
        .collect();
    let outcomes =
        futures::future::join_all(events.iter().map(|e| store.apply_payment_event(e, T0))).await;
    for outcome in outcomes {
        let outcome = outcome.expect("no event of the grant fails");
        assert!(matches!(outcome, ApplyOutcome::Recorded(_)), "{outcome:?}");
    }
    let grants = store
        .plan_grants(&"telegram:5".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].paid_until, T0 + 8 * 30 * DAY);
    assert_eq!(grants[0].changed_at, T0 + 7);
}

backend_tests!(
    events_of_one_grant_applied_at_once_all_apply,
    shuffled_redeliveries_end_where_one_delivery_in_order_does,
    a_lapsed_subscription_returns_the_user_to_free,
    refunds_and_chargebacks_end_the_plan_in_any_order,
    an_operators_plan_survives_a_providers_cancel,
    an_upgrade_raises_todays_tokens_at_once,
    events_for_unknown_users_are_kept_and_listed,
    a_linked_chat_user_pays_for_the_account,
);
