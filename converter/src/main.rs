//! `amos-convert`: convert image classifiers (ONNX) to AMOS spiking networks, inspect and
//! evaluate them. A thin layer over the `amos_converter` library: parse arguments, call,
//! report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use amos_converter::calibrate::calibrate;
use amos_converter::convert::{
    ConvertOptions, DEFAULT_FIT_SAMPLES, DEFAULT_FIT_STEPS, ModelInfo, convert,
};
use amos_converter::eval::{self, EvalOptions, Mode};
use amos_converter::inspect::{amos_report, onnx_report, stage_rows};
use amos_converter::onnx::import_file;
use amos_converter::{is_amos_file, recipe};
use amos_io::data::{Dataset, Layout, Preprocess, PreprocessFlags};
use amos_snn::Engine;
use amos_snn::model_file;
use amos_snn::simulate::SpikingNetwork;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(
    version,
    about = "Convert image classifiers to AMOS spiking networks, inspect and evaluate them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an ONNX model to an AMOS spiking network (a `.amos` model file).
    Convert(ConvertArgs),
    /// What a model holds: for ONNX, operators, parameters and the gates conversion replaces;
    /// for `.amos`, units, neurons, layers and approximation errors.
    Inspect {
        /// An ONNX or `.amos` model.
        model: PathBuf,
        /// Print JSON (ONNX keys: ann_params, ops, gates, gate_nodes, onnx_ops; `.amos` keys:
        /// ann_params, amos_params, units, neurons, layers, units_by_gate, unit_params, and
        /// stages with --stages).
        #[arg(long)]
        json: bool,
        /// `.amos` only: plan a pipeline of N stages as `amos-coordinator` does (cuts where
        /// only spikes cross) and report, per stage, its nodes, units, estimated cost and the
        /// bytes per image crossing its outgoing boundary (JSON key `stages`).
        #[arg(long)]
        stages: Option<usize>,
        /// Plan with cuts anywhere instead, counting a crossing tensor that is not a unit's
        /// output at this many bits per element (it would need an identity unit).
        #[arg(long, requires = "stages")]
        identity_k: Option<u32>,
    },
    /// Top-1/top-5 accuracy on a labelled image dataset: ANN mode for ONNX models, SNN and/or
    /// ANN mode for `.amos` models.
    Eval(EvalArgs),
    /// Converts at each K and evaluates against the ANN: neurons per image against top-1
    /// agreement (CSV and a plot).
    Sweep(SweepArgs),
    /// Images/s of ONNX Runtime on the ONNX model, and of our ANN and SNN modes on its
    /// conversion, on the same batch in the same run (median of the timed runs).
    Bench(BenchArgs),
    /// Decode + preprocess throughput on a dataset's images, already in memory (images/s and
    /// images/s per thread; median of the runs).
    DecodeBench(DecodeBenchArgs),
    /// Pictures of every unit against its gate (PNG), and the spikes per unit for one image.
    Plot {
        /// A `.amos` model.
        model: PathBuf,
        /// Folder for the pictures.
        #[arg(long)]
        out: PathBuf,
        /// An image for the spikes-per-unit chart (preprocessed with the model's recipe).
        #[arg(long)]
        image: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The converted model.
    model: PathBuf,
    /// The ONNX model it was converted from, for ONNX Runtime.
    #[arg(long)]
    onnx: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Threads, for ONNX Runtime and for us (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Timed runs after one warm-up (the median counts).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Images for the batch (the first B, preprocessed with the model's recipe); default:
    /// seeded random pixels. Spiking activity, and so SNN time, depends on the images.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also time ANN and SNN runs node by node, and runs of ONNX Runtime with its own
    /// profiler: milliseconds per image by layer type (JSON key `profile`) and per
    /// convolution, matched to ONNX Runtime's by weights' shape in order (`profile_convs`).
    #[arg(long)]
    profile: bool,
    /// Print JSON (keys: ort_ips, ann_ips, snn_ips, snn_over_ort, ann_over_ort, batch,
    /// threads, runs, *_seconds, ort_version).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DecodeBenchArgs {
    /// Dataset folder (any layout).
    data: PathBuf,
    /// Preprocessing recipe: efficientnet-lite, torchvision or cifar.
    #[arg(long, default_value = "efficientnet-lite")]
    preset: String,
    /// Output size N×N.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Dataset layout: imagefolder, csv, webdataset or parquet (default: detected).
    #[arg(long)]
    layout: Option<Layout>,
    /// Only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Threads (default: 1, for images/s per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs over all images, after one warm-up run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print JSON (keys: images, threads, runs, ips, ips_per_thread, seconds, errors).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Output model file.
    #[arg(short, long)]
    output: PathBuf,
    /// Preprocessing recipe stored in the model: efficientnet-lite, torchvision or cifar.
    #[arg(long)]
    preset: String,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Neurons per unit, e.g. `relu6=8,swish=16` (defaults: relu 10, relu6 10, sigmoid 8,
    /// swish 12, mul 40, hard_swish 12, hard_sigmoid 8, tanh 8, gelu 12, clip 10, erf 8).
    #[arg(long)]
    k: Option<String>,
    #[command(flatten)]
    units: UnitArgs,
    /// Seed of every random choice in fitting.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(clap::Args)]
struct SweepArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Preprocessing recipe: efficientnet-lite, torchvision or cifar.
    #[arg(long)]
    preset: String,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Evaluation images (dataset folder).
    #[arg(long)]
    data: PathBuf,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// The K values; without --gate every gate's K scales with K/10 (10 = the paper's K).
    #[arg(long, value_delimiter = ',', default_value = "6,8,10,12,16")]
    k: Vec<usize>,
    /// Sweep only this gate type's K (the others keep their defaults).
    #[arg(long)]
    gate: Option<String>,
    #[command(flatten)]
    units: UnitArgs,
    /// Folder for sweep.csv and sweep.png.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Calibration data, shared by `convert` and `sweep`.
#[derive(clap::Args)]
struct CalibrationArgs {
    /// Calibration images (a dataset folder) for unit ranges and fitting samples.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// How many calibration images to use (the first N, sorted).
    #[arg(long, default_value_t = 256)]
    calibration_images: usize,
    /// Synset list naming ImageFolder classes (default: ImageNet-1k).
    #[arg(long)]
    synsets: Option<PathBuf>,
    /// Dataset layout: imagefolder, csv, webdataset or parquet (default: detected).
    #[arg(long)]
    layout: Option<Layout>,
}

/// How units are built, shared by `convert` and `sweep`.
#[derive(clap::Args)]
struct UnitArgs {
    /// Closed-form units truncate as in the paper (default: round to the nearest level).
    #[arg(long)]
    truncate: bool,
    /// One unit per gate type, as the paper (default with calibration: a ReLU/ReLU6 layer
    /// that never reaches the bound gets the code over its own range).
    #[arg(long)]
    shared_units: bool,
    /// Descent budget of one-input fitted units (sweeps of coordinate descent; the time of
    /// a fit is about proportional to it). The multiplication unit keeps the fitter's 200.
    #[arg(long, default_value_t = DEFAULT_FIT_STEPS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    fit_steps: u32,
    /// Samples one-input fits use, an evenly spaced subset of the calibration samples (at
    /// least 64).
    #[arg(long, default_value_t = DEFAULT_FIT_SAMPLES as u32,
          value_parser = clap::value_parser!(u32).range(64..))]
    fit_samples: u32,
}

impl UnitArgs {
    /// Conversion options with these settings, the rest default.
    fn options(&self) -> ConvertOptions {
        ConvertOptions {
            rounding: !self.truncate,
            per_layer: !self.shared_units,
            fit_steps: self.fit_steps as usize,
            fit_samples: self.fit_samples as usize,
            ..Default::default()
        }
    }
}

#[derive(clap::Args)]
struct EvalArgs {
    /// An ONNX or `.amos` model.
    model: PathBuf,
    /// Dataset folder: ImageFolder (ROOT/<wnid>/<image>), a CSV manifest (labels.csv:
    /// file,label), WebDataset tar shards (key.jpg + key.cls) or Parquet shards (image.bytes,
    /// label).
    #[arg(long)]
    data: PathBuf,
    /// Dataset layout: imagefolder, csv, webdataset or parquet (default: detected).
    #[arg(long)]
    layout: Option<Layout>,
    /// Preprocessing recipe: efficientnet-lite, torchvision or cifar (default for `.amos`:
    /// the recipe stored in the model).
    #[arg(long)]
    preset: Option<String>,
    /// `.amos` models: run the spiking network, the ANN, or both (for agreement).
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Synset list (`<wnid> <name>` per line) giving ImageFolder class indices; default ImageNet-1k.
    #[arg(long)]
    synsets: Option<PathBuf>,
    /// Resize the shorter side to N before cropping (0: no resize).
    #[arg(long)]
    resize: Option<u32>,
    /// Centre crop to N×N.
    #[arg(long)]
    crop: Option<u32>,
    /// Resampling: bilinear, bicubic or nearest.
    #[arg(long)]
    interp: Option<String>,
    /// Per-channel mean, `a,b,c`, in 0..255 pixel units.
    #[arg(long)]
    mean: Option<String>,
    /// Per-channel std, `a,b,c`, in 0..255 pixel units.
    #[arg(long)]
    std: Option<String>,
    /// Evaluate only the first N images (sorted order).
    #[arg(long)]
    limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// `.amos` models: one row per gate type with only that type in spikes (all others
    /// exact): agreement, logit RMSE, neurons and spikes of that type.
    #[arg(long)]
    ablate: bool,
    /// Write one CSV row per image: image_id,label,ann_top1..ann_top5[,snn_top1..snn_top5,spikes,synops],error.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Print JSON (keys: images, ann_top1, ann_top5, errors, seconds; `.amos` adds snn_top1,
    /// snn_top5, agreement_top1, mean_spikes, mean_synops, neurons).
    #[arg(long)]
    json: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert(args) => convert_model(args),
        Command::Inspect {
            model,
            json,
            stages,
            identity_k,
        } if is_amos_file(&model) => inspect_amos(&model, json, stages, identity_k),
        Command::Inspect {
            model,
            json,
            stages,
            ..
        } => {
            if stages.is_some() {
                bail!("--stages needs a converted .amos model");
            }
            inspect(&model, json)
        }
        Command::Eval(args) if is_amos_file(&args.model) => evaluate_amos(args),
        Command::Eval(args) => evaluate(args),
        Command::Plot { model, out, image } => plot(&model, &out, image.as_deref()),
        Command::Sweep(args) => sweep(args),
        Command::DecodeBench(args) => decode_bench(args),
        Command::Bench(args) => bench(args),
    }
}

fn inspect(model: &Path, json: bool) -> Result<()> {
    let imported = import_file(model).with_context(|| format!("importing {}", model.display()))?;
    print_report(model, &onnx_report(&imported), json)
}

/// Prints an `inspect` report as text or JSON.
fn print_report(
    model: &Path,
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("model           {}", model.display());
        print!("{report}");
    }
    Ok(())
}

fn progress_bar(len: usize, hidden: bool, what: &str) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn preprocess_flags(args: &EvalArgs) -> PreprocessFlags {
    PreprocessFlags {
        resize: args.resize,
        crop: args.crop,
        interp: args.interp.clone(),
        mean: args.mean.clone(),
        std: args.std.clone(),
    }
}

/// An ONNX model read for conversion: its graph, the SHA-256 of the file, and the preset's
/// preprocessing at the model's input size.
fn prepare(
    model: &Path,
    preset: &str,
) -> Result<(amos_converter::onnx::ImportedModel, String, Preprocess)> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let imported = import_file(model).with_context(|| format!("importing {}", model.display()))?;
    let input = imported.graph.input_shape().to_vec();
    let [3, h, w] = input[..] else {
        bail!(
            "{}: input [N, {input:?}] is not an [N, 3, H, W] image batch",
            model.display()
        );
    };
    let preprocess = Preprocess::preset(preset, (h as u32, w as u32))?;
    Ok((imported, sha256_hex(&bytes), preprocess))
}

