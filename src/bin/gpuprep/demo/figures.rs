//! The demo's six figures, drawn from the [`Results`] of its steps.

use std::path::{Path, PathBuf};

use gpuprep::Activation;
use ndarray::Array2;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::{diverging, image_from, label, stretch, symmetric, Canvas, Grid, FAMILY, SERIES};
use super::Results;

type Res = gpuprep::Result<PathBuf>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Series<'a> = Vec<(usize, &'a str, Vec<(f64, f64)>)>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws every figure into `out`; returns their paths.
pub fn all(out: &Path, r: &Results) -> gpuprep::Result<Vec<PathBuf>> {
    Ok(vec![
        cloud(out, r)?,
        eigen_images(out, r)?,
        reconstructions(out, r)?,
        activations(out, r)?,
        symmetry(out, r)?,
        training(out, r)?,
    ])
}

/// 1: original, zero-centred, normalized, decorrelated, whitened; each
/// panel on square axes of its own (the steps change the scale by a factor of
/// ten), with its covariance matrix written under it.
fn cloud(out: &Path, r: &Results) -> Res {
    let titles = [
        "original",
        "zero-centered",
        "normalized",
        "decorrelated",
        "whitened",
    ];
    let (w, h) = (1500u32, 420u32);
    let mut canvas = Canvas::new(out.join("1-preprocessing.png"), w, h);
    canvas.draw(|root| -> DrawResult {
        root.fill(&WHITE)?;
        let (top, rest) = root.split_vertically(48);
        let (body, bottom) = rest.split_vertically(h - 48 - 40);
        label(
            &top,
            &format!(
                "The lecture's preprocessing on real data: {} pairs of neighbouring gray values (2 px apart) \
                 from the two photographs; each panel on its own axes",
                r.cloud[0].nrows()
            ),
            (12, 14),
            18,
        )?;
        let panels = body.split_evenly((1, 5));
        let notes = bottom.split_evenly((1, 5));
        for (i, area) in panels.iter().enumerate() {
            cloud_panel(area, titles[i], &r.cloud[i], SERIES[i])?;
            label(&notes[i], &covariance_note(&r.cloud[i]), (40, 4), 12)?;
        }
        Ok(())
    })?;
    canvas.save()
}

/// One step's points on square axes around them, the origin included.
fn cloud_panel(area: &Area<'_>, title: &str, c: &Array2<f64>, color: RGBColor) -> DrawResult {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for &v in c.iter() {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let pad = 0.05 * (hi - lo).max(1e-9);
    let (lo, hi) = (lo - pad, hi + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 18))
        .margin(10)
        .x_label_area_size(24)
        .y_label_area_size(34)
        .build_cartesian_2d(lo..hi, lo..hi)?;
    chart
        .configure_mesh()
        .max_light_lines(2)
        .x_labels(5)
        .y_labels(5)
        .label_style((FAMILY, 12))
        .draw()?;
    let color = color.mix(0.35);
    chart.draw_series(
        c.outer_iter()
            .map(|p| Circle::new((p[0], p[1]), 1, color.filled())),
    )?;
    Ok(())
}

/// The mean and covariance of 2-D points, which say what the step did:
/// centred, unit variances, no correlation, the identity.
fn covariance_note(c: &Array2<f64>) -> String {
    let n = c.nrows().max(1) as f64;
    let m0 = c.column(0).sum() / n;
    let m1 = c.column(1).sum() / n;
    let cov = |a: usize, b: usize, ma: f64, mb: f64| {
        c.outer_iter().map(|p| (p[a] - ma) * (p[b] - mb)).sum::<f64>() / n
    };
    // Two decimals, and no "-0.00" for a rounding error below them.
    let r2 = |v: f64| {
        let x = (v * 100.0).round() / 100.0;
        if x == 0.0 {
            0.0
        } else {
            x
        }
    };
    format!(
        "mean ({:.2}, {:.2})  cov [{:.2} {:.2}; {:.2} {:.2}]",
        r2(m0),
        r2(m1),
        r2(cov(0, 0, m0, m0)),
        r2(cov(0, 1, m0, m1)),
        r2(cov(1, 0, m1, m0)),
        r2(cov(1, 1, m1, m1))
    )
}

