//! Token costs and billing days.
//!
//! A job's cost is fixed when it is created, from its validated parameters, and is
//! reserved in the same transaction that inserts it. Quotas are per user and per
//! billing day; the day turns over at midnight at a configured UTC offset (UTC by
//! default).

use chrono::{DateTime, Days, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::Millis;

/// How many tokens each kind of job costs. All values are configurable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostRules {
    /// Tokens per started megapixel (1024×1024) of an image: 1024×1024 costs 1.
    pub image_per_megapixel: i64,
    /// Tokens per second of video.
    pub video_per_second: i64,
    /// Tokens per started 1,024 tokens of text a job may generate (`max_tokens`).
    pub text_per_1k_tokens: i64,
    /// Tokens per speech-to-text job.
    pub speech_to_text: i64,
    /// Tokens per text-to-speech job.
    pub text_to_speech: i64,
}

impl Default for CostRules {
    fn default() -> Self {
        Self {
            image_per_megapixel: 1,
            video_per_second: 2,
            text_per_1k_tokens: 1,
            speech_to_text: 1,
            text_to_speech: 1,
        }
    }
}

const MEGAPIXEL: u64 = 1024 * 1024;

/// What a job's price depends on: its kind and size. Parameters describe
/// themselves this way (`JobParams::size`), so pricing needs no knowledge of
/// how each capability's parameters are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobSize {
    Image { width: u32, height: u32 },
    Video { duration_seconds: u32 },
    Text { max_tokens: u32 },
    SpeechToText,
    TextToSpeech,
}

impl CostRules {
    /// The cost of a job with these (validated) parameters. Never negative.
    ///
    /// The rules are configuration and unbounded: a product too large for an
    /// `i64` stops at `i64::MAX` (no plan can pay it) rather than overflow,
    /// which panicked in debug builds and wrapped, possibly to a free job,
    /// in release builds (found by the `params` fuzz target).
    pub fn cost(&self, size: JobSize) -> i64 {
        let c = match size {
            JobSize::Image { width, height } => {
                let pixels = u64::from(width) * u64::from(height);
                (pixels.div_ceil(MEGAPIXEL) as i64).saturating_mul(self.image_per_megapixel)
            }
            JobSize::Video { duration_seconds } => {
                i64::from(duration_seconds).saturating_mul(self.video_per_second)
            }
            JobSize::Text { max_tokens } => {
                i64::from(max_tokens.div_ceil(1024)).saturating_mul(self.text_per_1k_tokens)
            }
            JobSize::SpeechToText => self.speech_to_text,
            JobSize::TextToSpeech => self.text_to_speech,
        };
        c.max(0)
    }
}

/// Where billing days begin and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BillingClock {
    offset: FixedOffset,
}

impl Default for BillingClock {
    fn default() -> Self {
        Self::utc()
    }
}

impl BillingClock {
    /// Days that turn over at midnight UTC.
    pub fn utc() -> Self {
        Self {
            offset: FixedOffset::east_opt(0).expect("zero offset"),
        }
    }

    /// Parses an offset such as `+00:00`, `-05:00` or `+05:30`.
    pub fn from_offset(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a UTC offset like +00:00 or -05:30");
        let (sign, rest) = match text.as_bytes().first() {
            Some(b'+') => (1, &text[1..]),
            Some(b'-') => (-1, &text[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 14 || m > 59 {
            return Err(bad());
        }
        let offset = FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)?;
        Ok(Self { offset })
    }

    /// The billing day an instant falls in.
    pub fn day_of(&self, now: Millis) -> NaiveDate {
        self.local(now).date_naive()
    }

    /// When the billing day containing `now` ends and quotas reset.
    pub fn next_reset(&self, now: Millis) -> Millis {
        let next_day = self
            .day_of(now)
            .checked_add_days(Days::new(1))
            .expect("date in range");
        let midnight = next_day.and_hms_opt(0, 0, 0).expect("valid midnight");
        self.offset
            .from_local_datetime(&midnight)
            .single()
            .expect("fixed offsets have no gaps")
            .timestamp_millis()
    }

    fn local(&self, now: Millis) -> DateTime<FixedOffset> {
        DateTime::<Utc>::from_timestamp_millis(now)
            .unwrap_or_default()
            .with_timezone(&self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32) -> JobSize {
        JobSize::Image { width, height }
    }

    #[test]
    fn an_image_up_to_1024_square_costs_one_token() {
        let rules = CostRules::default();
        assert_eq!(rules.cost(image(1024, 1024)), 1);
        assert_eq!(rules.cost(image(512, 512)), 1);
        assert_eq!(rules.cost(image(1024, 1032)), 2);
        assert_eq!(rules.cost(image(2048, 2048)), 4);
    }

    #[test]
    fn video_and_text_scale_with_their_size() {
        let rules = CostRules::default();
        let video = JobSize::Video {
            duration_seconds: 4,
        };
        assert_eq!(rules.cost(video), 8);
        let text = |max_tokens| JobSize::Text { max_tokens };
        assert_eq!(rules.cost(text(512)), 1);
        assert_eq!(rules.cost(text(1025)), 2);
    }

    #[test]
    fn days_turn_over_at_midnight_of_the_offset() {
        // 2026-03-01T23:30:00Z
        let t = 1_772_407_800_000;
        let utc = BillingClock::utc();
        assert_eq!(utc.day_of(t).to_string(), "2026-03-01");
        assert_eq!(utc.next_reset(t), 1_772_409_600_000); // 2026-03-02T00:00Z
        let plus_one = BillingClock::from_offset("+01:00").unwrap();
        assert_eq!(plus_one.day_of(t).to_string(), "2026-03-02");
        assert_eq!(plus_one.next_reset(t), 1_772_406_000_000 + 86_400_000);
        assert!(BillingClock::from_offset("UTC").is_err());
        assert!(BillingClock::from_offset("+25:00").is_err());
        assert_eq!(
            BillingClock::from_offset("-05:30")
                .unwrap()
                .day_of(t)
                .to_string(),
            "2026-03-01"
        );
    }
}
