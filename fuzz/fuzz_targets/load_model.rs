//! Fuzzes the ONNX loader: any bytes must either load or give an error naming the source,
//! never panic or allocate without bound; a model that loads must save and reload to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match kvant_graph::load_model_bytes(data, None, "fuzz") {
        Ok(model) => {
            let bytes = kvant_graph::model_to_bytes(&model);
            let again = kvant_graph::load_model_bytes(&bytes, None, "fuzz")
                .unwrap_or_else(|e| panic!("a saved model does not reload: {e}"));
            assert!(
                kvant_graph::model_to_bytes(&again) == bytes,
                "saving a reloaded model gives different bytes"
            );
        }
        Err(e) => assert!(
            e.to_string().contains("fuzz"),
            "error without the source: {e}"
        ),
    }
});
