//! The export's MEDS files in Parquet, the format MEDS tools read (`meds` 0.4 schema): the data
//! (`subject_id` int64, `time` timestamp[us] — null for static facts —, `code`, `numeric_value`
//! float32, `text_value`, plus bedside's string columns) and the codes table (`code`,
//! `description`, `parent_codes` list<string>). Written with the `parquet` crate's column API,
//! uncompressed, in row groups of [`ROW_GROUP`] events; nothing in the file depends on when it
//! was written, so the same export is the same bytes.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::export::MedsEvent;

/// Events per row group.
const ROW_GROUP: usize = 100_000;

const DATA_SCHEMA: &str = "message meds_data {
    REQUIRED INT64 subject_id;
    OPTIONAL INT64 time (TIMESTAMP(MICROS, false));
    REQUIRED BYTE_ARRAY code (STRING);
    OPTIONAL FLOAT numeric_value;
    OPTIONAL BYTE_ARRAY text_value (STRING);
    OPTIONAL BYTE_ARRAY prediction (STRING);
    OPTIONAL BYTE_ARRAY mode (STRING);
    OPTIONAL BYTE_ARRAY service (STRING);
    OPTIONAL BYTE_ARRAY indicator (STRING);
}";

/// The data table's Arrow schema (Arrow IPC, base64), stored under the `ARROW:schema` key as
/// Arrow writers do: Parquet has one string type, and MEDS asks for `text_value` as
/// `large_string`; with this key pyarrow, polars and arrow-rs read the columns back with the
/// MEDS types. Generated from the schema above by pyarrow 23; `tests/fixtures/meds/
/// check_export.py` validates the files against the `meds` package's own schema.
const DATA_ARROW_SCHEMA: &str = "/////xgCAAAQAAAAAAAKAAwABgAFAAgACgAAAAABBAAMAAAACAAIAAAABAAIAAAABAAAAAkAAACoAQAAZAEAACQBAADsAAAAvAAAAIwAAABgAAAANAAAAAQAAADM/v//AAABBRAAAAAcAAAABAAAAAAAAAAJAAAAaW5kaWNhdG9yAAAA/P7///j+//8AAAEFEAAAABgAAAAEAAAAAAAAAAcAAABzZXJ2aWNlACT///8g////AAABBRAAAAAYAAAABAAAAAAAAAAEAAAAbW9kZQAAAABM////SP///wAAAQUQAAAAHAAAAAQAAAAAAAAACgAAAHByZWRpY3Rpb24AAHj///90////AAABFBAAAAAcAAAABAAAAAAAAAAKAAAAdGV4dF92YWx1ZQAApP///6D///8AAAEDEAAAACAAAAAEAAAAAAAAAA0AAABudW1lcmljX3ZhbHVlAAAAmv///wAAAQCU////AAAABRAAAAAcAAAABAAAAAAAAAAEAAAAY29kZQAAAAAEAAQABAAAABAAFAAIAAYABwAMAAAAEAAQAAAAAAABChAAAAAcAAAABAAAAAAAAAAEAAAAdGltZQAABgAIAAYABgAAAAAAAgAQABQACAAAAAcADAAAABAAEAAAAAAAAAIQAAAAJAAAAAQAAAAAAAAACgAAAHN1YmplY3RfaWQAAAgADAAIAAcACAAAAAAAAAFAAAAAAAAAAA==";

const CODES_SCHEMA: &str = "message meds_codes {
    REQUIRED BYTE_ARRAY code (STRING);
    OPTIONAL BYTE_ARRAY description (STRING);
    OPTIONAL group parent_codes (LIST) {
        REPEATED group list {
            OPTIONAL BYTE_ARRAY element (STRING);
        }
    }
}";

fn err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Values and definition levels of one optional column.
fn optional<T, V>(rows: &[T], get: impl Fn(&T) -> Option<V>) -> (Vec<V>, Vec<i16>) {
    let mut values = Vec::new();
    let levels = rows
        .iter()
        .map(|r| match get(r) {
            Some(v) => {
                values.push(v);
                1
            }
            None => 0,
        })
        .collect();
    (values, levels)
}

