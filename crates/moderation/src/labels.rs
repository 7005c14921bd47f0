//! NudeNet's eighteen labels, in the order of the model's class outputs.
//!
//! The names are NudeNet's own (`FEMALE_BREAST_EXPOSED`...), so a label read
//! from configuration or stored with an artifact means what it means in the
//! Python package's documentation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What NudeNet's detector finds: a body part, exposed or covered, or a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Label {
    FemaleGenitaliaCovered,
    FaceFemale,
    ButtocksExposed,
    FemaleBreastExposed,
    FemaleGenitaliaExposed,
    MaleBreastExposed,
    AnusExposed,
    FeetExposed,
    BellyCovered,
    FeetCovered,
    ArmpitsCovered,
    ArmpitsExposed,
    FaceMale,
    BellyExposed,
    MaleGenitaliaExposed,
    AnusCovered,
    FemaleBreastCovered,
    ButtocksCovered,
}

impl Label {
    /// Every label, indexed as the model's class outputs are.
    pub const ALL: [Label; 18] = [
        Label::FemaleGenitaliaCovered,
        Label::FaceFemale,
        Label::ButtocksExposed,
        Label::FemaleBreastExposed,
        Label::FemaleGenitaliaExposed,
        Label::MaleBreastExposed,
        Label::AnusExposed,
        Label::FeetExposed,
        Label::BellyCovered,
        Label::FeetCovered,
        Label::ArmpitsCovered,
        Label::ArmpitsExposed,
        Label::FaceMale,
        Label::BellyExposed,
        Label::MaleGenitaliaExposed,
        Label::AnusCovered,
        Label::FemaleBreastCovered,
        Label::ButtocksCovered,
    ];

    /// NudeNet's name for the label (`"FEMALE_BREAST_EXPOSED"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::FemaleGenitaliaCovered => "FEMALE_GENITALIA_COVERED",
            Label::FaceFemale => "FACE_FEMALE",
            Label::ButtocksExposed => "BUTTOCKS_EXPOSED",
            Label::FemaleBreastExposed => "FEMALE_BREAST_EXPOSED",
            Label::FemaleGenitaliaExposed => "FEMALE_GENITALIA_EXPOSED",
            Label::MaleBreastExposed => "MALE_BREAST_EXPOSED",
            Label::AnusExposed => "ANUS_EXPOSED",
            Label::FeetExposed => "FEET_EXPOSED",
            Label::BellyCovered => "BELLY_COVERED",
            Label::FeetCovered => "FEET_COVERED",
            Label::ArmpitsCovered => "ARMPITS_COVERED",
            Label::ArmpitsExposed => "ARMPITS_EXPOSED",
            Label::FaceMale => "FACE_MALE",
            Label::BellyExposed => "BELLY_EXPOSED",
            Label::MaleGenitaliaExposed => "MALE_GENITALIA_EXPOSED",
            Label::AnusCovered => "ANUS_COVERED",
            Label::FemaleBreastCovered => "FEMALE_BREAST_COVERED",
            Label::ButtocksCovered => "BUTTOCKS_COVERED",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of NudeNet's labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown NudeNet label {0:?} (labels are NudeNet's names, such as FEMALE_BREAST_EXPOSED)")]
pub struct UnknownLabel(pub String);

impl FromStr for Label {
    type Err = UnknownLabel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Label::ALL
            .into_iter()
            .find(|label| label.as_str() == s)
            .ok_or_else(|| UnknownLabel(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for label in Label::ALL {
            assert_eq!(label.as_str().parse::<Label>(), Ok(label));
            let json = serde_json::to_string(&label).unwrap();
            assert_eq!(json, format!("\"{}\"", label.as_str()));
        }
        assert!("female_breast_exposed".parse::<Label>().is_err());
    }
}