/// Runs calibration when `--calibration` is given; also returns the calibration data's class names.
fn run_calibration(
    engine: &Engine,
    preprocess: &Preprocess,
    args: &CalibrationArgs,
) -> Result<(Option<amos_converter::calibrate::Calibration>, Vec<String>)> {
    let Some(dir) = &args.calibration else {
        return Ok((None, Vec::new()));
    };
    let dataset = Dataset::open_as(dir, args.synsets.as_deref(), args.layout)?;
    let n = args.calibration_images.min(dataset.entries.len());
    let bar = progress_bar(n, false, "calibration images");
    let cal = calibrate(engine, &dataset, preprocess, n, 16, |d| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    Ok((Some(cal), dataset.classes))
}

fn convert_model(args: ConvertArgs) -> Result<()> {
    let start = Instant::now();
    let (imported, sha, preprocess) = prepare(&args.model, &args.preset)?;
    let mut options = ConvertOptions {
        seed: args.seed,
        ..args.units.options()
    };
    if let Some(spec) = &args.k {
        options.set_k(spec)?;
    }
    let engine = Engine::new(imported.graph.clone(), args.threads)?;
    let (calibration, classes) = run_calibration(&engine, &preprocess, &args.calibration)?;
    let info = ModelInfo {
        recipe: recipe::to_recipe(&args.preset, &preprocess),
        classes,
        source_sha256: sha,
    };
    let model = convert(
        imported.graph,
        calibration.as_ref(),
        &options,
        info,
        |gate| tracing::info!(gate, "building unit"),
    )?;
    model_file::write_file(&args.output, &model)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let net = SpikingNetwork::new(&model, args.threads)?;
    let report = amos_report(&model, &net);
    println!(
        "converted {} -> {} in {:.1} s",
        args.model.display(),
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    print!("{report}");
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn inspect_amos(
    path: &Path,
    json: bool,
    stages: Option<usize>,
    identity_k: Option<u32>,
) -> Result<()> {
    let model =
        model_file::read_file(path).with_context(|| format!("reading {}", path.display()))?;
    let net = SpikingNetwork::new(&model, 1)?;
    let mut report = amos_report(&model, &net);
    if let Some(n) = stages {
        report.stages = Some(stage_rows(&model, n, identity_k).context("planning stages")?);
    }
    print_report(path, &report, json)
}

fn evaluate_amos(args: EvalArgs) -> Result<()> {
    let model = model_file::read_file(&args.model)
        .with_context(|| format!("reading {}", args.model.display()))?;
    let stored = recipe::from_recipe(&model.preprocess)?;
    let flags = preprocess_flags(&args);
    let preprocess = match &args.preset {
        Some(preset) => Preprocess::from_flags(preset, stored.crop, &flags)?,
        None if flags == PreprocessFlags::default() => stored,
        None => bail!("give --preset along with explicit preprocessing flags"),
    };
    let dataset = Dataset::open_as(&args.data, args.synsets.as_deref(), args.layout)?;
    let net = SpikingNetwork::new(&model, args.threads)?;
    let total = args.limit.unwrap_or(usize::MAX).min(dataset.entries.len());
    let bar = progress_bar(total, args.json, "images");
    let start = Instant::now();
    let options = EvalOptions {
        batch: args.batch,
        limit: args.limit,
    };
    if args.ablate {
        let rows = eval::ablate(&net, &model, &dataset, &preprocess, &options, |d| {
            bar.set_position(d as u64)
        })?;
        bar.finish_and_clear();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "images": total, "ablation": rows }))?
            );
        } else {
            println!(
                "{:<14} {:>10} {:>11} {:>14} {:>14}",
                "only in spikes", "agreement", "logit RMSE", "neurons/image", "spikes/image"
            );
            for r in rows {
                println!(
                    "{:<14} {:>9.2}% {:>11.4} {:>14} {:>14.0}",
                    r.gate, r.agreement_top1, r.logit_rmse, r.neurons, r.spikes
                );
            }
        }
        return Ok(());
    }
    let predictions =
        eval::evaluate_converted(&net, &dataset, &preprocess, args.mode, &options, |d| {
            bar.set_position(d as u64)
        })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let ann = (args.mode != Mode::Snn).then(|| eval::summarise_by(&predictions, false));
    let snn = (args.mode != Mode::Ann).then(|| eval::summarise_by(&predictions, true));
    let evaluated: Vec<_> = predictions.iter().filter(|p| p.error.is_none()).collect();
    let mean = |f: fn(&eval::Prediction) -> u64| {
        evaluated.iter().map(|p| f(p) as f64).sum::<f64>() / evaluated.len().max(1) as f64
    };
    let (mean_spikes, mean_synops) = (mean(|p| p.spikes), mean(|p| p.synops));
    let agreement = (args.mode == Mode::Both).then(|| eval::agreement_top1(&predictions));
    let classes = net
        .engine()
        .graph()
        .output_shape()
        .iter()
        .product::<usize>();
    let logit_errors = (args.mode == Mode::Both).then(|| eval::logit_rmse(&predictions, classes));
    if let Some(path) = &args.predictions {
        eval::write_predictions(path, &predictions, args.mode != Mode::Ann)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let images = evaluated.len();
    if args.json {
        let out = json!({
            "images": images,
            "errors": predictions.len() - images,
            "snn_top1": snn.as_ref().map(|s| s.top1),
            "snn_top5": snn.as_ref().map(|s| s.top5),
            "ann_top1": ann.as_ref().map(|s| s.top1),
            "ann_top5": ann.as_ref().map(|s| s.top5),
            "agreement_top1": agreement,
            "logit_rmse": logit_errors.map(|e| e.0),
            "max_logit_error": logit_errors.map(|e| e.1),
            "mean_spikes": snn.as_ref().map(|_| mean_spikes),
            "mean_synops": snn.as_ref().map(|_| mean_synops),
            "neurons": net.neurons(),
            "input_neurons": net.input_neurons(),
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "images        {images} ({} could not be read)",
            predictions.len() - images
        );
        if let Some(s) = &snn {
            println!("SNN top-1     {:.2}%   top-5 {:.2}%", s.top1, s.top5);
        }
        if let Some(s) = &ann {
            println!("ANN top-1     {:.2}%   top-5 {:.2}%", s.top1, s.top5);
        }
        if let Some(a) = agreement {
            println!("agreement     {a:.2}% of images have the same top-1");
        }
        if let Some((rmse, max)) = logit_errors {
            println!("logit error   RMSE {rmse:.4}, max {max:.4} (SNN − ANN)");
        }
        if snn.is_some() {
            println!(
                "spikes/image  {mean_spikes:.0}   synops/image {mean_synops:.0}   neurons {}",
                net.neurons()
            );
        }
        println!(
            "time          {seconds:.1} s ({:.1} images/s)",
            images as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

fn sweep(args: SweepArgs) -> Result<()> {
    use amos_converter::sweep;
    let (imported, sha, preprocess) = prepare(&args.model, &args.preset)?;
    let gate = match &args.gate {
        None => None,
        Some(name) => Some(
            amos_converter::convert::GATES
                .iter()
                .copied()
                .find(|g| g.name() == name)
                .with_context(|| format!("--gate: unknown gate '{name}'"))?,
        ),
    };
    let engine = Engine::new(imported.graph.clone(), args.threads)?;
    let (calibration, _) = run_calibration(&engine, &preprocess, &args.calibration)?;
    let dataset = Dataset::open_as(
        &args.data,
        args.calibration.synsets.as_deref(),
        args.calibration.layout,
    )?;
    let info = ModelInfo {
        recipe: recipe::to_recipe(&args.preset, &preprocess),
        classes: dataset.classes.clone(),
        source_sha256: sha,
    };
    let base = args.units.options();
    let bar = progress_bar(args.k.len(), false, "conversions");
    let eval_options = EvalOptions {
        batch: 16,
        limit: args.limit,
    };
    let points = sweep::sweep(
        &imported.graph,
        calibration.as_ref(),
        &info,
        &args.k,
        gate,
        &base,
        &dataset,
        &preprocess,
        &eval_options,
        args.threads,
        |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let csv_path = args.out.join("sweep.csv");
    sweep::write_csv(&csv_path, &points)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let title = format!(
        "{} — {}",
        args.model
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        args.gate
            .as_deref()
            .map_or("all gates".to_string(), |g| format!("{g} only"))
    );
    let png = args.out.join("sweep.png");
    amos_converter::plot::plot_tradeoff(&points, &title, &png)?;
    println!(
        "{:>4} {:>14} {:>12} {:>9} {:>9} {:>10} {:>10}  settings",
        "K", "neurons/image", "spikes/image", "SNN top1", "ANN top1", "agreement", "logit RMSE"
    );
    for p in &points {
        println!(
            "{:>4} {:>14} {:>12.0} {:>8.2}% {:>8.2}% {:>9.2}% {:>10.4}  {}",
            p.k,
            p.neurons,
            p.mean_spikes,
            p.snn_top1,
            p.ann_top1,
            p.agreement_top1,
            p.logit_rmse,
            p.settings
        );
    }
    println!("wrote {} and {}", csv_path.display(), png.display());
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    let model = model_file::read_file(&args.model)
        .with_context(|| format!("reading {}", args.model.display()))?;
    let net = SpikingNetwork::new(&model, args.threads)?;
    let shape = model.graph.input_shape().to_vec();
    let batch = args.batch.max(1);
    let images: Vec<Vec<u8>> = match &args.data {
        Some(dir) => {
            let dataset = Dataset::open(dir, None)?;
            let preprocess = recipe::from_recipe(&model.preprocess)?;
            let n = dataset.entries.len();
            (0..batch)
                .map(|i| dataset.load_u8(&dataset.entries[i % n], &preprocess))
                .collect::<Result<_, _>>()?
        }
        None => amos_converter::bench::noise_images(batch, shape.iter().product()),
    };
    let report = amos_converter::bench::bench(&net, &args.onnx, &images, args.runs, args.profile)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "batch {}, {} threads, median of {} runs (ONNX Runtime {})",
            report.batch, report.threads, report.runs, report.ort_version
        );
        println!("  ONNX Runtime ANN  {:8.1} images/s", report.ort_ips);
        println!(
            "  amos ANN          {:8.1} images/s  ({:.2}× ORT)",
            report.ann_ips, report.ann_over_ort
        );
        println!(
            "  amos SNN          {:8.1} images/s  ({:.2}× ORT)",
            report.snn_ips, report.snn_over_ort
        );
        if let Some(rows) = &report.profile {
            println!(
                "\n  {:<28} {:>10} {:>10} {:>10}",
                "ms per image", "ANN", "SNN", "ORT"
            );
            for r in rows {
                let ort = r.ort_ms.map_or("-".into(), |ms| format!("{ms:.3}"));
                println!(
                    "  {:<28} {:>10.3} {:>10.3} {:>10}",
                    r.layer_type, r.ann_ms, r.snn_ms, ort
                );
            }
        }
        if let Some(convs) = &report.profile_convs {
            println!(
                "\n  {:>5} {:<18} {:<20} {:<16} {:>8} {:>8} {:>8} {:>8}",
                "node", "convolution", "weights", "output", "ANN", "SNN", "ORT", "ANN/ORT"
            );
            for c in convs {
                let dims = |d: &[usize]| {
                    d.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("×")
                };
                let ort = c.ort_ms.map_or("-".into(), |ms| format!("{ms:.3}"));
                let ratio = c
                    .ort_ms
                    .filter(|&ms| ms > 0.0)
                    .map_or("-".into(), |ms| format!("{:.2}", c.ann_ms / ms));
                println!(
                    "  {:>5} {:<18} {:<20} {:<16} {:>8.3} {:>8.3} {:>8} {:>8}",
                    c.node,
                    c.layer_type.trim_end_matches(" (GEMM)"),
                    dims(&c.weights),
                    dims(&c.output),
                    c.ann_ms,
                    c.snn_ms,
                    ort,
                    ratio
                );
            }
        }
    }
    Ok(())
}

/// Times decoding and preprocessing alone: every file is read into memory first.
fn decode_bench(args: DecodeBenchArgs) -> Result<()> {
    use rayon::prelude::*;
    let dataset = Dataset::open_as(&args.data, None, args.layout)?;
    let n = args.limit.unwrap_or(usize::MAX).min(dataset.entries.len());
    let preprocess = Preprocess::preset(&args.preset, (args.size, args.size))?;
    let files: Vec<(String, bytes::Bytes)> = dataset.entries[..n]
        .iter()
        .map(|e| Ok((e.image_id.clone(), dataset.read(e)?)))
        .collect::<Result<_, amos_io::data::DataError>>()?;
    let threads = args.threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the thread pool")?;
    let run = || -> (f64, usize) {
        let start = Instant::now();
        let errors = pool.install(|| {
            files
                .par_iter()
                .filter(|(id, bytes)| preprocess.load_u8_from_bytes(bytes, id).is_err())
                .count()
        });
        (start.elapsed().as_secs_f64(), errors)
    };
    let (_, errors) = run();
    let mut seconds: Vec<f64> = (0..args.runs.max(1)).map(|_| run().0).collect();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let ips = n as f64 / median;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "images": n,
                "threads": threads,
                "runs": seconds.len(),
                "ips": ips,
                "ips_per_thread": ips / threads as f64,
                "seconds": seconds,
                "errors": errors,
            })
        );
    } else {
        println!(
            "{n} images ({}, {}×{}), {threads} threads: {ips:.1} images/s, {:.1} per thread (median of {} runs; {errors} undecodable)",
            args.preset,
            args.size,
            args.size,
            ips / threads as f64,
            seconds.len()
        );
    }
    Ok(())
}