/// A legend entry's line in `color`.
fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

fn component_images(
    components: &Array2<f64>,
    count: usize,
    side: u32,
    channels: usize,
) -> Vec<image::RgbImage> {
    (0..count.min(components.ncols()))
        .map(|j| {
            let v: Vec<f64> = components.column(j).to_vec();
            image_from(&v, side, channels, symmetric(&v))
        })
        .collect()
}

/// 2: the top principal components as images, and the explained variance.
fn eigen_images(out: &Path, r: &Results) -> Res {
    let digits = Grid {
        images: component_images(&r.digit_model.components, 16, 8, 1),
        cols: 4,
        scale: 9,
        gap: 6,
    };
    let pscale = (96 / r.patch).max(1);
    let patches = Grid {
        images: component_images(&r.patch_model.components, 16, r.patch, 3),
        cols: 4,
        scale: pscale,
        gap: 6,
    };
    let (dw, dh) = digits.size();
    let (pw, ph) = patches.size();
    let top = 70;
    let chart_w = 520;
    let w = 30 + dw + 30 + pw + 30 + chart_w;
    let h = top + dh.max(ph).max(420) + 20;
    let mut canvas = Canvas::new(out.join("2-eigen-images.png"), w, h);
    let side = r.patch;
    canvas.draw(|root| -> DrawResult {
        root.fill(&WHITE)?;
        label(
            root,
            "Eigen-images: the top 16 principal components (U[:, :16]), largest first",
            (30, 12),
            18,
        )?;
        label(root, "digits, 8 x 8", (30, top as i32 - 26), 15)?;
        label(
            root,
            &format!("image patches, {side} x {side} x 3"),
            (30 + dw as i32 + 30, top as i32 - 26),
            15,
        )?;
        let area = root.margin(top as i32 - 20, 10, (30 + dw + 30 + pw + 20) as i32, 10);
        cumulative_chart(&area, r)
    })?;
    digits.blit(&mut canvas, 30, top);
    patches.blit(&mut canvas, 30 + dw + 30, top);
    canvas.save()
}

/// (components kept, fraction of the variance they hold), for each k.
fn cumulative(m: &gpuprep::PcaModel) -> Vec<(f64, f64)> {
    let total: f64 = m.eigenvalues.sum().max(f64::MIN_POSITIVE);
    let mut acc = 0.0;
    m.eigenvalues
        .iter()
        .enumerate()
        .map(|(i, v)| {
            acc += v;
            ((i + 1) as f64, acc / total)
        })
        .collect()
}

