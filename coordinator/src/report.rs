//! What a run's output says: accuracy, agreement, spikes and neurons per image, spike rate
//! per unit, read back from the committed shard files and the layer table.

use amos_io::results::{self, ImageRow, LayerRow};
use amos_io::store::Location;
use anyhow::Context;
use serde::Serialize;

/// The figures of a run (percentages in 0..100).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Rows (images), evaluated or not.
    pub images: u64,
    /// Rows with an error (not evaluated).
    pub errors: u64,
    /// Top-1 / top-5 over the evaluated images with a label.
    pub snn_top1: Option<f64>,
    pub snn_top5: Option<f64>,
    pub ann_top1: Option<f64>,
    pub ann_top5: Option<f64>,
    /// Share of evaluated images whose SNN and ANN top-1 agree (reference runs).
    pub agreement_top1: Option<f64>,
    /// Means over the evaluated images.
    pub mean_spikes: f64,
    pub mean_synops: f64,
    pub mean_neurons: f64,
    /// Spikes per neuron per image, per unit (with the layer table).
    pub units: Vec<UnitRate>,
}

/// One unit's spike rate: Σ unit_spikes[u] / (images × neurons[u]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnitRate {
    pub unit_id: u32,
    pub node: String,
    pub gate: String,
    pub neurons: u64,
    pub spike_rate: f64,
}

fn pct(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| 100.0 * num as f64 / den as f64)
}

/// Summarises rows (and the layer table, for spike rates per unit).
pub fn summarise(rows: &[ImageRow], layers: &[LayerRow]) -> Summary {
    let ok: Vec<&ImageRow> = rows.iter().filter(|r| r.error.is_none()).collect();
    let n = ok.len();
    let count = |f: &dyn Fn(&ImageRow) -> Option<bool>| {
        let known: Vec<bool> = ok.iter().filter_map(|r| f(r)).collect();
        pct(known.iter().filter(|&&b| b).count(), known.len())
    };
    let both: Vec<&&ImageRow> = ok
        .iter()
        .filter(|r| r.snn_top5.is_some() && r.ann_top5.is_some())
        .collect();
    let agree = both
        .iter()
        .filter(|r| r.snn_top5.map(|t| t[0]) == r.ann_top5.map(|t| t[0]))
        .count();
    let mean = |f: &dyn Fn(&ImageRow) -> u64| {
        if n == 0 {
            0.0
        } else {
            ok.iter().map(|r| f(r) as f64).sum::<f64>() / n as f64
        }
    };
    let mut unit_totals = vec![0u64; layers.len()];
    for r in &ok {
        for (t, &s) in unit_totals.iter_mut().zip(&r.unit_spikes) {
            *t += s as u64;
        }
    }
    Summary {
        images: rows.len() as u64,
        errors: (rows.len() - n) as u64,
        snn_top1: count(&|r| r.snn_top1_correct),
        snn_top5: count(&|r| r.snn_top5_correct),
        ann_top1: count(&|r| r.ann_top1_correct),
        ann_top5: count(&|r| r.ann_top5_correct),
        agreement_top1: pct(agree, both.len()),
        mean_spikes: mean(&|r| r.spikes),
        mean_synops: mean(&|r| r.synops),
        mean_neurons: mean(&|r| r.neurons),
        units: layers
            .iter()
            .zip(unit_totals)
            .map(|(l, total)| UnitRate {
                unit_id: l.unit_id,
                node: l.node.clone(),
                gate: l.gate.clone(),
                neurons: l.neurons,
                spike_rate: if n == 0 || l.neurons == 0 {
                    0.0
                } else {
                    total as f64 / (n as f64 * l.neurons as f64)
                },
            })
            .collect(),
    }
}

/// Every row of the committed shards under `out` (ascending by shard), and the layer table
/// when present.
pub async fn load(out: &Location) -> anyhow::Result<(Vec<ImageRow>, Vec<LayerRow>)> {
    let mut rows = Vec::new();
    let listed = out.list("shards").await?;
    let mut shards: Vec<_> = listed
        .iter()
        .filter_map(|o| {
            let name = o.location.filename()?;
            results::shard_id(name).map(|id| (id, o.location.clone()))
        })
        .collect();
    shards.sort();
    for (_, path) in shards {
        let bytes = out.get(&path).await?;
        let shard = results::decode_shard(bytes)
            .with_context(|| format!("{}/{}", out.url.trim_end_matches('/'), path))?;
        rows.extend(shard.rows);
    }
    let layers_path = out.child("layers.parquet");
    let layers = if out.exists(&layers_path).await? {
        results::decode_layers(out.get(&layers_path).await?).context("layers.parquet")?
    } else {
        Vec::new()
    };
    Ok((rows, layers))
}

/// The report as a text table.
pub fn render(s: &Summary, top_units: usize) -> String {
    use std::fmt::Write;
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}%"));
    let mut o = String::new();
    let _ = writeln!(o, "images            {}", s.images);
    let _ = writeln!(o, "errors            {}", s.errors);
    let _ = writeln!(o, "SNN top-1/top-5   {} / {}", f(s.snn_top1), f(s.snn_top5));
    let _ = writeln!(o, "ANN top-1/top-5   {} / {}", f(s.ann_top1), f(s.ann_top5));
    let _ = writeln!(o, "top-1 agreement   {}", f(s.agreement_top1));
    let _ = writeln!(o, "spikes / image    {:.0}", s.mean_spikes);
    let _ = writeln!(o, "synops / image    {:.0}", s.mean_synops);
    let _ = writeln!(o, "neurons / image   {:.0}", s.mean_neurons);
    if !s.units.is_empty() && top_units > 0 {
        let mut units: Vec<&UnitRate> = s.units.iter().collect();
        units.sort_by(|a, b| b.spike_rate.total_cmp(&a.spike_rate));
        let _ = writeln!(
            o,
            "\nspike rate per unit (spikes per neuron per image), highest {} of {}:",
            top_units.min(units.len()),
            units.len()
        );
        let _ = writeln!(o, "{:>6}  {:<10} {:>12}  node", "unit", "gate", "rate");
        for u in units.iter().take(top_units) {
            let _ = writeln!(
                o,
                "{:>6}  {:<10} {:>12.5}  {}",
                u.unit_id, u.gate, u.spike_rate, u.node
            );
        }
    }
    o
}
