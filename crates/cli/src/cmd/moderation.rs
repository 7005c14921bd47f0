//! `tessera admin users suspend|ban|lift|sanctions` and `tessera admin
//! moderation queue|show|decide|audit`: people, from the command line.
//!
//! `--actor` names the operator in the audit log (`admin:<name>`); without
//! it the log says `admin`, which is all the admin token proves.

use clap::{Subcommand, ValueEnum};

use tessera_api::review::{
    AuditQuery, CaseKind, CaseStatus, CaseView, DecideRequest, Decision, LiftRequest,
    ListCasesQuery, SanctionKind, SanctionRequest, SanctionView,
};
use tessera_api::Client;
use tessera_core::UserRef;

use super::admin::{parse_until, print_json};

#[derive(Subcommand)]
pub enum ModerationCommand {
    /// The review queue: open cases first (oldest first), then decided ones.
    Queue {
        /// Only cases of this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only open or only decided cases.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// At most this many cases (1-100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A case and its evidence: refusals, reports, the job.
    Show { case_id: i64 },
    /// Decide an open case.
    Decide {
        case_id: i64,
        #[arg(value_enum)]
        decision: DecisionArg,
        /// With suspend: when it ends, a date (the end of that day UTC) or
        /// an RFC 3339 time; without, until lifted.
        #[arg(long)]
        until: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        note: Option<String>,
        /// Your name in the audit log.
        #[arg(long)]
        actor: Option<String>,
    },
    /// The audit log of moderation actions, newest first.
    Audit {
        /// Only actions on this user.
        #[arg(long)]
        user_ref: Option<UserRef>,
        /// At most this many entries (1-100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only entries older than this id.
        #[arg(long)]
        before: Option<i64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Report,
    Withheld,
    Refusals,
    ChildSafety,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Open,
    Decided,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Dismiss,
    Suspend,
    Ban,
    Lift,
}

/// The people half of `tessera admin users`.
pub enum PeopleCommand {
    Sanction {
        kind: SanctionKind,
        user_ref: UserRef,
        reason: String,
        until: Option<String>,
        actor: Option<String>,
    },
    Lift {
        user_ref: UserRef,
        reason: Option<String>,
        actor: Option<String>,
    },
    Sanctions {
        user_ref: UserRef,
    },
}

fn print_sanction(s: &SanctionView) {
    println!(
        "{:<6} {:<20} {:<10} {:<17} {:<17} {:<17} {:<14} {}",
        s.sanction_id,
        s.user_ref,
        s.kind.as_str(),
        s.starts_at.format("%Y-%m-%d %H:%M"),
        s.until
            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
        s.lifted_at
            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
        s.placed_by,
        s.reason
    );
}

fn sanction_header() {
    println!(
        "{:<6} {:<20} {:<10} {:<17} {:<17} {:<17} {:<14} REASON",
        "ID", "USER", "KIND", "FROM", "UNTIL", "LIFTED", "BY"
    );
}

fn print_case(c: &CaseView) {
    println!(
        "{:<6} {:<13} {:<8} {:<20} {:<31} {:<16} {:<8} {}",
        c.case_id,
        c.kind.as_str(),
        c.status.as_str(),
        c.user_ref,
        c.job_id.as_ref().map_or("-".into(), ToString::to_string),
        c.created_at.format("%Y-%m-%d %H:%M"),
        c.decision.map_or("-", |d| d.as_str()),
        c.cause
    );
}

pub async fn people(client: &Client, cmd: PeopleCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        PeopleCommand::Sanction {
            kind,
            user_ref,
            reason,
            until,
            actor,
        } => {
            let req = SanctionRequest {
                reason,
                until: until.as_deref().map(parse_until).transpose()?,
                actor,
            };
            let s = client.sanction_user(&user_ref, kind, &req).await?;
            if json {
                return print_json(&s);
            }
            let end = s.until.map_or("until lifted".into(), |t| {
                format!("until {}", t.format("%Y-%m-%d %H:%M UTC"))
            });
            let what = match kind {
                SanctionKind::Suspension => "suspended",
                SanctionKind::Ban => "banned",
            };
            println!(
                "{} is {what} {end}, with every user linked to them (sanction {})",
                s.user_ref, s.sanction_id
            );
        }
        PeopleCommand::Lift {
            user_ref,
            reason,
            actor,
        } => {
            let lifted = client
                .lift_sanctions(&user_ref, &LiftRequest { reason, actor })
                .await?;
            if json {
                return print_json(&lifted);
            }
            println!(
                "lifted {} sanction{} of {}",
                lifted.lifted.len(),
                if lifted.lifted.len() == 1 { "" } else { "s" },
                lifted.user_ref
            );
        }
        PeopleCommand::Sanctions { user_ref } => {
            let all = client.user_sanctions(&user_ref).await?;
            if json {
                return print_json(&all);
            }
            match &all.active {
                Some(s) => println!("in force: {} {}", s.kind.as_str(), s.sanction_id),
                None => println!("in force: none"),
            }
            sanction_header();
            for s in &all.sanctions {
                print_sanction(s);
            }
        }
    }
    Ok(())
}

pub async fn run(client: &Client, cmd: ModerationCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ModerationCommand::Queue {
            kind,
            status,
            limit,
        } => {
            let query = ListCasesQuery {
                kind: kind.map(|k| match k {
                    KindArg::Report => CaseKind::Report,
                    KindArg::Withheld => CaseKind::Withheld,
                    KindArg::Refusals => CaseKind::Refusals,
                    KindArg::ChildSafety => CaseKind::ChildSafety,
                }),
                status: status.map(|s| match s {
                    StatusArg::Open => CaseStatus::Open,
                    StatusArg::Decided => CaseStatus::Decided,
                }),
                limit: Some(limit),
            };
            let list = client.list_cases(&query).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<6} {:<13} {:<8} {:<20} {:<31} {:<16} {:<8} CAUSE",
                "CASE", "KIND", "STATUS", "USER", "JOB", "OPENED", "DECISION"
            );
            for c in &list.cases {
                print_case(c);
            }
            if list.cases.is_empty() {
                println!("(no cases)");
            }
        }
        ModerationCommand::Show { case_id } => {
            let d = client.get_case(case_id).await?;
            if json {
                return print_json(&d);
            }
            let c = &d.case;
            println!(
                "case {} ({}), {}",
                c.case_id,
                c.kind.as_str(),
                c.status.as_str()
            );
            println!("user:     {}", c.user_ref);
            println!("cause:    {}", c.cause);
            println!("opened:   {}", c.created_at.format("%Y-%m-%d %H:%M:%S UTC"));
            if let (Some(decision), Some(by), Some(at)) = (c.decision, &c.decided_by, c.decided_at)
            {
                println!(
                    "decided:  {} by {by} at {}{}",
                    decision.as_str(),
                    at.format("%Y-%m-%d %H:%M:%S UTC"),
                    c.note
                        .as_deref()
                        .map_or(String::new(), |n| format!(": {n}"))
                );
            }
            match &d.sanction {
                Some(s) => println!(
                    "sanction: {} by {} {}",
                    s.kind.as_str(),
                    s.placed_by,
                    s.until.map_or("until lifted".into(), |t| format!(
                        "until {}",
                        t.format("%Y-%m-%d %H:%M UTC")
                    ))
                ),
                None => println!("sanction: none in force"),
            }
            if let Some(job) = &d.job {
                println!(
                    "job:      {} ({}, {}) artifacts: {}",
                    job.job_id,
                    job.capability,
                    job.status,
                    job.artifact_ids
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                println!("params:   {}", job.params);
            }
            for r in &d.reports {
                println!(
                    "report:   {} {} ({}): {}",
                    r.at.format("%Y-%m-%d %H:%M"),
                    r.reporter,
                    r.channel,
                    r.reason
                );
            }
            for r in &d.refusals {
                println!(
                    "refusal:  {} {} ({}, {}): {}",
                    r.at.format("%Y-%m-%d %H:%M"),
                    r.rule,
                    r.channel,
                    r.code,
                    r.excerpt
                );
            }
        }
        ModerationCommand::Decide {
            case_id,
            decision,
            until,
            note,
            actor,
        } => {
            let req = DecideRequest {
                decision: match decision {
                    DecisionArg::Dismiss => Decision::Dismiss,
                    DecisionArg::Suspend => Decision::Suspend,
                    DecisionArg::Ban => Decision::Ban,
                    DecisionArg::Lift => Decision::Lift,
                },
                until: until.as_deref().map(parse_until).transpose()?,
                note,
                actor,
            };
            let done = client.decide_case(case_id, &req).await?;
            if json {
                return print_json(&done);
            }
            println!(
                "case {} decided: {}",
                done.case.case_id,
                req.decision.as_str()
            );
            if let Some(s) = &done.sanction {
                println!("placed:");
                sanction_header();
                print_sanction(s);
            }
            if !done.lifted.is_empty() {
                println!("lifted:");
                sanction_header();
                for s in &done.lifted {
                    print_sanction(s);
                }
            }
        }
        ModerationCommand::Audit {
            user_ref,
            limit,
            before,
        } => {
            let log = client
                .audit_log(&AuditQuery {
                    user_ref,
                    limit: Some(limit),
                    before,
                })
                .await?;
            if json {
                return print_json(&log);
            }
            println!(
                "{:<6} {:<20} {:<16} {:<13} {:<20} {:<6} DETAIL",
                "ID", "AT", "ACTOR", "ACTION", "USER", "CASE"
            );
            for a in &log.entries {
                println!(
                    "{:<6} {:<20} {:<16} {:<13} {:<20} {:<6} {}",
                    a.id,
                    a.at.format("%Y-%m-%d %H:%M:%S"),
                    a.actor,
                    a.action,
                    a.user_ref.as_ref().map_or("-".into(), ToString::to_string),
                    a.case_id.map_or("-".into(), |c| c.to_string()),
                    a.detail
                );
            }
            if log.entries.is_empty() {
                println!("(no entries)");
            }
        }
    }
    Ok(())
}
