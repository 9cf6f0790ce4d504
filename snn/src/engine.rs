//! The CPU engine: runs a [`Graph`] on image batches, multi-threaded.
//!
//! Kernels run inside the engine's own rayon pool, so `threads` bounds the whole run. Each
//! intermediate tensor is dropped after its last reader, which keeps memory near the widest
//! layer of the network rather than its sum.

use crate::error::EngineError;
use crate::graph::Graph;
use crate::tensor::Tensor;

/// Runs a graph in ANN mode (every operator exact).
pub struct Engine {
    graph: Graph,
    pool: rayon::ThreadPool,
    threads: usize,
    /// For each value, the index of the last node reading it.
    last_use: Vec<usize>,
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
        })
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
        for (i, node) in g.nodes.iter().enumerate() {
            let out = {
                let inputs: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|&v| {
                        values[v]
                            .as_ref()
                            .unwrap_or_else(|| crate::ops::unreachable_shape())
                    })
                    .collect();
                match replace(i, &inputs) {
                    Some(t) => t,
                    None => node
                        .op
                        .eval(&inputs, &g.values[node.output].shape, self.threads),
                }
            };
            values[node.output] = Some(out);
            for &v in &node.inputs {
                if self.last_use[v] == i {
                    values[v] = None;
                }
            }
        }
        values[g.output]
            .take()
            .unwrap_or_else(|| crate::ops::unreachable_shape())
    }
}
