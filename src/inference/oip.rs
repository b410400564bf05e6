//! Open Inference Protocol (KServe v2) JSON shapes: what bedside serves at `/v2/models/...`
//! and what its remote backend sends to Triton or KServe.
//!
//! Field names are the protocol's ("Inference Request JSON Object", "Model Metadata Response
//! JSON Object"). bedside's models take one FP32 tensor `[batch, steps, channels]` and return
//! one FP32 tensor `[batch, 1]`, named as Triton's PyTorch backend names them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Input tensor name (Triton PyTorch backend convention).
pub const INPUT_NAME: &str = "INPUT__0";
/// Output tensor name.
pub const OUTPUT_NAME: &str = "OUTPUT__0";

/// `GET /v2/models/{name}[/versions/{version}]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// Name, type and shape of a tensor; `-1` marks the batch dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    pub inputs: Vec<InferInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Value>>,
}

/// One input tensor. `data` is row-major, flat or nested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    pub data: Value,
}

/// Inference response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferOutput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Value,
}

/// Flattens `data` (nested arrays of numbers) row-major into `out`. `false` on anything else.
pub fn flatten_numbers(data: &Value, out: &mut Vec<f32>) -> bool {
    match data {
        Value::Array(items) => items.iter().all(|v| flatten_numbers(v, out)),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => {
                out.push(x as f32);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_and_flat_data_flatten_the_same_and_junk_is_refused() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(flatten_numbers(&json!([[1, 2], [3, 4.5]]), &mut a));
        assert!(flatten_numbers(&json!([1, 2, 3, 4.5]), &mut b));
        assert_eq!(a, b);
        assert!(!flatten_numbers(&json!([1, "2"]), &mut Vec::new()));
        assert!(!flatten_numbers(&json!({"a": 1}), &mut Vec::new()));
    }
}
