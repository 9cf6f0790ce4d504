//! Peak memory of each pipeline stage of a model, held and run as a worker holds and runs
//! it: only the stage's tensors, read by ranged reads from the file, and one batch in SNN
//! mode (stage 0 on seeded random pixels, each later stage on the spikes its predecessor
//! sent).
//!
//! ```sh
//! cargo run --release --example efficientnet_b7_structure -- /tmp/b7.amos
//! cargo run --release --example stage_memory -- /tmp/b7.amos [STAGES] [BATCH] [THREADS] [LAST]
//! ```
//!
//! Per stage it prints the peak resident set size (Linux `VmHWM`, reset between stages
//! through `/proc/self/clear_refs`) and the time of the batch. Defaults: 4 stages, batch 8,
//! all cores, every stage (LAST: stop after that stage). Memory an earlier stage freed but
//! the allocator kept counts in a later stage's peak, so stage 0's figure is the one a
//! fresh worker process sees.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use amos_snn::model_file;
use amos_snn::pipeline::{Stage, StageInput, StageLayout};
use amos_snn::planner;
use amos_snn::spike_codec::Codec;

/// The process's peak resident set size in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak to the current resident set size.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn read_range(file: &File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: stage_memory MODEL.amos [STAGES] [BATCH] [THREADS] [LAST]")?;
    let stages: usize = args.get(1).map_or(Ok(4), |s| s.parse())?;
    let batch: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let threads: usize = args.get(3).map_or(Ok(0), |s| s.parse())?;
    let last: usize = args.get(4).map_or(Ok(usize::MAX), |s| s.parse())?;

    let file = File::open(path)?;
    let head = read_range(&file, 0, 32)?;
    let header = model_file::parse_header(&head)?;
    let range = header.metadata_range();
    let meta = read_range(&file, range.start, range.end)?;
    let metadata = model_file::parse_metadata(&header, &meta)?;
    // The structure alone (no weights) for planning, as the coordinator does.
    let structure = model_file::assemble_partial(&metadata, |_| Ok(None))?;
    let plan = planner::plan_spike_cuts(&structure, stages)?;
    let ends: Vec<usize> = plan.stages.iter().map(|s| s.nodes.end).collect();
    let shape = structure.graph.input_shape().to_vec();
    drop(structure);

    let images = amos_converter::bench::noise_images(batch, shape.iter().product());
    println!(
        "{path}: {stages} stages, batch {batch}, input {shape:?}; peak RSS per stage (weights of that stage only)"
    );
    println!("stage  nodes        weights MiB  peak RSS MiB  seconds");
    let mut received = Vec::new();
    for (i, s) in plan.stages.iter().enumerate() {
        reset_peak();
        let wanted: Vec<String> = s
            .nodes
            .clone()
            .flat_map(|n| metadata.node_tensors(n))
            .map(|t| t.name.clone())
            .collect();
        let weight_bytes = Cell::new(0u64);
        let model = model_file::assemble_partial(&metadata, |entry| {
            if !wanted.contains(&entry.name) {
                return Ok(None);
            }
            let r = metadata.tensor_range(entry);
            weight_bytes.set(weight_bytes.get() + r.end - r.start);
            read_range(&file, r.start, r.end)
                .map(Some)
                .map_err(|source| model_file::ModelFileError::Io {
                    path: path.into(),
                    source,
                })
        })?;
        let layout = StageLayout::new(&model, &ends, i)?;
        let stage = Stage::new(&model, layout, threads, Codec::None)?;
        drop(model);
        let start = Instant::now();
        let input = if i == 0 {
            let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
            stage.run(StageInput::Images(&refs), None)?
        } else {
            stage.run(StageInput::Spikes(std::mem::take(&mut received)), None)?
        };
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{i:5}  {:>5}..{:<5}  {:11.1}  {:12.0}  {seconds:7.1}",
            s.nodes.start,
            s.nodes.end,
            weight_bytes.get() as f64 / (1 << 20) as f64,
            peak_rss_mib()
        );
        received = input.spikes;
        if i >= last {
            break;
        }
    }
    Ok(())
}
