use serde_json::json;

use super::*;

#[test]
fn model_urls() {
    let ok = Endpoint::parse("http://h:8080/v2/models/m/infer", "--x").unwrap();
    assert_eq!(ok.model_url, "http://h:8080/v2/models/m");
    let v = Endpoint::parse("https://h/serving/v2/models/m/versions/3/", "--x").unwrap();
    assert_eq!(v.model_url, "https://h/serving/v2/models/m/versions/3");
    for bad in [
        "h:8080/v2/models/m",
        "http://h/v2/models",
        "http://h/v1/models/m:predict",
        "http://u:p@h/v2/models/m",
        "http://h/v2/models/m/extra",
    ] {
        assert!(Endpoint::parse(bad, "--x").is_err(), "{bad}");
    }
}

#[test]
fn messages() {
    assert_eq!(server_message("{\"error\": \"bad shape\"}"), "bad shape");
    assert_eq!(
        server_message(
            "Traceback (most recent call last):\n  File x\nValueError: X has 3 features\n\n"
        ),
        "ValueError: X has 3 features"
    );
}

fn opts() -> Options {
    Options {
        layout: Layout::Columns,
        label_output: None,
        proba_output: None,
        token: None,
        ca_bundle: None,
        timeout: Duration::from_secs(1),
        concurrency: 1,
        batch_rows: 10,
        retries: 0,
    }
}

#[test]
fn outputs_by_shape() {
    let a = json!({"outputs": [
        {"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]},
        {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.9, 0.1, 0.2, 0.8]}
    ]});
    let d = decode(&a, 2, &opts()).unwrap();
    assert_eq!(d.labels, ["0", "1"]);
    assert_eq!(d.proba_classes, 2);
    // Probabilities only: argmax.
    let a = json!({"outputs": [{"name": "o", "shape": [2, 3], "datatype": "FP32", "data": [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]}]});
    assert_eq!(decode(&a, 2, &opts()).unwrap().labels, ["1", "0"]);
    // Scores that are not probabilities.
    let a = json!({"outputs": [{"name": "o", "shape": [1, 2], "datatype": "FP64", "data": [2.0, -1.0]}]});
    assert!(
        decode(&a, 1, &opts())
            .unwrap_err()
            .contains("not class probabilities")
    );
    // Wrong row count.
    let a = json!({"outputs": [{"name": "o", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]});
    assert!(decode(&a, 2, &opts()).is_err());
}

#[test]
fn tensor_rejects_text() {
    let f = Features {
        columns: vec![
            Feature {
                name: "a".into(),
                values: Column::F64(vec![1.0, 2.0]),
            },
            Feature {
                name: "b".into(),
                values: Column::Text(vec!["x".into(), "y".into()]),
            },
        ],
        rows: 2,
        path: PathBuf::from("f"),
    };
    let layout = Layout::Tensor("input-0".into());
    assert!(f.request(&layout, &[], &[0, 1], None).is_err());
    let body = f
        .request(
            &Layout::Columns,
            &[],
            &[1],
            Some(&(1, Cell::Text("z".into()))),
        )
        .unwrap();
    assert_eq!(body["inputs"][1]["data"], json!(["z"]));
    assert_eq!(body["inputs"][0]["data"], json!([2.0]));
}