fn plot(path: &Path, out: &Path, image: Option<&Path>) -> Result<()> {
    let model =
        model_file::read_file(path).with_context(|| format!("reading {}", path.display()))?;
    for file in amos_converter::plot::plot_units(&model, out)? {
        println!("wrote {}", file.display());
    }
    match image {
        Some(img) => {
            let preprocess = recipe::from_recipe(&model.preprocess)?;
            let pixels = preprocess.load_u8(img)?;
            let net = SpikingNetwork::new(&model, 0)?;
            let run = net.run_snn(&[pixels.as_slice()])?;
            let file = out.join("spikes-per-unit.png");
            let stats = run.stats.first().context("no statistics for the image")?;
            amos_converter::plot::plot_spikes(
                &model,
                &stats.unit_spikes,
                &img.display().to_string(),
                &file,
            )?;
            println!("wrote {}", file.display());
        }
        None => println!("(give --image FILE for the chart of spikes per unit)"),
    }
    Ok(())
}

fn evaluate(args: EvalArgs) -> Result<()> {
    let imported =
        import_file(&args.model).with_context(|| format!("importing {}", args.model.display()))?;
    let input = imported.graph.input_shape().to_vec();
    let [3, h, w] = input[..] else {
        bail!(
            "{}: input [N, {input:?}] is not an [N, 3, H, W] image batch",
            args.model.display()
        );
    };
    let Some(preset) = args.preset.as_deref() else {
        bail!(
            "--preset is required for an ONNX model (efficientnet-lite, torchvision or cifar): ONNX files do not record their preprocessing"
        );
    };
    let flags = preprocess_flags(&args);
    let preprocess = Preprocess::from_flags(preset, (h as u32, w as u32), &flags)?;
    if preprocess.chw_len() != 3 * h * w {
        bail!(
            "the preprocessing produces {} values per image; the model takes 3×{h}×{w}",
            preprocess.chw_len()
        );
    }
    let dataset = Dataset::open_as(&args.data, args.synsets.as_deref(), args.layout)?;
    let engine = Engine::new(imported.graph, args.threads)?;
    let total = args.limit.unwrap_or(usize::MAX).min(dataset.entries.len());
    let bar = progress_bar(total, args.json, "images");
    let start = Instant::now();
    let options = EvalOptions {
        batch: args.batch,
        limit: args.limit,
    };
    let predictions = eval::evaluate(&engine, &dataset, &preprocess, &options, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let summary = eval::summarise(&predictions);
    for p in predictions.iter().filter(|p| p.error.is_some()) {
        tracing::warn!(image = %p.image_id, error = p.error.as_deref().unwrap_or(""), "image skipped");
    }
    if let Some(path) = &args.predictions {
        eval::write_predictions(path, &predictions, false)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        let out = json!({
            "images": summary.images,
            "errors": summary.errors,
            "ann_top1": summary.top1,
            "ann_top5": summary.top5,
            "seconds": seconds,
            "images_per_second": summary.images as f64 / seconds.max(1e-9),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "images   {} ({} could not be read)",
            summary.images, summary.errors
        );
        println!("top-1    {:.2}%", summary.top1);
        println!("top-5    {:.2}%", summary.top5);
        println!(
            "time     {seconds:.1} s ({:.1} images/s, {} threads)",
            summary.images as f64 / seconds.max(1e-9),
            engine.threads()
        );
    }
    Ok(())
}
