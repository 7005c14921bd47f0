//! `tessera admin`: the admin API's command-line client.
//!
//! The admin token comes from `TESSERA_ADMIN_TOKEN` or `--token-file`, never from a
//! flag value, so it stays out of shell history and process listings.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use tessera_api::admin::{
    CreateKeyRequest, GrantPlanRequest, ListPaymentsQuery, PaymentEventView, RevokePlanRequest,
};
use tessera_api::public::{JobList, ListJobsQuery};
use tessera_api::refunds::{ListRefundOrdersQuery, RefundState};
use tessera_api::Client;
use tessera_core::{BotId, JobId, PaymentProvider, PlanId, Platform, UserRef};

#[derive(Args)]
pub struct AdminArgs {
    /// Scheduler base URL.
    #[arg(long, env = "TESSERA_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// File whose first line is the admin token (default: the TESSERA_ADMIN_TOKEN variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Frontend API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users and their plans.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Jobs of every frontend.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Workers the scheduler has heard from, online or offline.
    Workers,
    /// The payments ledger; plans given and taken by hand.
    #[command(subcommand)]
    Payments(PaymentsCommand),
    /// The review queue and the audit log of moderation actions.
    #[command(subcommand)]
    Moderation(super::moderation::ModerationCommand),
}

#[derive(Subcommand)]
pub enum PaymentsCommand {
    /// List payment events, newest first, with what each did.
    List {
        /// Only events naming this user or charged to their account.
        #[arg(long)]
        user_ref: Option<UserRef>,
        /// Only this provider's events (stripe, telegram, discord, admin).
        #[arg(long)]
        provider: Option<PaymentProvider>,
        /// Only events for users nobody knows (kept, never applied).
        #[arg(long)]
        unknown_user: bool,
        /// At most this many events (1-100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `next_cursor` of an earlier page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Give a user a plan until a date (recorded in the ledger).
    Grant {
        /// platform:id, for example telegram:123456.
        user_ref: UserRef,
        plan: PlanId,
        /// When it ends: a date (2027-01-31, the end of that day UTC) or an
        /// RFC 3339 time.
        #[arg(long)]
        until: String,
    },
    /// End every plan operators granted a user (recorded in the ledger).
    Revoke {
        /// platform:id.
        user_ref: UserRef,
    },
    /// Refund a payment: Stripe is asked at once; a Telegram Stars payment
    /// is refunded by the bot that took it, at its next poll.
    Refund {
        /// The payment's ID in `payments list`.
        payment_id: i64,
    },
    /// Refunds ordered of Telegram Stars payments, newest first, with their
    /// state and Telegram's error when it refused.
    Refunds {
        /// Only orders in this state.
        #[arg(long, value_enum)]
        state: Option<RefundStateArg>,
        /// At most this many orders (1-100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RefundStateArg {
    Pending,
    Done,
    Failed,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key for one bot; prints the secret once.
    Create {
        /// The frontend kind the key speaks for.
        #[arg(long, value_enum)]
        frontend: FrontendArg,
        /// The bot instance, for example tg-image-bot-1.
        #[arg(long)]
        bot_id: BotId,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key; it stops working at once.
    Revoke {
        /// The key's id, key_...
        key_id: String,
    },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Put a user on a plan (free, starter, pro, admin).
    SetPlan {
        /// platform:id, for example telegram:123456.
        user_ref: UserRef,
        plan: PlanId,
    },
    /// Suspend a user and every user linked to them: their jobs are refused.
    Suspend {
        /// platform:id.
        user_ref: UserRef,
        /// Why, for the audit log (the user is not shown it).
        #[arg(long)]
        reason: String,
        /// When it ends: a date (the end of that day UTC) or an RFC 3339
        /// time; without, until lifted.
        #[arg(long)]
        until: Option<String>,
        /// Your name in the audit log.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Ban a user and every user linked to them.
    Ban {
        /// platform:id.
        user_ref: UserRef,
        #[arg(long)]
        reason: String,
        /// When it ends; without, until lifted.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        actor: Option<String>,
    },
    /// Lift every suspension and ban of a user.
    Lift {
        /// platform:id.
        user_ref: UserRef,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        actor: Option<String>,
    },
    /// A user's suspensions and bans.
    Sanctions {
        /// platform:id.
        user_ref: UserRef,
    },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first (queued and running by default).
    List {
        /// Comma-separated states; `all` for every state.
        #[arg(long, default_value = "QUEUED,RUNNING")]
        status: String,
        #[arg(long)]
        user_ref: Option<UserRef>,
        #[arg(long)]
        bot_id: Option<BotId>,
        /// At most this many jobs (1-100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel a job and refund it.
    Cancel { job_id: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FrontendArg {
    Telegram,
    Discord,
    Web,
}

impl From<FrontendArg> for Platform {
    fn from(f: FrontendArg) -> Platform {
        match f {
            FrontendArg::Telegram => Platform::Telegram,
            FrontendArg::Discord => Platform::Discord,
            FrontendArg::Web => Platform::Web,
        }
    }
}

fn token(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the admin token from {}", path.display()))?;
        return Ok(text.lines().next().unwrap_or_default().trim().to_owned());
    }
    std::env::var("TESSERA_ADMIN_TOKEN")
        .context("set TESSERA_ADMIN_TOKEN or pass --token-file with the scheduler's admin token")
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.url, token(&args)?)?;
    let json = args.json;
    match args.command {
        AdminCommand::Keys(KeysCommand::Create { frontend, bot_id }) => {
            let created = client
                .create_key(&CreateKeyRequest {
                    frontend: frontend.into(),
                    bot_id,
                })
                .await?;
            if json {
                return print_json(&created);
            }
            println!("key id:   {}", created.key.key_id);
            println!("bot:      {}/{}", created.key.frontend, created.key.bot_id);
            println!("api key:  {}", created.api_key);
            println!("Store the api key now; the scheduler keeps only its hash.");
        }
        AdminCommand::Keys(KeysCommand::List) => {
            let keys = client.list_keys().await?;
            if json {
                return print_json(&keys);
            }
            println!(
                "{:<30} {:<9} {:<24} {:<20} REVOKED",
                "KEY ID", "FRONTEND", "BOT", "CREATED"
            );
            for k in keys.keys {
                println!(
                    "{:<30} {:<9} {:<24} {:<20} {}",
                    k.key_id,
                    k.frontend,
                    k.bot_id,
                    k.created_at.format("%Y-%m-%d %H:%M:%S"),
                    k.revoked_at
                        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                );
            }
        }
        AdminCommand::Keys(KeysCommand::Revoke { key_id }) => {
            let id = key_id
                .parse()
                .map_err(|_| anyhow::anyhow!("{key_id:?} is not a key id (key_...)"))?;
            let key = client.revoke_key(&id).await?;
            if json {
                return print_json(&key);
            }
            println!("revoked {} ({}/{})", key.key_id, key.frontend, key.bot_id);
        }
        AdminCommand::Users(UsersCommand::SetPlan { user_ref, plan }) => {
            let quota = client.set_plan(&user_ref, &plan).await?;
            if json {
                return print_json(&quota);
            }
            println!(
                "{} is on {}: {} tokens used today, {} left",
                quota.user_ref,
                quota.plan.name,
                quota.tokens_used_today,
                quota
                    .tokens_left_today
                    .map_or("unlimited".into(), |t| t.to_string())
            );
        }
        AdminCommand::Jobs(JobsCommand::List {
            status,
            user_ref,
            bot_id,
            limit,
        }) => {
            let query = ListJobsQuery {
                user_ref,
                bot_id,
                status: (status != "all").then_some(status),
                limit: Some(limit),
                undelivered: None,
                cursor: None,
            };
            let list = client.admin_list_jobs(&query).await?;
            if json {
                return print_json(&list);
            }
            print_jobs(&list);
        }
        AdminCommand::Payments(cmd) => return payments(&client, cmd, json).await,
        AdminCommand::Moderation(cmd) => return super::moderation::run(&client, cmd, json).await,
        AdminCommand::Users(cmd) => return people(&client, cmd, json).await,
        AdminCommand::Workers => {
            let list = client.list_workers().await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<20} {:<8} {:<9} {:<28} {:<24} LAST SEEN",
                "WORKER", "ONLINE", "STATUS", "ADDRESS", "LOADED"
            );
            for w in &list.workers {
                let hb = &w.heartbeat;
                println!(
                    "{:<20} {:<8} {:<9} {:<28} {:<24} {}",
                    hb.worker_id,
                    if w.online { "yes" } else { "NO" },
                    hb.status.as_str(),
                    hb.address,
                    hb.loaded_models.join(","),
                    w.last_seen_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            if list.workers.is_empty() {
                println!("(no worker has sent a heartbeat)");
            }
            // Engines that cannot take a job now, each on its own line.
            for w in &list.workers {
                for e in w.heartbeat.engines.iter().filter(|e| !e.ready) {
                    println!(
                        "engine DOWN: {} {} ({}) since {}: {}",
                        w.heartbeat.worker_id,
                        e.engine,
                        e.capability,
                        e.since.format("%Y-%m-%d %H:%M:%S"),
                        e.error.as_deref().unwrap_or("not ready")
                    );
                }
            }
        }
        AdminCommand::Jobs(JobsCommand::Cancel { job_id }) => {
            let id: JobId = job_id
                .parse()
                .map_err(|_| anyhow::anyhow!("{job_id:?} is not a job id (job_...)"))?;
            let job = client.admin_cancel_job(&id).await?;
            if json {
                return print_json(&job);
            }
            println!(
                "{} is {} (refunded: {})",
                job.job_id, job.status, job.refunded
            );
        }
    }
    Ok(())
}

/// `users suspend|ban|lift|sanctions`, for [`super::moderation::people`].
async fn people(client: &Client, cmd: UsersCommand, json: bool) -> anyhow::Result<()> {
    use super::moderation::PeopleCommand as P;
    use tessera_api::review::SanctionKind;
    let cmd = match cmd {
        UsersCommand::SetPlan { .. } => unreachable!("set-plan is handled by run"),
        UsersCommand::Suspend {
            user_ref,
            reason,
            until,
            actor,
        } => P::Sanction {
            kind: SanctionKind::Suspension,
            user_ref,
            reason,
            until,
            actor,
        },
        UsersCommand::Ban {
            user_ref,
            reason,
            until,
            actor,
        } => P::Sanction {
            kind: SanctionKind::Ban,
            user_ref,
            reason,
            until,
            actor,
        },
        UsersCommand::Lift {
            user_ref,
            reason,
            actor,
        } => P::Lift {
            user_ref,
            reason,
            actor,
        },
        UsersCommand::Sanctions { user_ref } => P::Sanctions { user_ref },
    };
    super::moderation::people(client, cmd, json).await
}

fn print_jobs(list: &JobList) {
    println!(
        "{:<31} {:<9} {:<14} {:<14} {:<22} {:>4} {:>6}",
        "JOB ID", "STATUS", "CAPABILITY", "MODEL", "USER", "COST", "QUEUE"
    );
    for j in &list.jobs {
        println!(
            "{:<31} {:<9} {:<14} {:<14} {:<22} {:>4} {:>6}",
            j.job_id,
            j.status,
            j.capability,
            j.model,
            j.user_ref,
            j.cost_tokens,
            j.queue_position.map_or("-".into(), |p| p.to_string())
        );
    }
    if list.jobs.is_empty() {
        println!("(no jobs)");
    }
}

/// `--until`: a date means the end of that day (UTC), or an RFC 3339 time.
pub(crate) fn parse_until(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").with_context(|| {
        format!("--until {text:?} is neither a date (2027-01-31) nor an RFC 3339 time")
    })?;
    let next = day
        .succ_opt()
        .context("--until is past the last date there is")?;
    Ok(next.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn print_payment(e: &PaymentEventView) {
    let money = match &e.currency {
        Some(c) => format!("{} {c}", e.amount_minor),
        None => "-".into(),
    };
    println!(
        "{:<6} {:<16} {:<9} {:<12} {:<22} {:<8} {:<12} {:<13} {}",
        e.id,
        e.occurred_at.format("%Y-%m-%d %H:%M"),
        e.provider.as_str(),
        e.kind.as_str(),
        e.user_ref.as_ref().map_or("-".into(), ToString::to_string),
        e.plan_id.as_deref().unwrap_or("-"),
        money,
        format!("{:?}", e.outcome).to_lowercase(),
        e.effect
    );
}

fn refund_state(state: RefundState) -> &'static str {
    match state {
        RefundState::Requested => "requested",
        RefundState::Pending => "pending",
        RefundState::Done => "done",
        RefundState::Failed => "failed",
    }
}

async fn payments(client: &Client, cmd: PaymentsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        PaymentsCommand::List {
            user_ref,
            provider,
            unknown_user,
            limit,
            cursor,
        } => {
            let query = ListPaymentsQuery {
                user_ref,
                provider,
                unknown_user: unknown_user.then_some(true),
                limit: Some(limit),
                cursor,
            };
            let list = client.list_payments(&query).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<6} {:<16} {:<9} {:<12} {:<22} {:<8} {:<12} {:<13} EFFECT",
                "ID", "AT", "PROVIDER", "KIND", "USER", "PLAN", "AMOUNT", "OUTCOME"
            );
            for e in &list.events {
                print_payment(e);
            }
            if let Some(next) = &list.next_cursor {
                println!("more: --cursor {next}");
            }
        }
        PaymentsCommand::Grant {
            user_ref,
            plan,
            until,
        } => {
            let req = GrantPlanRequest {
                user_ref,
                plan_id: plan,
                until: parse_until(&until)?,
            };
            let e = client.grant_plan(&req).await?;
            if json {
                return print_json(&e);
            }
            println!("{} ({})", e.effect, e.event_id);
        }
        PaymentsCommand::Revoke { user_ref } => {
            let e = client.revoke_plan(&RevokePlanRequest { user_ref }).await?;
            if json {
                return print_json(&e);
            }
            println!("{} ({})", e.effect, e.event_id);
        }
        PaymentsCommand::Refund { payment_id } => {
            let accepted = client.refund_payment(payment_id).await?;
            if json {
                return print_json(&accepted);
            }
            println!(
                "payment {} ({}): refund {}: {}",
                accepted.payment_id,
                accepted.provider.as_str(),
                refund_state(accepted.state),
                accepted.message
            );
        }
        PaymentsCommand::Refunds { state, limit } => {
            let query = ListRefundOrdersQuery {
                state: state.map(|s| match s {
                    RefundStateArg::Pending => RefundState::Pending,
                    RefundStateArg::Done => RefundState::Done,
                    RefundStateArg::Failed => RefundState::Failed,
                }),
                limit: Some(limit),
            };
            let list = client.list_refund_orders(&query).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<6} {:<8} {:<16} {:<20} {:<18} {:>6} {:<8} ERROR",
                "ORDER", "PAYMENT", "AT", "USER", "BOT", "STARS", "STATE"
            );
            for o in &list.orders {
                println!(
                    "{:<6} {:<8} {:<16} {:<20} {:<18} {:>6} {:<8} {}",
                    o.order_id,
                    o.payment_id,
                    o.updated_at.format("%Y-%m-%d %H:%M"),
                    o.user_ref,
                    o.bot_id,
                    o.amount,
                    refund_state(o.state),
                    o.error.as_deref().unwrap_or("")
                );
            }
            if list.orders.is_empty() {
                println!("(no refund orders)");
            }
        }
    }
    Ok(())
}