fn text(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// Writes `events` (already sorted) to `path`.
pub fn write_data(path: &Path, events: &[MedsEvent]) -> Result<(), String> {
    let at = err(path);
    let schema = Arc::new(parse_message_type(DATA_SCHEMA).map_err(&at)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "ARROW:schema".to_owned(),
                DATA_ARROW_SCHEMA.to_owned(),
            )]))
            .build(),
    );
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(&at)?;
    for (n, rows) in events.chunks(ROW_GROUP).enumerate() {
        let mut group = writer.next_row_group().map_err(&at)?;
        let mut index = 0;
        while let Some(mut column) = group.next_column().map_err(&at)? {
            match index {
                0 => {
                    let ids: Vec<i64> = rows.iter().map(|e| e.subject_id).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&ids, None, None)
                        .map_err(&at)?;
                }
                1 => {
                    let (times, levels) = optional(rows, |e| e.time.map(|t| t.timestamp_micros()));
                    column
                        .typed::<Int64Type>()
                        .write_batch(&times, Some(&levels), None)
                        .map_err(&at)?;
                }
                2 => {
                    let codes: Vec<ByteArray> = rows.iter().map(|e| text(&e.code)).collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&codes, None, None)
                        .map_err(&at)?;
                }
                3 => {
                    // MEDS stores values as float32.
                    let (values, levels) = optional(rows, |e| e.numeric_value.map(|v| v as f32));
                    column
                        .typed::<FloatType>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(&at)?;
                }
                i => {
                    let field = |e: &MedsEvent| -> Option<ByteArray> {
                        match i {
                            4 => e.text_value.as_deref(),
                            5 => e.prediction.as_deref(),
                            6 => e.mode.as_deref(),
                            7 => e.service.as_deref(),
                            _ => e.indicator.as_deref(),
                        }
                        .map(text)
                    };
                    let (values, levels) = optional(rows, field);
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(&at)?;
                }
            }
            column.close().map_err(&at)?;
            index += 1;
        }
        group.close().map_err(&at)?;
        if events.len() > ROW_GROUP {
            eprintln!(
                "  {} / {} events written (Parquet)",
                ((n + 1) * ROW_GROUP).min(events.len()),
                events.len()
            );
        }
    }
    writer.close().map_err(&at)?;
    Ok(())
}

/// Writes the codes table `(code, description)` with empty `parent_codes` to `path`.
pub fn write_codes(path: &Path, codes: &[(&str, &str)]) -> Result<(), String> {
    let at = err(path);
    let schema = Arc::new(parse_message_type(CODES_SCHEMA).map_err(&at)?);
    let props = Arc::new(WriterProperties::builder().build());
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(&at)?;
    let mut group = writer.next_row_group().map_err(&at)?;
    let mut index = 0;
    while let Some(mut column) = group.next_column().map_err(&at)? {
        let w = column.typed::<ByteArrayType>();
        match index {
            0 => {
                let values: Vec<ByteArray> = codes.iter().map(|(c, _)| text(c)).collect();
                w.write_batch(&values, None, None).map_err(&at)?;
            }
            1 => {
                let values: Vec<ByteArray> = codes.iter().map(|(_, d)| text(d)).collect();
                w.write_batch(&values, Some(&vec![1; codes.len()]), None)
                    .map_err(&at)?;
            }
            _ => {
                // An empty (not null) list per row: defined to the list, no element.
                let levels = vec![1; codes.len()];
                let repetition = vec![0; codes.len()];
                w.write_batch(&[], Some(&levels), Some(&repetition))
                    .map_err(&at)?;
            }
        }
        column.close().map_err(&at)?;
        index += 1;
    }
    group.close().map_err(&at)?;
    writer.close().map_err(&at)?;
    Ok(())
}
