//! UCUM unit conversion for the units vital signs and laboratory results arrive in.
//!
//! Conversions are explicit; a unit not listed is rejected rather than guessed (a °F value
//! read as °C is a fever of 98, a creatinine in µmol/L read as mg/dL is stage-3 AKI).
//! Mass ↔ substance concentrations (mg/dL ↔ µmol/L) need the analyte's molar mass, which the
//! feature spec declares; without it such a conversion is refused. Human-readable spellings
//! EHRs put in `Quantity.unit` are mapped to UCUM codes first.
//!
//! `models/featurize.py` carries the same conversion table and reads the same spellings
//! (`models/terminology.toml`); the parity test keeps the two equal.
//!
//! UCUM codes are for machines ("Cel", "mm[Hg]", "10*3/uL"); cards and the app show a
//! clinician the units a chart shows ("°C", "mmHg", "×10³/µL"), each rounded as charts round it
//! ([`DISPLAY`], overridden per feature by `decimals` in `features.toml`).

use super::terminology::terminology;

/// What a unit measures; only units of the same kind convert into each other (mass and
/// substance concentrations through a molar mass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rate,
    Percent,
    Pressure,
    Dimensionless,
    /// Factor to mg/dL.
    MassConcentration,
    /// Factor to mmol/L.
    SubstanceConcentration,
    /// Factor to 10*9/L (= 10*3/uL).
    CellCount,
    /// Factor to L/min.
    Flow,
}

/// `(UCUM code, kind, factor to the kind's base unit)`. Temperatures are handled apart
/// (they have offsets).
const LINEAR: &[(&str, Kind, f64)] = &[
    ("/min", Kind::Rate, 1.0),
    ("{beats}/min", Kind::Rate, 1.0),
    ("{breaths}/min", Kind::Rate, 1.0),
    ("{counts}/min", Kind::Rate, 1.0),
    ("1/min", Kind::Rate, 1.0),
    ("%", Kind::Percent, 1.0),
    ("mm[Hg]", Kind::Pressure, 1.0),
    ("kPa", Kind::Pressure, 7.500_615_75),
    ("1", Kind::Dimensionless, 1.0),
    ("", Kind::Dimensionless, 1.0),
    ("mg/dL", Kind::MassConcentration, 1.0),
    ("mg/L", Kind::MassConcentration, 0.1),
    ("g/L", Kind::MassConcentration, 100.0),
    ("g/dL", Kind::MassConcentration, 1000.0),
    ("mmol/L", Kind::SubstanceConcentration, 1.0),
    ("umol/L", Kind::SubstanceConcentration, 0.001),
    ("10*9/L", Kind::CellCount, 1.0),
    ("10*3/uL", Kind::CellCount, 1.0),
    ("10*3/mm3", Kind::CellCount, 1.0),
    ("/nL", Kind::CellCount, 1.0),
    ("L/min", Kind::Flow, 1.0),
    ("mL/min", Kind::Flow, 0.001),
];

/// How a canonical unit is shown: `(UCUM code, text written after the number, decimals)`.
/// The text carries its own leading space, so "96%" and "28/min" sit against the number and
/// "39.2 °C" does not. The decimals are the usual clinical rounding for the unit; a feature
/// whose quantity is read more finely (creatinine in mg/dL: 2) or coarsely (platelets: 0)
/// declares its own `decimals` in `features.toml`.
const DISPLAY: &[(&str, &str, u8)] = &[
    ("/min", "/min", 0),
    ("{beats}/min", "/min", 0),
    ("{breaths}/min", "/min", 0),
    ("{counts}/min", "/min", 0),
    ("1/min", "/min", 0),
    ("%", "%", 0),
    ("mm[Hg]", " mmHg", 0),
    ("kPa", " kPa", 1),
    ("1", "", 0),
    ("mg/dL", " mg/dL", 1),
    ("mg/L", " mg/L", 1),
    ("g/L", " g/L", 0),
    ("g/dL", " g/dL", 1),
    ("mmol/L", " mmol/L", 1),
    ("umol/L", " µmol/L", 0),
    ("10*9/L", " ×10⁹/L", 1),
    ("10*3/uL", " ×10³/µL", 1),
    ("10*3/mm3", " ×10³/mm³", 1),
    ("/nL", "/nL", 1),
    ("L/min", " L/min", 1),
    ("mL/min", " mL/min", 0),
    ("Cel", " °C", 1),
    ("[degF]", " °F", 1),
    ("K", " K", 1),
];

/// Most decimals a feature may ask to be shown with (beyond that, a chart shows noise).
pub const MAX_DECIMALS: u8 = 3;

