//! The CPU engine: runs a [`Graph`] on image batches, multi-threaded.
//!
//! Kernels run inside the engine's own rayon pool, so `threads` bounds the whole run. Each
//! intermediate tensor is dropped after its last reader, which keeps memory near the widest
//! layer of the network rather than its sum.

use std::ops::Range;

use crate::error::EngineError;
use crate::graph::{Graph, ValueId};
use crate::tensor::Tensor;

/// Runs a graph in ANN mode (every operator exact).
pub struct Engine {
    graph: Graph,
    pool: rayon::ThreadPool,
    threads: usize,
    /// For each value, the index of the last node reading it.
    last_use: Vec<usize>,
    /// Seconds per node, summed over runs while profiling is on ([`Engine::start_profile`]).
    profile: std::sync::Mutex<Option<Vec<f64>>>,
    profiling: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// An engine over `graph` with `threads` worker threads (0: one per core).
    pub fn new(graph: Graph, threads: usize) -> Result<Self, EngineError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| EngineError::ThreadPool(e.to_string()))?;
        let threads = pool.current_num_threads();
        let mut last_use = vec![0; graph.values.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
            }
        }
        last_use[graph.output] = usize::MAX;
        Ok(Engine {
            graph,
            pool,
            threads,
            last_use,
            profile: std::sync::Mutex::new(None),
            profiling: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts timing every node (wall-clock seconds, summed over the runs until
    /// [`Engine::take_profile`]); a node replaced by the caller (an AMOS unit in SNN mode)
    /// is timed with its replacement.
    pub fn start_profile(&self) {
        let mut p = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        *p = Some(vec![0.0; self.graph.nodes.len()]);
        self.profiling
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops timing and returns the seconds per node since [`Engine::start_profile`].
    pub fn take_profile(&self) -> Option<Vec<f64>> {
        self.profiling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs a batch `[N, per-image input shape…]`, returning `[N, per-image output shape…]`.
    pub fn run(&self, input: Tensor) -> Result<Tensor, EngineError> {
        self.check_input(&input)?;
        Ok(self
            .pool
            .install(|| self.run_in_pool(input, &mut |_, _| None)))
    }

    /// Runs a batch like [`Engine::run`], letting `replace` compute any node instead: it is
    /// called with each node's index and runtime inputs, and a `Some` result becomes the
    /// node's output. SNN mode replaces gates by their units this way; calibration records
    /// gate inputs and returns `None`. `replace` runs inside the engine's thread pool.
    pub fn run_with(
        &self,
        input: Tensor,
        replace: &mut (dyn FnMut(usize, &[&Tensor]) -> Option<Tensor> + Send),
    ) -> Result<Tensor, EngineError> {
        self.check_input(&input)?;
        Ok(self.pool.install(|| self.run_in_pool(input, replace)))
    }

    fn check_input(&self, input: &Tensor) -> Result<(), EngineError> {
        let expected = self.graph.input_shape();
        if input.shape().len() != expected.len() + 1 || &input.shape()[1..] != expected {
            return Err(EngineError::InputShape {
                got: input.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    /// Runs `f` inside the engine's thread pool (so rayon work in it uses these threads).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn run_in_pool(
        &self,
        input: Tensor,
        replace: &mut (dyn FnMut(usize, &[&Tensor]) -> Option<Tensor> + Send),
    ) -> Tensor {
        let g = &self.graph;
        let mut values: Vec<Option<Tensor>> = vec![None; g.values.len()];
        values[g.input] = Some(input);
        self.run_range(
            &mut values,
            0..g.nodes.len(),
            &[],
            replace,
            &[],
            self.threads,
        );
        values[g.output]
            .take()
            .unwrap_or_else(|| crate::ops::unreachable_shape())
    }

    /// Runs the contiguous nodes `nodes` of a pipeline stage: `inputs` are the values the
    /// stage receives (each `[N, per-image shape…]`), and the values in `keep` are returned,
    /// in that order, for the next stage. Runs inside the engine's thread pool, with
    /// `replace` as in [`Engine::run_with`].
    pub fn run_nodes(
        &self,
        nodes: Range<usize>,
        inputs: Vec<(ValueId, Tensor)>,
        keep: &[ValueId],
        replace: &mut (dyn FnMut(usize, &[&Tensor]) -> Option<Tensor> + Send),
    ) -> Result<Vec<Tensor>, EngineError> {
        self.run_nodes_fused(nodes, inputs, keep, replace, &[], self.threads)
    }

    /// [`Engine::run_nodes`] for a caller that fuses some nodes into their producers: each
    /// node marked in `forwarded` (indexed by node) is not evaluated; its output is the
    /// output of the node before it, passed on as is, because `replace` already applied it
    /// when it computed that node (an activation or unit fused into the convolution before
    /// it, or the residual addition after it). `replace` gets such a producer's own inputs
    /// followed by the forwarded node's other inputs (the residual). Each kernel
    /// splits its work over at most `threads` threads (1 when the caller already runs
    /// several batches in parallel); the results do not depend on it.
    pub fn run_nodes_fused(
        &self,
        nodes: Range<usize>,
        inputs: Vec<(ValueId, Tensor)>,
        keep: &[ValueId],
        replace: &mut (dyn FnMut(usize, &[&Tensor]) -> Option<Tensor> + Send),
        forwarded: &[bool],
        threads: usize,
    ) -> Result<Vec<Tensor>, EngineError> {
        let g = &self.graph;
        if nodes.end > g.nodes.len() || nodes.start > nodes.end {
            return Err(EngineError::Stage(format!(
                "node range {nodes:?} is outside the graph's {} nodes",
                g.nodes.len()
            )));
        }
        let mut values: Vec<Option<Tensor>> = vec![None; g.values.len()];
        let mut batch = None;
        for (v, t) in inputs {
            let expected = g.values.get(v).map(|val| &val.shape);
            let n = t.shape().first().copied();
            if expected.is_none_or(|e| t.shape().get(1..) != Some(e.as_slice()))
                || batch.is_some_and(|b| Some(b) != n)
            {
                return Err(EngineError::Stage(format!(
                    "received value {v} with shape {:?}, expected [N, {:?}] with one batch size",
                    t.shape(),
                    expected
                )));
            }
            batch = n;
            values[v] = Some(t);
        }
        // Every value a node of the range reads must be produced in it or received.
        let mut available: Vec<bool> = values.iter().map(Option::is_some).collect();
        for i in nodes.clone() {
            let node = &g.nodes[i];
            if let Some(&v) = node.inputs.iter().find(|&&v| !available[v]) {
                return Err(EngineError::Stage(format!(
                    "node {i} ('{}') reads value {v}, which this stage neither computes nor receives",
                    node.name
                )));
            }
            available[node.output] = true;
        }
        if let Some(&v) = keep
            .iter()
            .find(|&&v| v >= available.len() || !available[v])
        {
            return Err(EngineError::Stage(format!(
                "value {v} is to be sent on but this stage neither computes nor receives it"
            )));
        }
        Ok(self.pool.install(|| {
            self.run_range(&mut values, nodes, keep, replace, forwarded, threads);
            keep.iter()
                .map(|&v| {
                    values[v]
                        .clone()
                        .unwrap_or_else(|| crate::ops::unreachable_shape())
                })
                .collect()
        }))
    }

    /// Evaluates `nodes` in order over `values`, dropping each value after its last reader
    /// unless it is in `keep`; nodes marked in `forwarded` pass their first input on.
    fn run_range(
        &self,
        values: &mut [Option<Tensor>],
        nodes: Range<usize>,
        keep: &[ValueId],
        replace: &mut (dyn FnMut(usize, &[&Tensor]) -> Option<Tensor> + Send),
        forwarded: &[bool],
        threads: usize,
    ) {
        let g = &self.graph;
        let profiling = self.profiling.load(std::sync::atomic::Ordering::Relaxed);
        for i in nodes {
            let node = &g.nodes[i];
            let start = profiling.then(std::time::Instant::now);
            let out = if forwarded.get(i).copied().unwrap_or(false) {
                // The producer's output, moved when this node is its last reader, which
                // fusion arranges.
                let src = i
                    .checked_sub(1)
                    .map(|p| g.nodes[p].output)
                    .filter(|v| node.inputs.contains(v))
                    .unwrap_or(node.inputs[0]);
                let moved = (self.last_use[src] == i && !keep.contains(&src))
                    .then(|| values[src].take())
                    .flatten();
                moved.unwrap_or_else(|| {
                    values[src]
                        .clone()
                        .unwrap_or_else(|| crate::ops::unreachable_shape())
                })
            } else {
                // With the other inputs of the node fused into this one, if any.
                let fused_next = g
                    .nodes
                    .get(i + 1)
                    .filter(|_| forwarded.get(i + 1).copied().unwrap_or(false));
                let extra = fused_next
                    .into_iter()
                    .flat_map(|n| n.inputs.iter().filter(|&&v| v != node.output));
                let inputs: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .chain(extra)
                    .map(|&v| {
                        values[v]
                            .as_ref()
                            .unwrap_or_else(|| crate::ops::unreachable_shape())
                    })
                    .collect();
                match replace(i, &inputs) {
                    Some(t) => t,
                    None => {
                        let own = &inputs[..node.inputs.len()];
                        node.op.eval(own, &g.values[node.output].shape, threads)
                    }
                }
            };
            values[node.output] = Some(out);
            if let Some(start) = start {
                let mut p = self.profile.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = p.as_mut().and_then(|p| p.get_mut(i)) {
                    *t += start.elapsed().as_secs_f64();
                }
            }
            for &v in &node.inputs {
                if self.last_use[v] == i
                    && !keep.contains(&v)
                    && let Some(freed) = values[v].take()
                {
                    crate::recycle::give(freed.into_data());
                }
            }
        }
    }
}
