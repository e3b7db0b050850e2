//! The renderer's tests: the example chart, axes, lanes, formats, errors,
//! odd values (property test), and renders by hand on request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::axes::{format_tick, format_value, time_tick_label};
use super::lanes::EventGlyph;
use super::layout::{CEILING_COLOR, CE_COLOR, CP_COLOR};
use super::*;
use crate::vocab::{parse_rfc3339_ms, TimeMs};

fn at(text: &str) -> TimeMs {
    parse_rfc3339_ms(text).unwrap()
}

/// 24 h of a plausible ketamine course, 1-minute samples: IV infusion
/// 20 mg/h 08:00–12:00, patch 1.04 mg/h from 09:00, intranasal 50 mg at
/// 14:00. One-compartment disposition (t½ 2.5 h, V 200 L), first-order
/// absorption for the IN dose (F 0.45) and the patch depot, Ce by ke0
/// 0.652/min. Not a validated model: only a realistic-looking picture.
fn example_spec() -> PlotSpec {
    let start = at("2026-11-27T00:00:00Z");
    let minute = 60_000;
    let k = std::f64::consts::LN_2 / 150.0;
    let v_l = 200.0;
    let ke0: f64 = 0.652;
    let (mut amount_mg, mut in_depot, mut patch_depot, mut ce) = (0.0, 0.0, 0.0, 0.0);
    let (mut times, mut cp_v, mut ce_v) = (Vec::new(), Vec::new(), Vec::new());
    for m in 0..=(24 * 60) {
        let cp = amount_mg / v_l * 1000.0; // mg/L → ng/mL
        ce += (cp - ce) * (1.0 - (-ke0).exp());
        times.push(start + m * minute);
        cp_v.push(cp);
        ce_v.push(ce);
        let hour = m as f64 / 60.0;
        if (8.0..12.0).contains(&hour) {
            amount_mg += 20.0 / 60.0;
        }
        if hour >= 9.0 {
            patch_depot += 1.04 / 60.0;
        }
        if m == 14 * 60 {
            in_depot += 50.0 * 0.45;
        }
        let from_in = in_depot * 0.08;
        let from_patch = patch_depot * 0.004;
        in_depot -= from_in;
        patch_depot -= from_patch;
        amount_mg += from_in + from_patch - amount_mg * k;
    }
    PlotSpec {
        title: "Ketamine — patient P-1001 (72 kg)".to_owned(),
        subtitle: "model ketamine/domino · ke0 0.652/min (assumed) · \
                   decision support, not a medical device"
            .to_owned(),
        times_ms: times,
        cp_ng_per_ml: cp_v,
        ce_ng_per_ml: ce_v,
        targets: TargetLines {
            analgesic_floor_ng_per_ml: 100.0,
            caution_ng_per_ml: 250.0,
            ceiling_ng_per_ml: 500.0,
        },
        doses: vec![DoseMark {
            time_ms: at("2026-11-27T14:00:00Z"),
            label: "IN 50 mg".to_owned(),
        }],
        spans: vec![
            SpanMark {
                start_ms: at("2026-11-27T08:00:00Z"),
                end_ms: at("2026-11-27T12:00:00Z"),
                label: "IV 20 mg/h".to_owned(),
            },
            SpanMark {
                start_ms: at("2026-11-27T09:00:00Z"),
                end_ms: at("2026-11-28T00:00:00Z"),
                label: "patch 1.04 mg/h".to_owned(),
            },
        ],
    }
}