/// The decimals cards use for `unit` unless its feature declares its own (0 for a unit not
/// in the table).
pub fn default_decimals(unit: &str) -> u8 {
    DISPLAY
        .iter()
        .find(|(u, ..)| *u == unit)
        .map_or(0, |&(.., d)| d)
}

/// The text written after a number in `unit` ("°C" for `Cel`). A unit without a display
/// form keeps its code, after a space; every canonical unit has one (a unit test holds it).
pub fn display_suffix(unit: &str) -> String {
    DISPLAY
        .iter()
        .find(|(u, ..)| *u == unit)
        .map_or_else(|| format!(" {unit}"), |&(_, text, _)| text.to_owned())
}

/// `value` rounded to `decimals` (at most [`MAX_DECIMALS`]) without the unit: "39.2", "84",
/// never "-0".
pub fn display_number(value: f64, decimals: u8) -> String {
    let d = usize::from(decimals.min(MAX_DECIMALS));
    let text = format!("{value:.d$}");
    // A small negative value rounds to "-0" / "-0.0": a chart shows 0.
    if text.starts_with('-') && text[1..].chars().all(|c| c == '0' || c == '.') {
        text[1..].to_owned()
    } else {
        text
    }
}

/// `value` in `unit` as a clinician reads it: "39.2 °C", "84 mmHg", "12.5 ×10³/µL", "96%".
pub fn display(value: f64, unit: &str, decimals: u8) -> String {
    format!(
        "{}{}",
        display_number(value, decimals),
        display_suffix(unit)
    )
}

const TEMPERATURES: &[&str] = &["Cel", "[degF]", "K"];

/// Whether a feature may be declared in `unit` (its values are converted to it).
pub fn is_canonical(unit: &str) -> bool {
    TEMPERATURES.contains(&unit) || LINEAR.iter().any(|(u, ..)| *u == unit && !u.is_empty())
}

/// Maps the spellings EHRs send to UCUM codes (`[units]` of `models/terminology.toml`);
/// anything else is taken as a UCUM code.
fn ucum_of(unit: &str) -> &str {
    terminology().ucum(unit)
}

fn to_celsius(value: f64, unit: &str) -> Option<f64> {
    match unit {
        "Cel" => Some(value),
        "[degF]" => Some((value - 32.0) * 5.0 / 9.0),
        "K" => Some(value - 273.15),
        _ => None,
    }
}

fn from_celsius(value: f64, unit: &str) -> Option<f64> {
    match unit {
        "Cel" => Some(value),
        "[degF]" => Some(value * 9.0 / 5.0 + 32.0),
        "K" => Some(value + 273.15),
        _ => None,
    }
}

fn linear(unit: &str) -> Option<(Kind, f64)> {
    LINEAR
        .iter()
        .find(|(u, ..)| *u == unit)
        .map(|&(_, kind, factor)| (kind, factor))
}

