//! What became of one scored (or unscored) call, whether its model could show a card, and what
//! the score was made from: the words and the data-quality summary every prediction row
//! carries. The words are stored as the same lower-case text they always were, so existing
//! rows, reports and SQL keep reading them.

use std::fmt;

/// What a service did with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A card was shown at the model's indicator.
    Shown,
    /// Scored below every threshold: no card.
    BelowThreshold,
    /// The guardrails did not let the model score (too little or implausible data).
    Abstained,
    /// A card was held back: the patient had one recently, or the unit's budget is spent.
    Suppressed,
    /// A card was shown as info instead of warning/critical (budget).
    Downgraded,
    /// Another service of the same dedup group showed a card on the same observations.
    Deduplicated,
    /// Scored and recorded only (a shadow service or model version).
    Shadow,
    /// The model gave no answer in time.
    NoScore,
    /// The service is switched off.
    Disabled,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 9] = [
        Self::Shown,
        Self::BelowThreshold,
        Self::Abstained,
        Self::Suppressed,
        Self::Downgraded,
        Self::Deduplicated,
        Self::Shadow,
        Self::NoScore,
        Self::Disabled,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shown => "shown",
            Self::BelowThreshold => "below_threshold",
            Self::Abstained => "abstained",
            Self::Suppressed => "suppressed",
            Self::Downgraded => "downgraded",
            Self::Deduplicated => "deduplicated",
            Self::Shadow => "shadow",
            Self::NoScore => "no_score",
            Self::Disabled => "disabled",
        }
    }

    /// The outcome a stored word names.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Whether a card reached the clinician (as scored or downgraded).
    pub fn card_shown(self) -> bool {
        matches!(self, Self::Shown | Self::Downgraded)
    }

    /// Whether the model gave no score (abstained, or no answer in time).
    pub fn unscored(self) -> bool {
        matches!(self, Self::Abstained | Self::NoScore)
    }
}

/// Whether a prediction's card could reach a clinician.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its card may be shown.
    #[default]
    Active,
    /// Scored and recorded only (silent evaluation).
    Shadow,
}

impl Mode {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Shadow => "shadow",
        }
    }

    /// The mode a stored word names.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Shadow]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// What one prediction was made from: the measurements the model read, and the observations
/// of its inputs that were left out, counted by reason (a unit that cannot be converted, a
/// status that is not final, no time zone, unreadable JSON, an implausible value), and the
/// measurements read at the edge of the training range. Stored with the prediction, so a
/// reviewer sees how complete the data behind a score were.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataQuality {
    /// Measurements in the model's window.
    pub used: usize,
    /// Observations of the model's inputs not used, by reason (an implausible value, a
    /// unit that cannot be converted, …).
    pub dropped: std::collections::BTreeMap<String, usize>,
    /// Measurements used but read at the edge of the range the model was trained on, by
    /// reason and feature ("outside training range, clamped: spo2"). Absent in records
    /// written before it existed.
    #[serde(default)]
    pub clamped: std::collections::BTreeMap<String, usize>,
    /// The newest value of each input feature in the window (canonical unit, as measured):
    /// what input-drift monitoring compares with the training distribution. Absent in records
    /// written before it existed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub latest: std::collections::BTreeMap<String, f64>,
}

macro_rules! word {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
word!(Outcome);
word!(Mode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        for m in [Mode::Active, Mode::Shadow] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        assert_eq!(Outcome::parse("Shown"), None);
        assert_eq!(
            serde_json::to_string(&Outcome::BelowThreshold).unwrap(),
            "\"below_threshold\""
        );
    }
}