/// The cumulative explained variance of the digits and of the patches.
fn cumulative_chart(area: &Area<'_>, r: &Results) -> DrawResult {
    let d = r.patch_model.eigenvalues.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("cumulative explained variance", (FAMILY, 16))
        .margin(6)
        .x_label_area_size(34)
        .y_label_area_size(40)
        .build_cartesian_2d((1f64..d.max(64.0)).log_scale(), 0f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc("components kept (log scale)")
        .label_style((FAMILY, 12))
        .draw()?;
    for (i, model, name) in [
        (0, &r.digit_model, "digits (64)".to_string()),
        (1, &r.patch_model, format!("patches ({})", d as usize)),
    ] {
        chart
            .draw_series(LineSeries::new(cumulative(model), SERIES[i].stroke_width(2)))?
            .label(name)
            .legend(legend_line(SERIES[i]));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn patch_images(
    rows: &Array2<f64>,
    side: u32,
    map: impl Fn(&[f64]) -> Box<dyn Fn(f64) -> f64>,
) -> Vec<image::RgbImage> {
    rows.outer_iter()
        .map(|row| {
            let v = row.to_vec();
            let f = map(&v);
            image_from(&v, side, 3, f)
        })
        .collect()
}

/// 3: patches, their reconstructions from k components, and ZCA-whitened.
fn reconstructions(out: &Path, r: &Results) -> Res {
    let side = r.patch;
    let scale = (96 / side).max(1);
    let clamp = |_: &[f64]| -> Box<dyn Fn(f64) -> f64> { Box::new(|v| v) };
    let mut rows: Vec<(String, Vec<image::RgbImage>)> =
        vec![("original".into(), patch_images(&r.shown_patches, side, clamp))];
    let d = r.patch_model.eigenvalues.len();
    for (k, y) in &r.reconstructions {
        let kept: f64 = r.patch_model.eigenvalues.iter().take(*k).sum::<f64>()
            / r.patch_model.eigenvalues.sum().max(f64::MIN_POSITIVE);
        rows.push((
            format!("{k} of {d} components ({:.0}%)", kept * 100.0),
            patch_images(y, side, clamp),
        ));
    }
    rows.push((
        format!(
            "ZCA-whitened (contrast stretched):\nthe {} components that hold\n99% of the variance",
            r.zca_components
        ),
        patch_images(&r.zca, side, |v| Box::new(stretch(v))),
    ));
    let cell = side * scale + 8;
    let left = 330;
    let top = 50;
    let cols = r.shown_patches.nrows() as u32;
    let (w, h) = (left + cols * cell + 10, top + rows.len() as u32 * cell + 10);
    let mut canvas = Canvas::new(out.join("3-reduction-and-zca.png"), w, h);
    canvas.draw(|root| -> DrawResult {
        root.fill(&WHITE)?;
        label(
            root,
            "Dimensionality reduction (Xrot_reduced = Xc U[:, :k], back through U[:, :k]^T) and ZCA whitening",
            (10, 12),
            17,
        )?;
        for (i, (name, _)) in rows.iter().enumerate() {
            let lines: Vec<&str> = name.lines().collect();
            let y0 = (top + i as u32 * cell + cell / 2) as i32 - 9 * lines.len() as i32;
            for (j, line) in lines.iter().enumerate() {
                label(root, line, (10, y0 + 18 * j as i32), 14)?;
            }
        }
        Ok(())
    })?;
    for (i, (_, imgs)) in rows.iter().enumerate() {
        Grid {
            images: imgs.clone(),
            cols,
            scale,
            gap: 8,
        }
        .blit(&mut canvas, left, top + i as u32 * cell);
    }
    canvas.save()
}

/// 4: per layer, the histogram of the activations, per activation and init.
fn activations(out: &Path, r: &Results) -> Res {
    let layers = r.activations.first().map_or(0, |a| a.2.len()) as u32;
    let (pw, ph) = (124u32, 96u32);
    let (left, top) = (190u32, 60u32);
    let rows = r.activations.len() as u32;
    let (w, h) = (left + layers * pw + 10, top + rows * ph + 30);
    let mut canvas = Canvas::new(out.join("4-activations.png"), w, h);
    canvas.draw(|root| -> DrawResult {
        root.fill(&WHITE)?;
        label(
            root,
            "Activations of each layer (10 layers, unit-gaussian input): histograms with std; ReLU's zeros left out, their share shown",
            (10, 10),
            15,
        )?;
        for l in 0..layers {
            label(root, &format!("layer {}", l + 1), ((left + l * pw + 35) as i32, 36), 13)?;
        }
        for (i, (act, name, acts)) in r.activations.iter().enumerate() {
            let y0 = top + i as u32 * ph;
            let act_name = if *act == Activation::Tanh { "tanh" } else { "ReLU" };
            label(root, act_name, (10, (y0 + 30) as i32), 14)?;
            label(root, name, (10, (y0 + 50) as i32), 12)?;
            for (l, values) in acts.iter().enumerate() {
                let x0 = left + l as u32 * pw;
                let area = root.margin(y0 as i32, (h - y0 - ph) as i32, x0 as i32, (w - x0 - pw) as i32);
                histogram(&area, values, *act, SERIES[i % 3])?;
            }
        }
        Ok(())
    })?;
    canvas.save()
}

/// One layer's activations as a histogram over the activation's range
/// (ReLU's zeros left out and counted), with the std written in.
fn histogram(area: &Area<'_>, values: &[f32], act: Activation, color: RGBColor) -> DrawResult {
    let (lo, hi) = if act == Activation::Tanh {
        (-1.0f64, 1.0f64)
    } else {
        (0.0, 3.0)
    };
    let bins = 30usize;
    let mut counts = vec![0usize; bins];
    let mut zeros = 0usize;
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    for &v in values {
        let v = f64::from(v);
        if act == Activation::Relu && v == 0.0 {
            zeros += 1;
            continue;
        }
        if v >= lo && v <= hi {
            let b = (((v - lo) / (hi - lo)) * bins as f64) as usize;
            counts[b.min(bins - 1)] += 1;
        }
    }
    let top_count = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    // Margins wide enough that neighbouring panels' end labels
    // (-1.0 and 1.0) do not run into each other.
    let mut chart = ChartBuilder::on(area)
        .margin(3)
        .margin_left(12)
        .margin_right(12)
        .x_label_area_size(14)
        .build_cartesian_2d(lo..hi, 0f64..1.15f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_y_axis()
        .x_labels(3)
        .label_style((FAMILY, 10))
        .draw()?;
    let width = (hi - lo) / bins as f64;
    chart.draw_series(counts.iter().enumerate().map(|(b, &c)| {
        let x = lo + b as f64 * width;
        Rectangle::new([(x, 0.0), (x + width, c as f64 / top_count)], color.filled())
    }))?;
    let mut text = format!("std {:.2e}", var.sqrt());
    if act == Activation::Relu {
        text += &format!(" 0s {:.0}%", 100.0 * zeros as f64 / n);
    }
    chart.draw_series(std::iter::once(Text::new(
        text,
        (lo + 0.02 * (hi - lo), 1.13),
        (FAMILY, 10).into_font(),
    )))?;
    Ok(())
}

/// 5: hidden units after training from a constant and from a random start.
fn symmetry(out: &Path, r: &Results) -> Res {
    let cell = 46u32;
    let toy_h = 5 * cell + 60;
    let img_scale = 5u32;
    let units = 16usize;
    let grids: Vec<(String, Grid)> = r
        .first_layers
        .iter()
        .map(|(name, w1)| {
            let images = (0..units.min(w1.nrows()))
                .map(|u| {
                    let v = w1.row(u).to_vec();
                    image_from(&v, 8, 1, symmetric(&v))
                })
                .collect();
            (
                name.clone(),
                Grid {
                    images,
                    cols: 16,
                    scale: img_scale,
                    gap: 4,
                },
            )
        })
        .collect();
    let (gw, gh) = grids.first().map_or((0, 0), |(_, g)| g.size());
    let w = (30 + 2 * (4 * cell + 260)).max(30 + gw + 20);
    let h = 50 + toy_h + grids.len() as u32 * (gh + 40) + 20;
    let mut canvas = Canvas::new(out.join("5-symmetry.png"), w, h);
    let grid_top = 50 + toy_h + 30;
    canvas.draw(|root| -> DrawResult {
        root.fill(&WHITE)?;
        label(
            root,
            "Symmetry: hidden units trained from a constant start stay identical; from random numbers they differ",
            (10, 10),
            16,
        )?;
        for (t, toy) in r.toy.iter().enumerate() {
            let x0 = 30 + t as i32 * (4 * cell as i32 + 260);
            toy_weights(root, (x0, 60), cell as i32, toy)?;
        }
        for (i, (name, _)) in grids.iter().enumerate() {
            let y = grid_top + i as u32 * (gh + 40);
            label(
                root,
                &format!("digits MLP, {name}: the first 16 hidden units' 64 input weights as 8 x 8 images"),
                (30, y as i32 - 22),
                13,
            )?;
        }
        Ok(())
    })?;
    for (i, (_, g)) in grids.iter().enumerate() {
        g.blit(&mut canvas, 30, grid_top + i as u32 * (gh + 40));
    }
    canvas.save()
}

/// The lecture's toy network after training, at `(x0, y0)`: rows W1's three
/// input weights and W2's two output weights, columns the hidden units.
fn toy_weights(
    root: &Area<'_>,
    (x0, y0): (i32, i32),
    cell: i32,
    (name, w1, w2): &(&str, Array2<f64>, Array2<f64>),
) -> DrawResult {
    label(root, &format!("lecture's network, {name}"), (x0, y0 - 18), 13)?;
    label(root, "1000 steps of the true gradient", (x0, y0 - 2), 11)?;
    let m: Vec<Vec<f64>> = (0..3)
        .map(|i| (0..4).map(|j| w1[[i, j]]).collect())
        .chain((0..2).map(|k| (0..4).map(|j| w2[[j, k]]).collect()))
        .collect();
    let big = m.iter().flatten().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-12);
    for (i, row) in m.iter().enumerate() {
        let y = y0 + 14 + i as i32 * cell;
        let what = if i < 3 {
            format!("W1 from x{}", i + 1)
        } else {
            format!("W2 to y{}", i - 2)
        };
        label(root, &what, (x0 + 4 * cell + 8, y + 14), 12)?;
        for (j, &v) in row.iter().enumerate() {
            let x = x0 + j as i32 * cell;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell - 2, y + cell - 2)],
                diverging(v / big).filled(),
            ))?;
            label(root, &format!("{v:+.2}"), (x + 3, y + 16), 11)?;
        }
    }
    Ok(())
}