/// Converts `value` from `unit` (UCUM code, or a known human spelling) to the canonical unit
/// `to`. `molar_mass` (g/mol) allows mass ↔ substance concentration; `None` refuses it.
pub fn convert(value: f64, unit: &str, to: &str, molar_mass: Option<f64>) -> Option<f64> {
    let from = ucum_of(unit.trim());
    let converted = if from == to {
        value
    } else if TEMPERATURES.contains(&to) {
        from_celsius(to_celsius(value, from)?, to)?
    } else {
        let (from_kind, from_factor) = linear(from)?;
        let (to_kind, to_factor) = linear(to)?;
        let base = value * from_factor;
        let base = match (from_kind, to_kind) {
            (a, b) if a == b => base,
            // c [mmol/L] × M [g/mol] = c·M mg/L = c·M / 10 mg/dL
            (Kind::SubstanceConcentration, Kind::MassConcentration) => base * molar_mass? / 10.0,
            (Kind::MassConcentration, Kind::SubstanceConcentration) => base * 10.0 / molar_mass?,
            _ => return None,
        };
        base / to_factor
    };
    converted.is_finite().then_some(converted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(x: Option<f64>, places: i32) -> Option<f64> {
        let k = 10f64.powi(places);
        x.map(|v| (v * k).round() / k)
    }

    #[test]
    fn converts_vital_sign_units_and_refuses_the_rest() {
        assert_eq!(round(convert(98.6, "[degF]", "Cel", None), 1), Some(37.0));
        assert_eq!(round(convert(98.6, "°F", "Cel", None), 1), Some(37.0));
        assert_eq!(round(convert(310.15, "K", "Cel", None), 2), Some(37.0));
        assert_eq!(convert(88.0, "{beats}/min", "/min", None), Some(88.0));
        assert_eq!(
            convert(16.0, "kPa", "mm[Hg]", None).map(f64::round),
            Some(120.0)
        );
        assert_eq!(convert(37.0, "Cel", "Cel", None), Some(37.0));
        assert_eq!(convert(37.0, "mg/dL", "Cel", None), None);
        assert_eq!(convert(37.0, "", "Cel", None), None);
        assert_eq!(convert(f64::NAN, "Cel", "Cel", None), None);
        assert_eq!(convert(2.0, "L/min", "L/min", None), Some(2.0));
        assert_eq!(convert(500.0, "mL/min", "L/min", None), Some(0.5));
    }

    #[test]
    fn converts_laboratory_units_through_the_declared_molar_mass() {
        // Creatinine 113.12 g/mol: 88.4 µmol/L = 1.00 mg/dL (KDIGO's conversion).
        assert_eq!(
            round(convert(88.4, "umol/L", "mg/dL", Some(113.12)), 2),
            Some(1.0)
        );
        assert_eq!(
            round(convert(88.4, "µmol/L", "mg/dL", Some(113.12)), 2),
            Some(1.0)
        );
        assert_eq!(
            round(convert(1.0, "mg/dL", "umol/L", Some(113.12)), 1),
            Some(88.4)
        );
        // Lactate 90.08 g/mol: 18 mg/dL ≈ 2.0 mmol/L.
        assert_eq!(
            round(convert(18.0, "mg/dL", "mmol/L", Some(90.08)), 2),
            Some(2.0)
        );
        assert_eq!(convert(10.0, "mg/L", "mg/dL", None), Some(1.0));
        // Without a molar mass a mass ↔ substance conversion is refused, never guessed.
        assert_eq!(convert(88.4, "umol/L", "mg/dL", None), None);
        // Cell counts: 10*9/L and 10*3/uL are the same quantity.
        assert_eq!(convert(12.5, "10*9/L", "10*3/uL", None), Some(12.5));
        assert_eq!(convert(12.5, "K/uL", "10*3/uL", None), Some(12.5));
        // Different kinds never convert.
        assert_eq!(convert(1.0, "mmol/L", "10*3/uL", Some(1.0)), None);
        assert_eq!(convert(1.0, "mg/dL", "%", None), None);
        assert_eq!(convert(1.0, "mg/dL", "mg/dL", None), Some(1.0));
        assert_eq!(convert(1.0, "mg/dl", "mg/dL", None), Some(1.0));
        assert_eq!(convert(1.0, "furlong/fortnight", "mg/dL", None), None);
    }

    #[test]
    fn every_canonical_unit_has_a_display_form_without_ucum_syntax() {
        for (unit, ..) in LINEAR.iter().filter(|(u, ..)| !u.is_empty()) {
            assert!(DISPLAY.iter().any(|(u, ..)| u == unit), "{unit}");
        }
        for t in TEMPERATURES {
            assert!(DISPLAY.iter().any(|(u, ..)| u == t), "{t}");
        }
        for (unit, text, _) in DISPLAY {
            for raw in ["Cel", "[", "{", "*", "umol", "uL"] {
                assert!(!text.contains(raw), "{unit} shows as {text:?}");
            }
        }
    }

    #[test]
    fn values_are_shown_in_clinical_units_and_rounding() {
        assert_eq!(display(39.17, "Cel", default_decimals("Cel")), "39.2 °C");
        assert_eq!(
            display(84.4, "mm[Hg]", default_decimals("mm[Hg]")),
            "84 mmHg"
        );
        assert_eq!(display(12.46, "10*3/uL", 1), "12.5 ×10³/µL");
        assert_eq!(display(95.6, "%", 0), "96%");
        assert_eq!(display(27.5, "/min", 0), "28/min");
        assert_eq!(display(1.234, "mg/dL", 2), "1.23 mg/dL");
        assert_eq!(
            display(109.4, "umol/L", default_decimals("umol/L")),
            "109 µmol/L"
        );
        assert_eq!(
            display(2.04, "mmol/L", default_decimals("mmol/L")),
            "2.0 mmol/L"
        );
        assert_eq!(display(1.0, "1", 0), "1");
        assert_eq!(display_number(-0.01, 1), "0.0");
        assert_eq!(display_number(-0.4, 0), "0");
        assert_eq!(display_number(-1.0, 0), "-1");
        assert_eq!(display_number(1.23456, 9), "1.235");
        assert_eq!(display_suffix("furlong"), " furlong");
    }

    #[test]
    fn canonical_units_are_the_ones_features_can_declare() {
        for u in [
            "Cel", "/min", "%", "mm[Hg]", "1", "mg/dL", "mmol/L", "10*3/uL", "L/min",
        ] {
            assert!(is_canonical(u), "{u}");
        }
        assert!(!is_canonical(""));
        assert!(!is_canonical("mg/dl"));
    }
}