fn tiny_spec(times: Vec<TimeMs>, cp: Vec<f64>, ce: Vec<f64>) -> PlotSpec {
    PlotSpec {
        title: "t".to_owned(),
        subtitle: "s".to_owned(),
        times_ms: times,
        cp_ng_per_ml: cp,
        ce_ng_per_ml: ce,
        targets: TargetLines {
            analgesic_floor_ng_per_ml: 100.0,
            caution_ng_per_ml: 250.0,
            ceiling_ng_per_ml: 500.0,
        },
        doses: Vec::new(),
        spans: Vec::new(),
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn example_curve_is_plausible() {
    let spec = example_spec();
    let max = spec.cp_ng_per_ml.iter().copied().fold(0.0, f64::max);
    assert!((150.0..=300.0).contains(&max), "peak Cp {max}");
    assert_eq!(spec.cp_ng_per_ml[0], 0.0);
}

#[test]
fn svg_has_axes_units_legend_targets_and_marks() {
    let svg = render_svg(&example_spec()).unwrap();
    for needle in [
        "Time (UTC) · 2026-11-27",
        "Concentration (ng/mL)",
        "Cp (plasma)",
        "Ce (effect site)",
        "analgesic band",
        "floor 100",
        "caution 250",
        "ceiling 500",
        "IN 50 mg",
        "IV 20 mg/h",
        "patch 1.04 mg/h",
        "Ketamine — patient P-1001 (72 kg)",
        "decision support, not a medical device",
        "\n08:00\n",
        "\n14:00\n",
        "\n300\n",
    ] {
        assert!(
            svg.contains(needle),
            "SVG lacks {needle:?}:\n{}",
            &svg[..svg.len().min(2000)]
        );
    }
    // The curves are drawn in their colours, the ceiling in red.
    for colour in [CP_COLOR, CE_COLOR, CEILING_COLOR] {
        let hex = format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2);
        assert!(svg.contains(&hex), "no element stroked {hex}");
    }
}

#[test]
fn a_cp_spike_is_off_scale_and_labelled_not_hidden() {
    let mut spiky = example_spec();
    spiky.cp_ng_per_ml[10] = 4409.0;
    let p = Prepared::new(&spiky).unwrap();
    assert!(p.y_top < 1000.0, "axis follows Ce and targets: {}", p.y_top);
    let (_, value, t) = p.cp_off_scale.unwrap();
    assert_eq!(value, 4409.0);
    assert_eq!(t, i128::from(spiky.times_ms[10]));
    let svg = render_svg(&spiky).unwrap();
    assert!(
        svg.contains("Cp off scale: peak 4409 ng/mL"),
        "label missing"
    );
    assert!(Prepared::new(&example_spec())
        .unwrap()
        .cp_off_scale
        .is_none());
}

#[test]
fn y_axis_reaches_ceiling_or_data_with_headroom() {
    let p = Prepared::new(&example_spec()).unwrap();
    assert!((p.y_top - 550.0).abs() < 1e-9, "{}", p.y_top);
    let mut high = example_spec();
    high.ce_ng_per_ml[100] = 1000.0;
    let p = Prepared::new(&high).unwrap();
    assert!((p.y_top - 1100.0).abs() < 1e-9, "{}", p.y_top);
    assert_eq!(p.y_ticks.first(), Some(&0.0));
}

#[test]
fn time_ticks_are_whole_clock_hours_for_a_day() {
    let p = Prepared::new(&example_spec()).unwrap();
    assert_eq!(p.x_step_ms, 2 * 3_600_000);
    let labels: Vec<String> = p
        .x_ticks
        .iter()
        .map(|&x| time_tick_label(p.time_of(x), p.x_step_ms, true))
        .collect();
    assert_eq!(labels.first().map(String::as_str), Some("27 Nov"));
    assert_eq!(labels.get(1).map(String::as_str), Some("02:00"));
    assert_eq!(labels.last().map(String::as_str), Some("28 Nov"));
    assert_eq!(labels.len(), 13);
}

#[test]
fn format_from_path() {
    assert_eq!(
        PlotFormat::from_path(Path::new("a/b.svg")).unwrap(),
        PlotFormat::Svg
    );
    assert_eq!(
        PlotFormat::from_path(Path::new("PLOT.PNG")).unwrap(),
        PlotFormat::Png
    );
    assert!(matches!(
        PlotFormat::from_path(Path::new("plot.txt")),
        Err(PlotError::UnsupportedFormat { path }) if path == Path::new("plot.txt")
    ));
    assert!(matches!(
        PlotFormat::from_path(Path::new("svg")),
        Err(PlotError::UnsupportedFormat { .. })
    ));
}

#[test]
fn empty_series_is_an_error() {
    let spec = tiny_spec(vec![], vec![], vec![]);
    assert!(matches!(render_svg(&spec), Err(PlotError::EmptySeries)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.png");
    assert!(matches!(
        write_plot(&path, &spec),
        Err(PlotError::EmptySeries)
    ));
    assert!(!path.exists(), "no file for an invalid spec");
}

#[test]
fn mismatched_lengths_are_an_error() {
    let spec = tiny_spec(
        vec![0, 60_000, 120_000],
        vec![1.0, 2.0],
        vec![1.0, 2.0, 3.0],
    );
    assert!(matches!(
        render_svg(&spec),
        Err(PlotError::LengthMismatch {
            times: 3,
            cp: 2,
            ce: 3
        })
    ));
    let spec = tiny_spec(vec![], vec![1.0], vec![]);
    assert!(matches!(
        render_svg(&spec),
        Err(PlotError::LengthMismatch { .. })
    ));
}

#[test]
fn odd_values_do_not_panic() {
    let t = at("2026-11-27T10:00:00Z");
    let h = 3_600_000;
    let cases = vec![
        // NaN and infinities among good values.
        tiny_spec(
            vec![t, t + h, t + 2 * h, t + 3 * h],
            vec![f64::NAN, 50.0, f64::INFINITY, 20.0],
            vec![10.0, f64::NAN, f64::NEG_INFINITY, 30.0],
        ),
        // All NaN.
        tiny_spec(vec![t, t + h], vec![f64::NAN; 2], vec![f64::NAN; 2]),
        // One point.
        tiny_spec(vec![t], vec![120.0], vec![80.0]),
        // All zeros, all at one instant.
        tiny_spec(vec![t, t, t], vec![0.0; 3], vec![0.0; 3]),
        // Huge and negative values.
        tiny_spec(
            vec![t, t + h, t + 2 * h],
            vec![1e300, f64::MAX, -5.0],
            vec![f64::MAX, 1e-300, f64::MIN_POSITIVE],
        ),
        // Unsorted times, extreme times.
        tiny_spec(
            vec![t + 2 * h, t, t + h],
            vec![3.0, 1.0, 2.0],
            vec![3.0, 1.0, 2.0],
        ),
        tiny_spec(
            vec![TimeMs::MIN, TimeMs::MAX],
            vec![1.0, 2.0],
            vec![1.0, 2.0],
        ),
        tiny_spec(vec![TimeMs::MAX], vec![1.0], vec![1.0]),
        tiny_spec(vec![TimeMs::MIN], vec![1.0], vec![1.0]),
        // Years of data.
        tiny_spec(
            vec![t, t + 3 * 365 * 24 * h],
            vec![1.0, 2.0],
            vec![1.0, 2.0],
        ),
    ];
    for (i, mut spec) in cases.into_iter().enumerate() {
        // Bad targets and marks ride along with every case.
        if i % 2 == 1 {
            spec.targets = TargetLines {
                analgesic_floor_ng_per_ml: f64::NAN,
                caution_ng_per_ml: -1.0,
                ceiling_ng_per_ml: f64::INFINITY,
            };
        }
        spec.doses = vec![
            DoseMark {
                time_ms: t,
                label: "bolus 10 mg".to_owned(),
            },
            DoseMark {
                time_ms: TimeMs::MAX,
                label: String::new(),
            },
        ];
        spec.spans = vec![SpanMark {
            start_ms: t + h,
            end_ms: t - h,
            label: "reversed".to_owned(),
        }];
        spec.title = "x".repeat(500);
        let svg = render_svg(&spec);
        assert!(svg.is_ok(), "case {i}: {:?}", svg.err());
    }
}

#[test]
fn crowded_marks_get_separate_lanes() {
    let mut spec = example_spec();
    let t = at("2026-11-27T14:00:00Z");
    spec.doses = (0..5)
        .map(|i| DoseMark {
            time_ms: t + i * 60_000,
            label: format!("bolus {} mg", 10 + i),
        })
        .collect();
    let p = Prepared::new(&spec).unwrap();
    ensure_font().unwrap();
    let mut svg = String::new();
    let root =
        SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
    let (placed, lanes) = place_events(&root, Scale(1), &spec, &p).unwrap();
    assert_eq!(placed.len(), 7);
    assert!(lanes >= 5, "{lanes} lanes for 5 adjacent doses");
    let dose_lanes: std::collections::BTreeSet<usize> = placed
        .iter()
        .filter(|e| matches!(e.glyph, EventGlyph::Dose { .. }))
        .map(|e| e.lane)
        .collect();
    assert_eq!(dose_lanes.len(), 5);
}

#[test]
fn png_has_signature_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plot.PNG");
    write_plot(&path, &example_spec()).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(png_size(&bytes), (PLOT_WIDTH_PX, PLOT_HEIGHT_PX));
    assert!(bytes.len() > 10_000, "suspiciously small PNG");
}

#[test]
fn svg_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plot.svg");
    write_plot(&path, &example_spec()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("<svg"));
    assert!(text.contains("Cp (plasma)"));
}

#[test]
fn unwritable_path_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["missing/plot.png", "missing/plot.svg"] {
        let path = dir.path().join(name);
        match write_plot(&path, &example_spec()) {
            Err(PlotError::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{name}: expected Io error, got {other:?}"),
        }
    }
    let path = dir.path().join("plot.txt");
    assert!(matches!(
        write_plot(&path, &example_spec()),
        Err(PlotError::UnsupportedFormat { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn number_formatting() {
    assert_eq!(format_value(100.0), "100");
    assert_eq!(format_value(1.04), "1.04");
    assert_eq!(format_value(0.0), "0");
    assert_eq!(format_value(2.5e7), "2.50e7");
    assert_eq!(format_tick(550.0, 50.0), "550");
    assert_eq!(format_tick(0.25, 0.05), "0.25");
}

/// Renders the example to `$DOSETRACK_EXAMPLE_PLOT` (a .png or .svg path)
/// when that variable is set, for looking at the picture.
#[test]
fn render_example_when_asked() {
    if let Some(path) = std::env::var_os("DOSETRACK_EXAMPLE_PLOT") {
        write_plot(Path::new(&path), &example_spec()).unwrap();
    }
}

/// Renders harder variants (crowded doses, data above the ceiling, a
/// gap, three days, one short hour) as PNGs into
/// `$DOSETRACK_EXAMPLE_DIR` when that variable is set.
#[test]
fn render_variants_when_asked() {
    let Some(dir) = std::env::var_os("DOSETRACK_EXAMPLE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let h = 3_600_000;

    let mut crowded = example_spec();
    let t = at("2026-11-27T16:00:00Z");
    crowded.doses.extend((0..4).map(|i| DoseMark {
        time_ms: t + i * 10 * 60_000,
        label: format!("IV bolus {} mg", 5 * (i + 1)),
    }));
    crowded.doses.push(DoseMark {
        time_ms: at("2026-11-27T23:55:00Z"),
        label: "oral 25 mg".to_owned(),
    });
    for (i, v) in crowded.cp_ng_per_ml.iter_mut().enumerate() {
        if (600..640).contains(&i) {
            *v = f64::NAN;
        } else if (960..1000).contains(&i) {
            *v += 400.0 * ((i - 960) as f64 / 40.0 * std::f64::consts::PI).sin();
        }
    }
    write_plot(&dir.join("crowded.png"), &crowded).unwrap();

    let base = example_spec();
    let mut days = tiny_spec(vec![], vec![], vec![]);
    for rep in 0..3 {
        for (i, &t) in base.times_ms.iter().enumerate().take(1440) {
            days.times_ms.push(t + rep * 24 * h);
            days.cp_ng_per_ml.push(base.cp_ng_per_ml[i]);
            days.ce_ng_per_ml.push(base.ce_ng_per_ml[i]);
        }
    }
    days.title = base.title.clone();
    days.subtitle = base.subtitle.clone();
    days.spans = base.spans.clone();
    write_plot(&dir.join("three-days.png"), &days).unwrap();

    let mut hour = example_spec();
    hour.times_ms.truncate(14 * 60 + 50);
    hour.cp_ng_per_ml.truncate(14 * 60 + 50);
    hour.ce_ng_per_ml.truncate(14 * 60 + 50);
    hour.times_ms.drain(..14 * 60 - 10);
    hour.cp_ng_per_ml.drain(..14 * 60 - 10);
    hour.ce_ng_per_ml.drain(..14 * 60 - 10);
    hour.spans.clear();
    write_plot(&dir.join("one-hour.png"), &hour).unwrap();

    let mut empty_marks = tiny_spec(vec![at("2026-11-27T10:00:00Z")], vec![120.0], vec![90.0]);
    empty_marks.title = "Single sample, no doses".to_owned();
    write_plot(&dir.join("single.png"), &empty_marks).unwrap();
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            0.0..600.0,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1.0),
            any::<f64>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn rendering_never_panics(
            points in proptest::collection::vec(
                (any::<i64>(), any_value(), any_value()), 0..12),
            near in proptest::collection::vec(
                (0_i64..86_400_000, any_value(), any_value()), 0..12),
            marks in proptest::collection::vec((any::<i64>(), any::<i64>(), "[a-z ]{0,30}"), 0..6),
            floor in any_value(),
            caution in any_value(),
            ceiling in any_value(),
        ) {
            let base = 1_795_000_000_000_i64;
            let all: Vec<(i64, f64, f64)> = points
                .into_iter()
                .chain(near.into_iter().map(|(t, a, b)| (base + t, a, b)))
                .collect();
            let spec = PlotSpec {
                title: "t".to_owned(),
                subtitle: "s".to_owned(),
                times_ms: all.iter().map(|p| p.0).collect(),
                cp_ng_per_ml: all.iter().map(|p| p.1).collect(),
                ce_ng_per_ml: all.iter().map(|p| p.2).collect(),
                targets: TargetLines {
                    analgesic_floor_ng_per_ml: floor,
                    caution_ng_per_ml: caution,
                    ceiling_ng_per_ml: ceiling,
                },
                doses: marks
                    .iter()
                    .map(|(t, _, l)| DoseMark { time_ms: *t, label: l.clone() })
                    .collect(),
                spans: marks
                    .iter()
                    .map(|(a, b, l)| SpanMark { start_ms: *a, end_ms: *b, label: l.clone() })
                    .collect(),
            };
            match render_svg(&spec) {
                Ok(svg) => prop_assert!(svg.contains("Time (UTC)")),
                Err(e) => prop_assert!(matches!(e, PlotError::EmptySeries), "{e}"),
            }
        }
    }
}