/// 6: loss and test accuracy per epoch, per init, with and without batch norm.
fn training(out: &Path, r: &Results) -> Res {
    let (w, h) = (1200u32, 800u32);
    let mut canvas = Canvas::new(out.join("6-training.png"), w, h);
    canvas.draw(|root| -> DrawResult {
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(40);
        label(
            &top,
            "The digits MLP (64-128-64-10) trained on the GPU: per init, with and without batch norm",
            (12, 10),
            18,
        )?;
        let panels = body.split_evenly((2, 2));
        for (p, area) in panels.iter().enumerate() {
            training_panel(area, r, p % 2 == 0, p >= 2)?;
        }
        Ok(())
    })?;
    canvas.save()
}

/// One panel of figure 6: the runs with (`bn`) or without batch norm, their
/// test accuracy or (log scale) training loss per epoch.
fn training_panel(area: &Area<'_>, r: &Results, bn: bool, accuracy: bool) -> DrawResult {
    let epochs = r.curves.iter().map(|c| c.2.len()).max().unwrap_or(1) as f64;
    let max_loss = r
        .curves
        .iter()
        .flat_map(|c| c.2.iter().map(|e| e.loss))
        .filter(|v| v.is_finite())
        .fold(1e-3f64, f64::max);
    let title = format!(
        "{} ({})",
        if accuracy {
            "test accuracy"
        } else {
            "training loss (log)"
        },
        if bn { "batch norm" } else { "no batch norm" }
    );
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FAMILY, 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50);
    let series: Series<'_> = r
        .curves
        .iter()
        .filter(|c| c.1 == bn)
        .enumerate()
        .map(|(i, (name, _, reps))| {
            let pts = reps
                .iter()
                .enumerate()
                .map(|(e, rep)| {
                    let y = if accuracy {
                        rep.test_accuracy
                    } else {
                        rep.loss.max(1e-4)
                    };
                    ((e + 1) as f64, y)
                })
                .collect();
            (i, *name, pts)
        })
        .collect();
    if accuracy {
        let chart = builder.build_cartesian_2d(1f64..epochs.max(2.0), 0f64..1.0f64)?;
        draw_curves(chart, series, SeriesLabelPosition::MiddleRight)
    } else {
        let chart =
            builder.build_cartesian_2d(1f64..epochs.max(2.0), (1e-4f64..max_loss * 1.5).log_scale())?;
        draw_curves(chart, series, SeriesLabelPosition::UpperRight)
    }
}

/// The curves on `chart` against the epoch, with their legend at `position`.
fn draw_curves<'a, 'b: 'a, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    series: Series<'_>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style((FAMILY, 12))
        .draw()?;
    for (i, name, pts) in series {
        chart
            .draw_series(LineSeries::new(pts, SERIES[i].stroke_width(2)))?
            .label(name)
            .legend(legend_line(SERIES[i]));
    }
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 12))
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
