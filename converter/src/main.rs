//! `amos-convert`: inspect and evaluate image classifiers (ONNX), on the way to AMOS spiking
//! networks. A thin layer over the `amos_converter` library: parse arguments, call, report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use amos_converter::eval::{self, EvalOptions};
use amos_converter::inspect::onnx_report;
use amos_converter::onnx::import_file;
use amos_io::data::{Dataset, Preprocess, PreprocessFlags};
use amos_snn::Engine;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(version, about = "Convert image classifiers to AMOS spiking networks, inspect and evaluate them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Operators, parameter count and the gates conversion will replace.
    Inspect {
        /// An ONNX model.
        model: PathBuf,
        /// Print JSON (keys: ann_params, ops, gates, gate_nodes, onnx_ops, …).
        #[arg(long)]
        json: bool,
    },
    /// Top-1/top-5 accuracy of the model on a labelled image dataset (ANN mode).
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// An ONNX model.
    model: PathBuf,
    /// Dataset folder: ImageFolder (ROOT/<wnid>/<image>) or a CSV manifest (labels.csv: file,label).
    #[arg(long)]
    data: PathBuf,
    /// Preprocessing recipe: efficientnet-lite, torchvision or cifar.
    #[arg(long)]
    preset: Option<String>,
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
    /// Write one CSV row per image: image_id,label,ann_top1..ann_top5,error.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Print JSON (keys: images, ann_top1, ann_top5, errors, seconds).
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
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Eval(args) => evaluate(args),
    }
}

fn inspect(model: &Path, json: bool) -> Result<()> {
    let imported = import_file(model).with_context(|| format!("importing {}", model.display()))?;
    let report = onnx_report(&imported);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("model          {}", model.display());
        print!("{report}");
    }
    Ok(())
}

fn evaluate(args: EvalArgs) -> Result<()> {
    let imported = import_file(&args.model).with_context(|| format!("importing {}", args.model.display()))?;
    let input = imported.graph.input_shape().to_vec();
    let [3, h, w] = input[..] else {
        bail!("{}: input [N, {input:?}] is not an [N, 3, H, W] image batch", args.model.display());
    };
    let Some(preset) = args.preset.as_deref() else {
        bail!("--preset is required for an ONNX model (efficientnet-lite, torchvision or cifar): ONNX files do not record their preprocessing");
    };
    let flags = PreprocessFlags { resize: args.resize, crop: args.crop, interp: args.interp, mean: args.mean, std: args.std };
    let preprocess = Preprocess::from_flags(preset, (h as u32, w as u32), &flags)?;
    if preprocess.chw_len() != 3 * h * w {
        bail!("the preprocessing produces {} values per image; the model takes 3×{h}×{w}", preprocess.chw_len());
    }
    let dataset = Dataset::open(&args.data, args.synsets.as_deref())?;
    let engine = Engine::new(imported.graph, args.threads)?;
    let total = args.limit.unwrap_or(usize::MAX).min(dataset.entries.len());
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let options = EvalOptions { batch: args.batch, limit: args.limit };
    let predictions = eval::evaluate(&engine, &dataset, &preprocess, &options, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let summary = eval::summarise(&predictions);
    for p in predictions.iter().filter(|p| p.error.is_some()) {
        tracing::warn!(image = %p.image_id, error = p.error.as_deref().unwrap_or(""), "image skipped");
    }
    if let Some(path) = &args.predictions {
        eval::write_predictions(path, &predictions).with_context(|| format!("writing {}", path.display()))?;
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
        println!("images   {} ({} could not be read)", summary.images, summary.errors);
        println!("top-1    {:.2}%", summary.top1);
        println!("top-5    {:.2}%", summary.top5);
        println!("time     {seconds:.1} s ({:.1} images/s, {} threads)", summary.images as f64 / seconds.max(1e-9), engine.threads());
    }
    Ok(())
}
